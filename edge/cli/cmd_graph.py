"""``edgectl graph``: components and topics, who is caused by whom."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge.cli.options import DevicesDirOption

FORMATS = ("text", "mermaid", "dot", "png")


def register(app: typer.Typer) -> None:
    @app.command()
    def graph(
        fmt: Annotated[str, typer.Option("--format", help="text | mermaid | dot | png")] = "text",
        out: Annotated[Path | None, typer.Option(help="write to FILE (png needs it)")] = None,
        why: Annotated[
            str | None, typer.Option(help="print the chains that lead to COMPONENT")
        ] = None,
        components: Annotated[Path, typer.Option(help="folder of components")] = Path(
            "components"
        ),
        device: Annotated[
            str | None, typer.Option(help="only the set deployed on this device (its status)")
        ] = None,
        devices_dir: DevicesDirOption = Path("devices"),
        broker: Annotated[
            str | None, typer.Option(help="the device's broker URL (default: its device file)")
        ] = None,
        timeout: Annotated[float, typer.Option(help="seconds to wait for the status")] = 5.0,
        dot: Annotated[
            str | None, typer.Option(help="path of graphviz's dot (default: found on PATH)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON document")] = False,
    ) -> None:
        """The graph of topics and components, with cycles, unconsumed outputs and
        triggers nobody produces (warnings)."""
        from edge import graph as g
        from edge.errors import BrokerError, UsageError

        if fmt not in FORMATS:
            raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
        if fmt == "png" and out is None and not as_json and why is None:
            raise UsageError("--format png: needs --out FILE")
        manifests = g.load_manifests(components)
        thing = g.THING_SYMBOL
        missing: list[str] = []
        if device is not None:
            from edge.agent.status import status_topic
            from edge.model.device import find_device

            dev = find_device(devices_dir, device)
            url = broker or dev.broker.url
            status = g.read_retained_json(url, status_topic(dev.thing_name), timeout)
            if status is None:
                raise BrokerError(
                    f"no status from device {device!r} on {url} within {timeout:g}s "
                    f"(topic {status_topic(dev.thing_name)})"
                )
            manifests, missing = g.deployed_set(manifests, status)
            thing = dev.thing_name
        result = g.build_graph(manifests, thing=thing)
        result.missing = missing
        if why is not None:
            chains = g.why(result, why)
            if as_json:
                print(json.dumps({"component": why, "chains": chains}, indent=2))
            else:
                for chain in chains:
                    print(" -> ".join(chain))
            return
        if as_json:
            print(json.dumps(result.to_json(), indent=2))
            return
        for line in result.warnings():
            print(f"edgectl: warning: {line}", file=sys.stderr)
        if fmt == "png":
            assert out is not None
            out.write_bytes(g.render_png(g.to_dot(result), dot or g.find_dot()))
            print(f"wrote {out}", file=sys.stderr)
            return
        text = {"text": g.to_text, "mermaid": g.to_mermaid, "dot": g.to_dot}[fmt](result)
        if fmt == "text":
            text = text.split("\nwarnings:\n")[0].rstrip("\n") + "\n"  # warnings went to stderr
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text)
            print(f"wrote {out}", file=sys.stderr)
