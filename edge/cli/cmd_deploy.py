"""``edgectl deploy``: deploy components to a device or a group, directly over the broker
(the default) or through AWS IoT Greengrass (``--backend greengrass``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.cli.direct_options import DirectOptions, run_direct_command
from edge.cli.options import BrokerOption, DevicesDirOption
from edge.deploy.calls import CallRecorder
from edge.deploy.greengrass import DeployRequest, DeployTarget, Rollout, deploy, make_clients
from edge.errors import UsageError
from edge.model.component import load_component
from edge.model.device import find_device

BACKENDS = ("direct", "greengrass")


def _components(dirs: list[Path], pairs: list[str]) -> dict[str, str]:
    """Component folders (their version, or LATEST for NEXT_PATCH) plus NAME=VERSION pairs."""
    wanted: dict[str, str] = {}
    for folder in dirs:
        manifest = load_component(folder)
        wanted[manifest.name] = "LATEST" if manifest.version == "NEXT_PATCH" else manifest.version
    for pair in pairs:
        name, sep, version = pair.partition("=")
        if not sep or not name or not version:
            raise UsageError(f"--component: {pair!r} is not NAME=VERSION")
        wanted[name] = version
    return wanted


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy_cmd(
        component_dirs: Annotated[
            list[Path] | None, typer.Argument(help="Component folders to deploy.")
        ] = None,
        device: Annotated[str | None, typer.Option(help="Device name from devices/.")] = None,
        group: Annotated[str | None, typer.Option(help="Group (direct) or thing group.")] = None,
        all_devices: Annotated[
            bool, typer.Option("--all", help="Every device in the inventory (direct).")
        ] = False,
        component: Annotated[
            list[str] | None,
            typer.Option(help="Direct: a component folder. Greengrass: NAME=VERSION. Repeatable."),
        ] = None,
        remove: Annotated[
            list[str] | None, typer.Option(help="Component to remove from the target.")
        ] = None,
        backend: Annotated[str, typer.Option(help="direct (the broker) or greengrass.")] = "direct",
        strategy: Annotated[
            str, typer.Option(help="Direct: all-at-once | rolling | canary.")
        ] = "all-at-once",
        batch: Annotated[int | None, typer.Option(min=1, help="Devices per batch.")] = None,
        canary: Annotated[int | None, typer.Option(min=1, help="Devices in the canary.")] = None,
        max_failures: Annotated[
            int, typer.Option(min=1, help="Halt and roll back after this many failed devices.")
        ] = 1,
        health_window: Annotated[
            float | None, typer.Option(min=0, help="Seconds a new version must stay healthy.")
        ] = None,
        timeout: Annotated[
            float, typer.Option(min=1, help="Seconds to wait for a device (plus the window).")
        ] = 60.0,
        broker: BrokerOption = None,
        keys_dir: Annotated[
            Path | None, typer.Option(help="Default: keys/ beside devices/.")
        ] = None,
        devices_dir: DevicesDirOption = Path("devices"),
        region: Annotated[str | None, typer.Option(envvar="AWS_REGION")] = None,
        profile: Annotated[str | None, typer.Option()] = None,
        max_per_minute: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
        exponential_base: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
        exponential_factor: Annotated[float | None, typer.Option(min=1.1, max=5.0)] = None,
        exponential_after: Annotated[int | None, typer.Option(min=1)] = None,
        abort_threshold: Annotated[float | None, typer.Option(min=0.1, max=100.0)] = None,
        abort_min_executed: Annotated[int | None, typer.Option(min=1)] = None,
        job_timeout: Annotated[int | None, typer.Option(min=1)] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Deploy components: signed desired state over the broker (direct), or merged into
        the target's Greengrass deployment. Both roll back on failure."""
        if backend not in BACKENDS:
            raise UsageError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "direct":
            folders = tuple(component_dirs or ()) + tuple(Path(c) for c in component or ())
            run_direct_command(
                DirectOptions(
                    component_dirs=folders,
                    device=device, group=group, all_devices=all_devices,
                    remove=tuple(remove or ()), strategy=strategy, batch=batch, canary=canary,
                    max_failures=max_failures, health_window=health_window, timeout=timeout,
                    broker=broker, devices_dir=devices_dir, keys_dir=keys_dir,
                    dry_run=dry_run, as_json=as_json,
                )
            )  # fmt: skip
            return
        if all_devices:
            raise UsageError("--all: only with --backend direct")
        if (device is None) == (group is None):
            raise UsageError("--device/--group: give exactly one")
        target: DeployTarget
        if device is not None:
            config = find_device(devices_dir, device)
            target = DeployTarget("thing", config.thing_name)
            region = region or config.cloud.region
        else:
            target = DeployTarget("group", group or "")
        request = DeployRequest(
            target=target,
            components=_components(component_dirs or [], component or []),
            remove=tuple(remove or ()),
            rollout=Rollout(
                max_per_minute, exponential_base, exponential_factor, exponential_after,
                abort_threshold, abort_min_executed, job_timeout,
            ),
        )  # fmt: skip
        if not request.components and not request.remove:
            raise UsageError("name at least one component folder, --component or --remove")
        recorder = CallRecorder() if dry_run else None
        clients = make_clients(region or "us-east-1", profile=profile, recorder=recorder)
        result = deploy(request, clients)
        if recorder is not None:
            render.print_lines(recorder.lines())
        elif as_json:
            render.print_json(result.to_json())
        elif result.sent:
            render.stdout().print(
                f"deployment {result.deployment_id} created for {result.target_arn}"
            )
        else:
            render.stdout().print(f"{result.target_arn}: already up to date, nothing sent")
