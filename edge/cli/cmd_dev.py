"""``edgectl dev``: a local device with the components loaded, reloading on save."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from edge.local.dev import DevEvent


_OUT = threading.Lock()  # events come from several agent threads; one line at a time


def _write(lines: list[str]) -> None:
    with _OUT:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 1] + "…"


def render_text(event: DevEvent) -> None:
    f = event.fields
    millis = int(event.at * 1000) % 1000
    clock = time.strftime("%H:%M:%S", time.localtime(event.at)) + f".{millis:03d}"
    if event.kind == "ready":
        lines = [
            f"edgectl dev: broker {f['broker']} ({f['broker_kind']}), cloud {f['cloud']}, "
            f"thing {f['thing']}",
            "watching for changes; Ctrl-C stops everything",
        ]
    elif event.kind in ("loaded", "reloaded"):
        verb = "reloaded" if event.kind == "reloaded" else "loaded"
        took = ""
        if "reload_ms" in f:
            took = f" in {f['reload_ms']:.0f} ms ({', '.join(f['changed'])})"
        lines = [f"{clock} {verb} {f['component']} {f['version']}{took}"]
        if f.get("example_topic"):
            lines.append(f"    try: edgectl publish {f['example_topic']} '{{}}'")
    elif event.kind == "invalid":
        keep = f"; still running {f['running']}" if f.get("running") else "; not loaded"
        lines = [f"{clock} error: {f['error']}{keep}; watching for a fix"]
    elif event.kind == "removed":
        lines = [f"{clock} removed {f['component']} ({f['folder']} has no manifest)"]
    elif event.kind == "invocation":
        outcome = (
            f"ok {_short(f.get('result'))}" if f["ok"]
            else f"ERROR {f['error']['errorType']}: {f['error']['errorMessage']}"
        )
        lines = [
            f"{clock} {f['component']}  {f['topic']}  {f['request_id'] or '-'}  "
            f"{f['duration_ms']:.1f} ms  {outcome}"
        ]
    elif event.kind == "log":
        lines = [f"    {f['component']} | {f['line']}"]
    else:
        lines = [f"{clock} {event.kind}"]
    _write(lines)


def render_json(event: DevEvent) -> None:
    _write([json.dumps(event.to_json(), default=str)])


def register(app: typer.Typer) -> None:
    @app.command()
    def dev(
        components: Annotated[
            list[Path] | None,
            typer.Argument(help="component folders (default: every one in components/)"),
        ] = None,
        device: Annotated[Path, typer.Option(help="device file")] = Path("devices/local.yaml"),
        broker: Annotated[
            str | None, typer.Option(help="use this broker instead of an embedded one")
        ] = None,
        cloud: Annotated[
            str,
            typer.Option(help="local: embedded S3/DynamoDB endpoint; device: the device file's"),
        ] = "local",
        data_dir: Annotated[
            Path, typer.Option(help="the agent's store and state")
        ] = Path(".edge/dev"),
        as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
    ) -> None:
        """Run components on a local device; reload each within a second of a change."""
        import logging

        from edge.local.dev import DevSession, default_components

        # The handlers' output arrives as events; the agent's own INFO lines stay quiet.
        for log_handler in logging.getLogger().handlers:
            log_handler.setLevel(logging.WARNING)
        root = Path.cwd()
        folders = list(components or default_components(root))
        session = DevSession(
            root, folders, device_file=device, broker_url=broker, cloud=cloud,
            data_dir=data_dir.resolve(), on_event=render_json if as_json else render_text,
        )
        from edge.agent.signals import StopSignals

        stop = threading.Event()
        signals = StopSignals()
        signals.set_on_signal(stop)
        try:
            session.start()
            session.watch(stop)
        finally:
            session.stop()
            signals.close()
        print("edgectl dev: stopped", file=sys.stderr)
