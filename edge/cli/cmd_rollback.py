"""``edgectl rollback``: return devices to the state their last deployment replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli.direct_options import DirectOptions, run_direct_command
from edge.cli.options import BrokerOption, DevicesDirOption


def register(app: typer.Typer) -> None:
    @app.command("rollback")
    def rollback_cmd(
        device: Annotated[str | None, typer.Option(help="Device name from devices/.")] = None,
        group: Annotated[str | None, typer.Option(help="Every device of this group.")] = None,
        timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait per device.")] = 60.0,
        health_window: Annotated[float | None, typer.Option(min=0)] = None,
        broker: BrokerOption = None,
        devices_dir: DevicesDirOption = Path("devices"),
        keys_dir: Annotated[Path | None, typer.Option()] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Publish each device's previous desired state (its artifacts are still on it)."""
        run_direct_command(
            DirectOptions(
                device=device, group=group, rollback=True, timeout=timeout,
                health_window=health_window, broker=broker, devices_dir=devices_dir,
                keys_dir=keys_dir, dry_run=dry_run, as_json=as_json, max_failures=1_000_000,
            )
        )  # fmt: skip
