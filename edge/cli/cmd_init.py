"""``edgectl init NAME``: a working component that ``edgectl invoke`` runs at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        name: Annotated[str, typer.Argument(help="component name, also the folder's name")],
        runtime: Annotated[
            str, typer.Option(help="python3.11 | python3.12 | python3.13 | nodejs20.x | ...")
        ] = "python3.11",
        trigger: Annotated[
            str | None, typer.Option(help="MQTT topic filter that runs the handler")
        ] = None,
        directory: Annotated[Path, typer.Option("--dir", help="parent folder")] = Path(
            "components"
        ),
        force: Annotated[bool, typer.Option(help="write over an existing folder")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON document")] = False,
    ) -> None:
        """Create DIR/NAME: manifest, handler, a test and a sample event."""
        from edge.local.scaffold import init_component

        made = init_component(
            name, runtime=runtime, trigger=trigger, directory=directory, force=force
        )
        if as_json:
            print(json.dumps(made.to_json(), indent=2))
            return
        print(f"created {made.folder} ({made.runtime})", file=sys.stderr)
        for path in made.files:
            print(f"  {path}")
        event = made.folder / "events" / "sample.json"
        print(
            f"next: edgectl invoke {made.folder} --event {event} --topic {made.topic}",
            file=sys.stderr,
        )
