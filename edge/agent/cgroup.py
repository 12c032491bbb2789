"""Memory limits for workers through cgroup v2, where the agent may create one.

Current Raspberry Pi OS mounts only the unified (v2) hierarchy, where
Greengrass's containerised Lambdas fail ("cgroup subsystems are not mounted:
devices, memory"). We need no container: one leaf cgroup per worker with
``memory.max`` (and ``memory.swap.max = 0``), created under the agent's own
cgroup when that subtree is delegated to us (systemd ``Delegate=yes``) or when
the agent runs as root with the memory controller available.

When no slot can be made (cgroup v1 only, no delegation, a container without
write access), ``CgroupPool.detect()`` returns ``None`` and the worker limits
itself with an rlimit instead (see ``edge.runtime.bootstrap``). Either way an
invocation over the limit is reported as ``Runtime.OutOfMemory``.

The file system root is injectable so the logic is tested on a plain folder.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _cgroup2_mount(mountinfo: str) -> Path | None:
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4])
    return None


def _own_cgroup(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


class CgroupSlot:
    """One worker's leaf cgroup."""

    def __init__(self, path: Path, memory_mb: int) -> None:
        self.path = path
        path.mkdir()
        (path / "memory.max").write_text(f"{memory_mb << 20}\n")
        with contextlib.suppress(OSError):
            (path / "memory.swap.max").write_text("0\n")

    def attach(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def oom_killed(self) -> bool:
        try:
            text = (self.path / "memory.events").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip() not in ("", "0"):
                return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _enable_memory(parent: Path, write: Callable[[Path, str], object], pid: int) -> None:
    """Hand the memory controller to ``parent``'s children.

    cgroup v2 refuses that (EBUSY) while ``parent`` holds processes itself, its
    "no internal processes" rule; and under systemd's ``Delegate=yes`` the agent
    runs in its service's own cgroup. So the agent first moves into a leaf of its
    own, ``agent`` (what systemd's ``DelegateSubgroup=`` does from version 254).
    If the controller is still refused (another process shares the cgroup: a
    shell's session, say), the agent moves back and the error stands.
    """
    control = parent / "cgroup.subtree_control"
    if "memory" in control.read_text().split():
        return
    try:
        write(control, "+memory\n")
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    leaf = parent / "agent"
    leaf.mkdir(exist_ok=True)
    write(leaf / "cgroup.procs", f"{pid}\n")
    try:
        write(control, "+memory\n")
    except OSError:
        with contextlib.suppress(OSError):
            write(parent / "cgroup.procs", f"{pid}\n")
            leaf.rmdir()
        raise
    log.info("moved the agent into %s, so its workers' cgroups may limit memory", leaf)


class CgroupPool:
    """Makes ``CgroupSlot``s under ``base`` (a cgroup the agent may write to)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._ids = itertools.count(1)

    @classmethod
    def detect(
        cls,
        *,
        proc: Path = Path("/proc/self"),
        name: str = "edge-workers",
        write: Callable[[Path, str], object] = Path.write_text,
        pid: int | None = None,
    ) -> CgroupPool | None:
        """A pool if cgroup v2 with the memory controller is writable here, else None.
        ``write`` writes a cgroup file (the kernel's rules live behind it), ``pid`` is
        the agent's own."""
        try:
            mount = _cgroup2_mount((proc / "mountinfo").read_text())
            own = _own_cgroup((proc / "cgroup").read_text())
        except OSError:
            return None
        if mount is None or own is None:
            return None
        parent = mount / own.lstrip("/")
        try:
            if "memory" not in (parent / "cgroup.controllers").read_text().split():
                return None
            base = parent / name
            base.mkdir(exist_ok=True)
            # Our workers' parent must hand the memory controller to its children.
            _enable_memory(parent, write, os.getpid() if pid is None else pid)
            write(base / "cgroup.subtree_control", "+memory\n")
        except OSError as exc:
            log.info("no cgroup v2 memory slots (%s); workers limit themselves with rlimits", exc)
            return None
        return cls(base)

    def slot(self, component: str, memory_mb: int) -> CgroupSlot | None:
        path = self.base / f"{_SAFE.sub('_', component)}-{os.getpid()}-{next(self._ids)}"
        try:
            return CgroupSlot(path, memory_mb)
        except OSError as exc:
            log.warning("cgroup slot %s not created: %s", path, exc)
            return None
