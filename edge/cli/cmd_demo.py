"""``edgectl demo``: the main job on embedded defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        component: Annotated[
            list[str] | None,
            typer.Option(help="component folder to run; repeat for several on one agent"),
        ] = None,
        device: Annotated[str, typer.Option(help="device file")] = "devices/local.yaml",
        root: Annotated[Path, typer.Option(help="project root")] = Path(),
        timeout: Annotated[float, typer.Option(help="seconds to wait for each stage")] = 60.0,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON document")] = False,
    ) -> None:
        """Start a broker, a local S3/DynamoDB and an agent; run sample events; show results."""
        import logging

        from rich.console import Console

        from edge.cli.render_demo import demo_result
        from edge.local.demo import run_demos

        # moto's server logs every request at INFO through werkzeug; the progress lines say it.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        err = Console(stderr=True)
        results = run_demos(
            root.resolve(), component or ["components/hello"], device=device, timeout=timeout,
            progress=lambda msg: err.print(f"[dim]•[/] {msg}"),
        )
        if as_json:
            # One component: its findings at the top level; several: a list of them.
            doc: object = results[0].__dict__
            if len(results) > 1:
                doc = {"components": [r.__dict__ for r in results],
                       "elapsed_s": results[0].elapsed_s}
            print(json.dumps(doc, indent=2, default=str))
            return
        console = Console()
        for result in results:
            if len(results) > 1:
                console.rule(f"[bold]{result.component}[/] ({result.published} sample event(s))")
            demo_result(console, result)
