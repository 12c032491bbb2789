"""``edgectl demo``: the main job on embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        component: Annotated[str, typer.Option(help="component folder to run")] = (
            "components/hello"
        ),
        device: Annotated[str, typer.Option(help="device file")] = "devices/local.yaml",
        root: Annotated[Path, typer.Option(help="project root")] = Path(),
        timeout: Annotated[float, typer.Option(help="seconds to wait for each stage")] = 60.0,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON document")] = False,
    ) -> None:
        """Start a broker, a local S3/DynamoDB and an agent; run sample events; show results."""
        from rich.console import Console

        from edge.cli.render_demo import demo_result
        from edge.local.demo import run_demo

        err = Console(stderr=True)
        result = run_demo(
            root.resolve(), component=component, device=device, timeout=timeout,
            progress=lambda msg: err.print(f"[dim]•[/] {msg}"),
        )
        if as_json:
            print(json.dumps(result.__dict__, indent=2, default=str))
            return
        demo_result(Console(), result)
