"""``edgectl publish``: upload artifacts and register a Greengrass component version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.cli.cmd_build import run_build
from edge.deploy.calls import CallRecorder
from edge.deploy.greengrass import make_clients, publish
from edge.deploy.runtime_component import RUNTIME_COMPONENT
from edge.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish_cmd(
        component_dir: Annotated[
            str | None,
            typer.Argument(
                help="Folder holding component.yaml (or an MQTT TOPIC).", show_default=False
            ),
        ] = None,
        payload: Annotated[
            str | None,
            typer.Argument(help="With a TOPIC: the MQTT payload (@FILE reads a file).",
                           show_default=False),
        ] = None,
        broker: Annotated[
            str | None,
            typer.Option(help="MQTT: broker URL (default: edgectl dev's, else the device file's)."),
        ] = None,
        bucket: Annotated[
            str | None, typer.Option(help="S3 bucket for artifacts, in --region.")
        ] = None,
        region: Annotated[str, typer.Option(envvar="AWS_REGION")] = "us-east-1",
        profile: Annotated[str | None, typer.Option(help="AWS profile.")] = None,
        backend: Annotated[str, typer.Option(help="Only 'greengrass' publishes.")] = "greengrass",
        platform: Annotated[list[str] | None, typer.Option("--platform")] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the AWS calls as JSON lines instead.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        runtime: Annotated[
            bool,
            typer.Option(
                "--runtime",
                help=f"Publish the toolkit's own runtime component ({RUNTIME_COMPONENT}) "
                "that function components depend on.",
            ),
        ] = False,
    ) -> None:
        """Upload the component's artifacts to S3 and create its Greengrass component version;
        or, as ``publish TOPIC [PAYLOAD]``, publish an MQTT message to a local device."""
        if component_dir is not None and not (bucket or dry_run or platform or runtime) and (
            payload is not None or not _is_component(component_dir)
        ):
            from edge.cli.cmd_mqtt import publish_message

            publish_message(component_dir, payload, broker=broker, as_json=as_json)
            return
        if backend != "greengrass":
            raise UsageError(f"--backend: {backend!r}: publish only applies to 'greengrass'")
        if not bucket:
            raise UsageError("--bucket: required; name the S3 bucket for artifacts")
        if runtime:
            if component_dir is not None:
                raise UsageError("--runtime: publishes the runtime component; drop COMPONENT_DIR")
            _publish_runtime(bucket, region, profile, dry_run, as_json)
            return
        if component_dir is None:
            raise UsageError("COMPONENT_DIR: required (or --runtime)")
        build = run_build(
            Path(component_dir), platform or [], None, False, bucket, as_json or dry_run
        )
        recorder = CallRecorder() if dry_run else None
        clients = make_clients(region, profile=profile, recorder=recorder)
        with render.progress_bar(not (as_json or dry_run)) as progress:
            result = publish(build, clients, bucket=bucket, progress=progress)
        if recorder is not None:
            render.print_lines(recorder.lines())
        elif as_json:
            render.print_json(result.to_json())
        else:
            verb = "published" if result.created else "already published"
            render.stdout().print(f"{result.component} {result.version}: {verb}")
            for uri in result.uploaded:
                render.stdout().print(f"  uploaded {uri}")
            for uri in result.skipped_uploads:
                render.stdout().print(f"  already in S3 {uri}")


def _is_component(arg: str) -> bool:
    from edge.model.component import MANIFEST_NAMES

    return any((Path(arg) / name).is_file() for name in MANIFEST_NAMES)


def _publish_runtime(
    bucket: str, region: str, profile: str | None, dry_run: bool, as_json: bool
) -> None:
    from edge.deploy.runtime_component import publish_runtime

    recorder = CallRecorder() if dry_run else None
    clients = make_clients(region, profile=profile, recorder=recorder)
    quiet = as_json or dry_run
    result = publish_runtime(
        Path.cwd(), clients, bucket=bucket,
        progress=lambda step: None if quiet else render.stderr().print(f"• {step}"),
    )
    if recorder is not None:
        render.print_lines(recorder.lines())
    elif as_json:
        render.print_json(result.to_json())
    else:
        verb = "published" if result.created else "already published"
        render.stdout().print(f"{RUNTIME_COMPONENT} {result.version}: {verb} ({result.uri})")
