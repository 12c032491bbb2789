"""The fleet table: attention first, and no taller than the terminal.

Beyond one screen the table keeps every row that needs attention (as many as
fit) and folds the rest into one summary line per state, so 1,000 healthy
devices cost one line; ``--all`` lists every row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from edge.cli import render
from edge.fleet.device import DeviceView
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
        if max_rows is None:
            table.add_column(column, overflow="fold")
        else:  # one line per row, so the rows counted are the lines used
            table.add_column(column, no_wrap=True, overflow="ellipsis")
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
        try:
            print_json_line(status)
            while True:
                wait(recheck)
                old, status = status, build()
                if status.to_json()["devices"] != old.to_json()["devices"]:
                    print_json_line(status)
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


def _when(ts: object) -> str:
    if isinstance(ts, int | float) and ts > 0:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "-"


def _mb(value: object) -> str:
    return f"{value / 1e6:.1f} MB" if isinstance(value, int | float) else "-"


def show_device(view: DeviceView) -> None:
    console = render.stdout()
    row = view.row
    doc = view.status or {}
    state = _row(row)[1]
    console.print(f"[bold]{view.name}[/bold] (thing {view.thing}): "
                  f"[{STYLES.get(row.state, '')}]{state}[/]")  # fmt: skip
    for error in row.errors:
        console.print(f"  ! {error}")
    if doc:
        platform = doc.get("platform") or {}
        console.print(
            f"  last seen {_when(doc.get('timestamp'))}, class {doc.get('class', '-')}, "
            f"{platform.get('os', '-')}/{platform.get('architecture', '-')}, groups "
            f"{', '.join(doc.get('groups') or []) or '-'}, agent {doc.get('agent_version', '-')}, "
            f"up {doc.get('uptime_s', '-')} s, heartbeat {doc.get('heartbeat_s', '-')} s"
        )
        system = doc.get("system") or {}
        workers = system.get("workers") or {}
        if system:
            console.print(
                f"  agent cpu {system.get('cpu_percent', '-')}%, memory "
                f"{_mb(system.get('memory_rss_bytes'))}; workers {workers.get('count', '-')}, "
                f"cpu {workers.get('cpu_percent', '-')}%, memory "
                f"{_mb(workers.get('memory_rss_bytes'))}; data dir free "
                f"{_mb(system.get('disk_free_bytes'))}"
            )
    components = doc.get("components") or {}
    if components:
        table = Table(title="components", title_justify="left")
        for column in (
            "component",
            "version",
            "state",
            "invocations",
            "errors",
            "timeouts",
            "throttles",
            "recent errors",
            "p50 ms",
            "p99 ms",
            "queue",
            "workers",
        ):
            table.add_column(column)  # fmt: skip
        for cname, body in sorted(components.items()):
            recent = body.get("recent") or {}
            table.add_row(*(str(v) for v in (
                cname, body.get("version"), body.get("state"), body.get("invocations", 0),
                body.get("errors", 0), body.get("timeouts", 0), body.get("throttles", 0),
                recent.get("errors", "-"), body.get("duration_ms_p50"),
                body.get("duration_ms_p99"), body.get("queue_depth", 0), body.get("workers", 0),
            )))  # fmt: skip
        console.print(table)
    outbox = doc.get("outbox") or {}
    if outbox:
        table = Table(title="outbox", title_justify="left")
        for column in (
            "sink",
            "records",
            "bytes",
            "oldest age s",
            "written",
            "dropped",
            "last success",
            "last error",
        ):
            table.add_column(column, overflow="fold")  # fmt: skip
        for sink, body in sorted(outbox.items()):
            table.add_row(*(str(v) for v in (
                sink, body.get("records"), body.get("bytes"), body.get("oldest_age_s"),
                body.get("written"), body.get("dropped", 0), _when(body.get("last_success")),
                body.get("last_error") or "",
            )))  # fmt: skip
        console.print(table)
    report = view.report or doc.get("deployment")
    if isinstance(report, dict):
        phase = f" ({report['phase']})" if report.get("phase") else ""
        reason = f": {report['reason']}" if report.get("reason") else ""
        console.print(f"deployment {report.get('deployment_id')}: {report.get('state')}{phase}"
                      f"{reason}; applied {report.get('applied') or '-'}")  # fmt: skip
    if view.desired:
        wanted = ", ".join(
            f"{n} {c.get('version')}"
            for n, c in sorted((view.desired.get("components") or {}).items())
        )
        console.print(f"desired {view.desired.get('deployment_id')}: {wanted or 'nothing'}")
    if view.history:
        table = Table(title="recent deployments", title_justify="left")
        for column in ("deployment", "rollout", "state", "started", "finished", "reason"):
            table.add_column(column, overflow="fold")
        for item in view.history:
            table.add_row(*(str(v) for v in (
                item.get("deployment_id"), item.get("rollout") or "-", item.get("state"),
                _when(item.get("started_at")), _when(item.get("updated_at")),
                item.get("reason") or "",
            )))  # fmt: skip
        console.print(table)
