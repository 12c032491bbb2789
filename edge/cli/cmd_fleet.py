"""``edgectl fleet status``: one row per device."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.deploy.greengrass import fleet_status, make_clients
from edge.errors import UsageError
from edge.model.device import load_inventory
from edge.model.status import FleetStatus


def show_fleet(status: FleetStatus) -> None:
    rows = []
    for device in status.devices:
        components = ", ".join(
            f"{name} {c.version} ({c.state})" for name, c in sorted(device.components.items())
        )
        last_seen = device.last_seen.strftime("%Y-%m-%d %H:%M") if device.last_seen else "-"
        backlog = "-" if device.backlog is None else device.backlog
        rows.append((device.name, device.state, last_seen, components, backlog,
                     "; ".join(device.errors)))  # fmt: skip
    counts = ", ".join(f"{n} {s}" for s, n in status.counts().items() if n)
    render.print_table(
        f"fleet ({status.backend}): {counts or 'no devices'}",
        ("device", "state", "last seen", "components", "backlog", "errors"),
        rows,
    )


def register(app: typer.Typer) -> None:
    fleet = typer.Typer(help="Look at the whole fleet.", no_args_is_help=True)

    @fleet.command("status")
    def status_cmd(
        backend: Annotated[str, typer.Option()] = "greengrass",
        group: Annotated[str | None, typer.Option(help="Only this thing group.")] = None,
        devices_dir: Annotated[Path, typer.Option(help="Inventory folder.")] = Path("devices"),
        region: Annotated[str, typer.Option(envvar="AWS_REGION")] = "us-east-1",
        profile: Annotated[str | None, typer.Option()] = None,
        system: Annotated[bool, typer.Option(help="Include aws.greengrass.* components.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Device state, components, errors and backlog, one row per device."""
        if backend != "greengrass":
            raise UsageError(f"--backend: {backend!r}: this command reads 'greengrass' status")
        inventory = {}
        if devices_dir.is_dir():
            inventory = {n: d.thing_name for n, d in load_inventory(devices_dir).items()}
        clients = make_clients(region, profile=profile)
        group_arn = clients.iot.thing_group_arn(group) if group else None
        with render.progress_bar(not as_json) as progress:
            status = fleet_status(
                clients.greengrass, now=datetime.now(UTC), inventory=inventory,
                thing_group_arn=group_arn, include_system=system, progress=progress,
            )  # fmt: skip
        if as_json:
            render.print_json(status.to_json())
        else:
            show_fleet(status)

    app.add_typer(fleet, name="fleet")
