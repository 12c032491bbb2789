"""``edgectl device show NAME``: one device in full (added to ``edgectl device``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli.cmd_device import device_app
from edge.cli.options import BrokerOption, DevicesDirOption


@device_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Device name (devices/NAME.yaml) or thing name.")],
    broker: BrokerOption = None,
    devices_dir: DevicesDirOption = Path("devices"),
    timeout: Annotated[float, typer.Option(help="Seconds to reach the broker.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """State, components with their counters, outbox, system figures, the current
    deployment and the recent ones. Exit 0 when the device is online, 1 otherwise."""
    from edge.cli import render, render_fleet
    from edge.fleet import reader
    from edge.fleet.device import show_device
    from edge.fleet.document import check_name
    from edge.fleet.view import choose_broker, load_known

    check_name(name)
    inventory = load_known(devices_dir)
    known = inventory.find(name)
    url = choose_broker(inventory, broker)
    bus = reader.connect(url, timeout=timeout, ca=inventory.ca)
    try:
        view = show_device(
            bus, known.name if known else name, known.thing if known else name, timeout=timeout
        )
    finally:
        bus.close()
    if as_json:
        render.print_json(view.to_json())
    else:
        render_fleet.show_device(view)
    raise typer.Exit(0 if view.row.state == "online" else 1)


def register(app: typer.Typer) -> None:
    """``show`` joined ``device_app`` at import; ``edge.cli.cmd_device`` adds the sub-app."""
