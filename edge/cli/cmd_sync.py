"""``edgectl sync status --device NAME``: a device's backlog and the health of its sinks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from edge.cli import render
from edge.cli.options import DevicesDirOption
from edge.model.device import find_device
from edge.sync.report import SyncStatus, read_sync_status


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def show_sync(status: SyncStatus, now: float) -> None:
    rows = [
        (
            s.name, s.records, s.bytes, _age(s.oldest_age_s) if s.records else "-",
            s.written, s.dropped,
            _age(now - s.last_success) + " ago" if s.last_success else "never",
            s.last_error or "",
        )
        for s in status.sinks
    ]
    reported = _age(now - status.reported_at) + " ago" if status.reported_at else "unknown"
    render.print_table(
        f"{status.device}: {status.state}, reported {reported}, "
        f"{'healthy' if status.healthy else 'needs attention'}",
        ("sink", "backlog", "bytes", "oldest", "written", "dropped", "last sync", "last error"),
        rows,
    )
    i = status.intake
    if i:
        bound = f"{i.get('used_bytes')} of {i.get('max_bytes')} bytes ({i.get('when_full')})"
        render.print_lines([
            f"intake: {i.get('pending')} pending, {i.get('parked')} held at the broker, "
            f"{bound}{', FULL' if i.get('full') else ''}, "
            f"{i.get('duplicates')} redeliveries recognised",
        ])


def register(app: typer.Typer) -> None:
    sync = typer.Typer(help="Results on their way to S3 and DynamoDB.", no_args_is_help=True)

    @sync.command("status")
    def status_cmd(
        device: Annotated[str, typer.Option(help="The device (devices/NAME.yaml).")],
        broker: Annotated[str | None, typer.Option(help="Broker URL (default: the device file's).")] = None,  # noqa: E501
        devices_dir: DevicesDirOption = Path("devices"),
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 10.0,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Backlog, oldest unsynced record and last successful sync per sink."""
        config = find_device(devices_dir, device)
        b = config.broker
        status = read_sync_status(
            config.name, config.thing_name, broker or b.url, timeout=timeout,
            ca=b.ca, cert=b.cert, key=b.key,
        )
        if as_json:
            render.print_json(status.to_json())
        else:
            show_sync(status, time.time())

    app.add_typer(sync, name="sync")
