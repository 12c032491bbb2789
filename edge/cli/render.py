"""Shared renderers: tables and JSON on stdout, progress on stderr.

Commands hand plain data to these helpers so every table command also has a
``--json`` form with the same content, and so progress bars never mix into
output a script might parse.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

STEP_LABELS = {
    "vendor": "vendoring dependencies",
    "zip": "writing artifacts",
    "upload": "uploading artifacts",
    "devices": "reading devices",
    "prune": "removing artifacts",
}


def stdout() -> Console:
    return Console(file=sys.stdout, soft_wrap=True)


def stderr() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


def print_json(data: Any) -> None:
    """Pretty JSON on stdout (``default=str`` covers paths and datetimes)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout().print(table)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """Yield a ``progress(step, done, total)`` callback drawing rich bars on stderr."""
    console = stderr()
    if not enabled or not console.is_terminal:
        yield lambda step, done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(STEP_LABELS.get(step, step), total=total)
            bars.update(tasks[step], completed=done, total=total)

        yield update
