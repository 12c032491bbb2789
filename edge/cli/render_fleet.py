"""The fleet table: attention first, and no taller than the terminal.

Beyond one screen the table keeps every row that needs attention (as many as
fit) and folds the rest into one summary line per state, so 1,000 healthy
devices cost one line; ``--all`` lists every row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from edge.cli import render
from edge.model.status import DeviceStatus, FleetStatus

COLUMNS = ("device", "state", "last seen", "components", "backlog", "errors")
STYLES = {
    "online": "green",
    "degraded": "yellow",
    "offline": "red",
    "invalid": "bold red",
    "never-seen": "dim",
}
#: Lines the title, header, borders and the summary take.
_CHROME = 8


def _row(device: DeviceStatus) -> tuple[str, ...]:
    components = ", ".join(
        f"{name} {c.version}" + ("" if c.state == "running" else f" ({c.state})")
        for name, c in sorted(device.components.items())
    )
    last_seen = device.last_seen.strftime("%Y-%m-%d %H:%M:%S") if device.last_seen else "-"
    backlog = "-" if device.backlog is None else str(device.backlog)
    state = {"invalid": "invalid status", "never-seen": "never seen"}.get(
        device.state, device.state
    )
    return (device.name, state, last_seen, components, backlog, "; ".join(device.errors))


def fleet_table(status: FleetStatus, *, max_rows: int | None = None) -> Table:
    counts = ", ".join(f"{n} {s}" for s, n in status.counts().items() if n)
    table = Table(title=f"fleet ({status.backend}): {counts or 'no devices'}", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    rows = list(status.devices)
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[: max(1, max_rows - 1)]
    for device in shown:
        table.add_row(*_row(device), style=STYLES.get(device.state))
    hidden = rows[len(shown) :]
    if hidden:
        per_state: dict[str, int] = {}
        for device in hidden:
            per_state[device.state] = per_state.get(device.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in per_state.items())
        table.add_row(
            f"... {len(hidden)} more", summary, "", "", "", "--all lists every row", style="dim"
        )
    return table


def screen_rows(console: Console) -> int:
    return max(5, console.size.height - _CHROME)


def show_fleet(status: FleetStatus, *, all_rows: bool = False) -> None:
    console = render.stdout()
    limit = None if all_rows or not console.is_terminal else screen_rows(console)
    console.print(fleet_table(status, max_rows=limit))


def print_json_line(status: FleetStatus) -> None:
    sys.stdout.write(json.dumps(status.to_json(), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def watch(
    build: Callable[[], FleetStatus],
    wait: Callable[[float], bool],
    *,
    as_json: bool,
    all_rows: bool,
    recheck: float = 5.0,
) -> FleetStatus:
    """Redraw on every change (``wait`` returns True when one arrived) and every
    ``recheck`` seconds (devices go stale without a message); Ctrl-C ends it and
    returns the last status."""
    status = build()
    if as_json:
        print_json_line(status)
        try:
            while True:
                wait(recheck)
                new = build()
                if new.to_json()["devices"] != status.to_json()["devices"]:
                    print_json_line(new)
                status = new
        except KeyboardInterrupt:
            return status
    from rich.live import Live

    console = render.stdout()

    def table(s: FleetStatus) -> Table:
        return fleet_table(s, max_rows=None if all_rows else screen_rows(console))

    try:
        with Live(table(status), console=console, auto_refresh=False) as live:
            while True:
                wait(recheck)
                status = build()
                live.update(table(status), refresh=True)
    except KeyboardInterrupt:
        pass
    return status
