"""``edgectl invoke``: run a handler once, like ``sam local invoke -e event.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def invoke(
        component: Annotated[Path, typer.Argument(help="the component folder")],
        event: Annotated[
            Path | None, typer.Option("--event", "-e", help="event file (the trigger payload)")
        ] = None,
        topic: Annotated[
            str | None, typer.Option(help="the trigger topic the event arrives on")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON document")] = False,
    ) -> None:
        """Run COMPONENT's handler once through the device's worker runtime."""
        from edge.local.invoke import invoke as run

        result = run(
            component, event, topic=topic, on_log=lambda line: print(line, file=sys.stderr)
        )
        doc = result.to_json()
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            status = "ok" if result.outcome.ok else "error"
            print(
                f"{result.component} {result.version}  request {result.request_id}  "
                f"{status} in {result.outcome.duration_ms:.1f} ms "
                f"(cold start {result.cold_start_ms:.0f} ms)",
                file=sys.stderr,
            )
            body = doc.get("result", doc.get("error"))
            if "result_bytes" in doc:
                print(f"<{doc['result_bytes']} bytes of binary result>")
            else:
                print(json.dumps(body, indent=2))
        if not result.outcome.ok:
            raise typer.Exit(1)
