"""``edgectl generate-event mqtt``: an event file of the exact shape the runtime delivers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    gen = typer.Typer(
        help="Write sample event files (like sam local generate-event).", no_args_is_help=True
    )

    @gen.command("mqtt")
    def mqtt(
        topic: Annotated[str, typer.Option(help="the topic the message arrives on")],
        payload: Annotated[str, typer.Option(help="the message payload, as JSON text")],
        out: Annotated[
            Path | None, typer.Option(help="write here instead of printing")
        ] = None,
    ) -> None:
        """The event a handler receives for PAYLOAD on TOPIC (the decoded JSON payload)."""
        from edge.local.scaffold import generate_event

        data = generate_event(topic, payload)
        if out is None:
            sys.stdout.write(data.decode())
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        print(
            f"wrote {out}; replay it with: edgectl invoke COMPONENT --event {out} --topic {topic}",
            file=sys.stderr,
        )

    app.add_typer(gen, name="generate-event")
