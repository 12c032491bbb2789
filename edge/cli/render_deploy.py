"""Live per-device progress of a direct deployment (stderr) and its final table (stdout)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.live import Live
from rich.table import Table

from edge.cli import render

_STYLE = {
    "SUCCEEDED": "green", "UNCHANGED": "green", "REVERTED": "yellow",
    "FAILED": "red", "ROLLED_BACK": "red", "TIMED_OUT": "red", "REVERT_FAILED": "red",
    "SKIPPED": "dim",
}  # fmt: skip


@contextmanager
def live_devices(names: list[str], enabled: bool = True) -> Iterator[Any]:
    """Yield ``on_device(device, state, detail)``; draws a live table on a terminal."""
    rows: dict[str, tuple[str, str]] = dict.fromkeys(names, ("pending", ""))
    lock = threading.Lock()
    console = render.stderr()
    if not enabled or not console.is_terminal:
        yield lambda device, state, detail: None
        return

    def table() -> Table:
        t = Table(title="deployment", title_justify="left")
        for column in ("device", "state", "detail"):
            t.add_column(column)
        with lock:
            for name, (state, detail) in rows.items():
                style = _STYLE.get(state, "cyan")
                t.add_row(name, f"[{style}]{state}[/{style}]", detail)
        return t

    with Live(table(), console=console, transient=True, refresh_per_second=8) as live:

        def update(device: str, state: str, detail: str) -> None:
            with lock:
                rows[device] = (state, detail)
            live.update(table())

        yield update


def print_result(result: Any) -> None:
    render.print_table(
        f"rollout {result.rollout_id} ({result.seconds:.2f}s)",
        ("device", "state", "seconds", "reason"),
        [(o.device, o.state, f"{o.seconds:.2f}", o.reason) for o in result.outcomes],
    )
