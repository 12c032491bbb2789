"""``edgectl dev --json`` in a subprocess, its JSON lines awaited one event at a time."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


def project(tmp_path: Path) -> Path:
    """A fresh project folder: ``devices/local.yaml`` and an empty ``components/``."""
    root = tmp_path / "proj"
    (root / "devices").mkdir(parents=True)
    (root / "components").mkdir()
    (root / "devices" / "local.yaml").write_text((REPO / "devices" / "local.yaml").read_text())
    return root


def edgectl(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args], cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
    )


class DevProcess:
    def __init__(self, root: Path, *args: str) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.seen: list[Event] = []
        self._unmatched: list[Event] = []  # seen while waiting for something else
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli.main", "dev", "--json", *args],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "garbage", "line": line})

    def wait(self, predicate: Callable[[Event], bool], timeout: float = 30) -> Event:
        """The first event, in arrival order, that matches and was not returned before
        (events come from several threads: a handler's log line may precede its result)."""
        for event in self._unmatched:
            if predicate(event):
                self._unmatched.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and self.events.empty():
                raise AssertionError(f"no such event; seen: {self.seen[-10:]}\n{self.stderr()}")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.seen.append(event)
            if predicate(event):
                return event
            self._unmatched.append(event)

    def wait_kind(self, kind: str, timeout: float = 30, **fields: Any) -> Event:
        return self.wait(
            lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items()),
            timeout,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()[-3000:]
