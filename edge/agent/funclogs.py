"""Per-component function log files, bounded: size-based rotation and a total cap.

``<dir>/<component>.log`` holds the newest lines, ``.log.1`` ... ``.log.N`` the
older ones. A file is rotated before it would exceed ``file_bytes``, and at most
``total_bytes // file_bytes`` files are kept, so a component's logs can never
take more than ``total_bytes`` of disk, however much its handler prints
(Greengrass users report logs growing past 50 GB in hours). Each line carries
the time and the request id, like a Lambda log line::

    2026-11-26T17:20:01.123Z  <request id>  <what the handler printed>
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import IO

DEFAULT_FILE_BYTES = 1 << 20  # 1 MiB
DEFAULT_TOTAL_BYTES = 10 << 20  # 10 MiB per component
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class _ComponentLog:
    def __init__(self, path: Path, file_bytes: int, keep: int) -> None:
        self.path = path
        self.file_bytes = file_bytes
        self.keep = keep  # rotated files kept beside the live one
        self.lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def write(self, data: bytes) -> None:
        data = data[: self.file_bytes]
        with self.lock:
            f = self._open()
            if self._size and self._size + len(data) > self.file_bytes:
                self._rotate()
                f = self._open()
            f.write(data)
            f.flush()
            self._size += len(data)

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FunctionLogs:
    """Writes each component's output lines to its own bounded set of files."""

    def __init__(
        self,
        root: Path,
        *,
        file_bytes: int = DEFAULT_FILE_BYTES,
        total_bytes: int = DEFAULT_TOTAL_BYTES,
    ) -> None:
        if file_bytes <= 0 or total_bytes < file_bytes:
            raise ValueError(
                f"log sizes: file_bytes {file_bytes} must be > 0 and <= total_bytes {total_bytes}"
            )
        self.root = root
        self.file_bytes = file_bytes
        self.total_bytes = total_bytes
        self._logs: dict[str, _ComponentLog] = {}
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, component: str) -> Path:
        return self.root / f"{_SAFE.sub('_', component)}.log"

    def _log(self, component: str) -> _ComponentLog:
        with self._lock:
            log = self._logs.get(component)
            if log is None:
                keep = self.total_bytes // self.file_bytes - 1
                log = _ComponentLog(self.path_for(component), self.file_bytes, keep)
                self._logs[component] = log
            return log

    def write(self, component: str, request_id: str, line: str, now: float | None = None) -> None:
        ts = time.time() if now is None else now
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
        text = f"{stamp}\t{request_id or '-'}\t{line}\n"
        # A full disk must not stop the function; the agent's own log still has the line.
        with contextlib.suppress(OSError):
            self._log(component).write(text.encode("utf-8", "replace"))

    def files(self, component: str) -> list[Path]:
        base = self.path_for(component)
        return sorted(base.parent.glob(base.name + "*"))

    def close(self) -> None:
        with self._lock:
            logs = list(self._logs.values())
        for log in logs:
            with contextlib.suppress(OSError):
                log.close()
