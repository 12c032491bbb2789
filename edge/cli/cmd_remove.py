"""``edgectl remove``: stop running a component on devices; the others are left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli.direct_options import DirectOptions, run_direct_command
from edge.cli.options import BrokerOption, DevicesDirOption


def register(app: typer.Typer) -> None:
    @app.command("remove")
    def remove_cmd(
        component: Annotated[list[str], typer.Option(help="Component name; repeatable.")],
        device: Annotated[str | None, typer.Option(help="Device name from devices/.")] = None,
        group: Annotated[str | None, typer.Option(help="Every device of this group.")] = None,
        timeout: Annotated[float, typer.Option(min=1)] = 60.0,
        broker: BrokerOption = None,
        devices_dir: DevicesDirOption = Path("devices"),
        keys_dir: Annotated[Path | None, typer.Option()] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Publish desired states without COMPONENT (direct backend)."""
        run_direct_command(
            DirectOptions(
                device=device, group=group, remove=tuple(component), timeout=timeout,
                health_window=0.0, broker=broker, devices_dir=devices_dir, keys_dir=keys_dir,
                dry_run=dry_run, as_json=as_json,
            )
        )  # fmt: skip
