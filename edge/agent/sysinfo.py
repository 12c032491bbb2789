"""CPU and memory of the agent and its worker processes, and free space in the data dir.

Read straight from ``/proc`` (Linux, which every device class runs) rather
than through psutil: the agent stays one dependency lighter and a sample costs
a handful of small file reads (measured in bench/README.md, "Status reporting").
Elsewhere (no ``/proc``) the process figures are left out and only the disk
figures remain.

Workers are the agent's direct children, found through
``/proc/<pid>/task/<tid>/children`` (a worker is started by whichever agent
thread needed it, so every thread's list is read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _cpu_ticks(proc: Path, pid: int) -> int | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _rss(proc: Path, pid: int) -> int | None:
    try:
        return int((proc / str(pid) / "statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def children(proc: Path, pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(set(found))


class SystemSampler:
    """``snapshot()`` is the status document's ``system`` section; CPU percentages are
    over the time since the previous snapshot (100 = one core)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        pid: int | None = None,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._data_dir = data_dir
        self._pid = pid or os.getpid()
        self._proc = proc
        self._clock = clock
        self._has_proc = (proc / str(self._pid) / "stat").exists()
        self._last: tuple[float, int, dict[int, int]] | None = None

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._has_proc:
            now = self._clock()
            own = _cpu_ticks(self._proc, self._pid) or 0
            kids: dict[int, int] = {}
            worker_rss = 0
            for child in children(self._proc, self._pid):
                ticks = _cpu_ticks(self._proc, child)
                if ticks is None:
                    continue
                kids[child] = ticks
                worker_rss += _rss(self._proc, child) or 0
            own_pct: float | None = None
            kids_pct: float | None = None
            if self._last is not None:
                then, own_before, kids_before = self._last
                elapsed = max(now - then, 1e-6)
                own_pct = round((own - own_before) / _TICKS / elapsed * 100, 2)
                # A worker that started since the last sample counts from zero.
                used = sum(t - kids_before.get(p, 0) for p, t in kids.items())
                kids_pct = round(max(used, 0) / _TICKS / elapsed * 100, 2)
            self._last = (now, own, kids)
            out["cpu_percent"] = own_pct
            out["cpu_seconds"] = round(own / _TICKS, 2)
            out["memory_rss_bytes"] = _rss(self._proc, self._pid)
            out["workers"] = {
                "count": len(kids),
                "memory_rss_bytes": worker_rss,
                "cpu_percent": kids_pct,
            }
        try:
            st = os.statvfs(self._data_dir)
        except OSError:
            pass
        else:
            out["disk_free_bytes"] = st.f_bavail * st.f_frsize
            out["disk_total_bytes"] = st.f_blocks * st.f_frsize
        return out
