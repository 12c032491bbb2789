"""One function worker process, seen from the agent.

The agent never runs user code in its own process: a handler that segfaults,
calls ``os._exit`` or loops forever must cost one worker, not the device. Every
read from the worker has a deadline, and a worker that overruns it, dies, or
writes something that is not a frame is killed and reported; the caller
decides whether to start another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.runtime.protocol import MAX_BODY, MAX_HEADER, ProtocolError, write_frame

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start a worker for one component version."""

    folder: Path
    handler: str
    function_name: str
    function_version: str
    language: str = "python"
    memory_limit_in_mb: int = 128
    environment: Mapping[str, str] = field(default_factory=dict)
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    python: str = sys.executable


@dataclass(frozen=True)
class Outcome:
    """What one invocation produced: a result body or a Lambda-style error record."""

    ok: bool
    content_type: str = "none"
    body: bytes = b""
    error: Mapping[str, Any] | None = None
    duration_ms: float = 0.0

    @classmethod
    def failure(cls, error_type: str, message: str, duration_ms: float = 0.0) -> Outcome:
        return cls(
            ok=False,
            error={"errorType": error_type, "errorMessage": message, "stackTrace": []},
            duration_ms=duration_ms,
        )


class WorkerDied(Exception):
    """The worker is gone or unusable; ``outcome`` is what to report for the request."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error["errorMessage"] if outcome.error else "worker died")
        self.outcome = outcome


class _FrameReader:
    """Reads frames from a pipe with a deadline, so a stalled worker cannot stall us."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._sel = selectors.DefaultSelector()
        self._sel.register(fd, selectors.EVENT_READ)

    def _fill(self, need: int, deadline: float | None) -> None:
        while len(self._buf) < need:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout is not None and timeout == 0.0:
                raise TimeoutError
            if not self._sel.select(timeout):
                raise TimeoutError
            chunk = os.read(self._fd, max(65536, need - len(self._buf)))
            if not chunk:
                raise EOFError("worker closed its channel")
            self._buf += chunk

    def read(self, deadline: float | None) -> tuple[dict[str, Any], bytes]:
        self._fill(4, deadline)
        (hlen,) = _LEN.unpack_from(self._buf, 0)
        if hlen > MAX_HEADER:
            raise ProtocolError(f"header length {hlen} exceeds {MAX_HEADER}")
        self._fill(4 + hlen + 4, deadline)
        (blen,) = _LEN.unpack_from(self._buf, 4 + hlen)
        if blen > MAX_BODY:
            raise ProtocolError(f"body length {blen} exceeds {MAX_BODY}")
        total = 4 + hlen + 4 + blen
        self._fill(total, deadline)
        try:
            header = json.loads(bytes(self._buf[4 : 4 + hlen]))
        except ValueError as exc:
            raise ProtocolError(f"header is not JSON: {exc}") from exc
        if not isinstance(header, dict) or "type" not in header:
            raise ProtocolError("header is not an object with a 'type'")
        body = bytes(self._buf[4 + hlen + 4 : total])
        del self._buf[:total]
        return header, body

    def close(self) -> None:
        self._sel.close()


LogSink = Callable[[str], None]


class Worker:
    """A started worker process for one component; not thread-safe (one caller at a time)."""

    def __init__(self, spec: WorkerSpec, *, on_log: LogSink | None = None) -> None:
        self.spec = spec
        self._on_log = on_log or (lambda line: log.info("%s", line))
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: _FrameReader | None = None
        self._stderr_thread: threading.Thread | None = None
        self.invocations = 0
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait for its ``ready``; raise ``WorkerDied`` on init failure."""
        if self.spec.language != "python":
            raise WorkerDied(
                Outcome.failure(
                    "Runtime.UnknownRuntime",
                    f"no worker runtime for language {self.spec.language!r}",
                )
            )
        env = dict(os.environ)
        env.update(self.spec.environment)
        env["PYTHONUNBUFFERED"] = "1"
        # The bootstrap must import this package even when the worker's cwd is the
        # component folder and the package is not installed (a source checkout).
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_root, env.get("PYTHONPATH", "")) if p
        )
        self._proc = subprocess.Popen(
            [self.spec.python, "-m", "edge.runtime.bootstrap"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(self.spec.folder),
            env=env,
            start_new_session=True,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._reader = _FrameReader(self._proc.stdout.fileno())
        self._stderr_thread = threading.Thread(
            target=self._pump_stderr, name=f"worker-log-{self._proc.pid}", daemon=True
        )
        self._stderr_thread.start()
        init = {
            "type": "init",
            "dir": str(self.spec.folder),
            "handler": self.spec.handler,
            "function_name": self.spec.function_name,
            "function_version": self.spec.function_version,
            "memory_limit_in_mb": self.spec.memory_limit_in_mb,
            "invoked_function_arn": self.spec.invoked_function_arn,
            "log_group_name": self.spec.log_group_name,
            "log_stream_name": self.spec.log_stream_name,
        }
        try:
            self._send(init)
            header, _ = self._reader.read(time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.InitTimeout", f"worker not ready after {timeout:.0f}s")
            ) from None
        except (EOFError, ProtocolError, OSError) as exc:
            self.kill()
            raise WorkerDied(Outcome.failure("Runtime.InitError", str(exc))) from None
        if header.get("type") == "init_error":
            self.kill()
            err = header.get("error") or {}
            raise WorkerDied(Outcome(ok=False, error=err))
        if header.get("type") != "ready":
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.InitError", f"unexpected frame {header.get('type')!r}")
            )

    def _send(self, header: dict[str, Any], body: bytes = b"") -> None:
        assert self._proc is not None and self._proc.stdin is not None
        write_frame(self._proc.stdin, header, body)  # type: ignore[arg-type]

    def _pump_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            try:
                self._on_log(raw.decode("utf-8", "replace").rstrip("\n"))
            except Exception:  # a broken log sink must not kill the pump
                log.exception("worker log sink failed")

    def invoke(
        self,
        *,
        request_id: str,
        topic: str,
        payload: bytes,
        encoding: str,
        timeout: float,
    ) -> Outcome:
        """Run one invocation; raise ``WorkerDied`` (with the outcome to report) if the
        worker overran, died or broke the protocol; the worker is then dead."""
        if self._reader is None or not self.alive():
            raise WorkerDied(Outcome.failure("Runtime.WorkerDied", "worker is not running"))
        started = time.monotonic()
        self.last_used = started
        self.invocations += 1
        header = {
            "type": "invoke",
            "request_id": request_id,
            "topic": topic,
            "encoding": encoding,
            "timeout_ms": int(timeout * 1000),
        }
        try:
            self._send(header, payload)
            reply, body = self._reader.read(started + timeout)
        except TimeoutError:
            self.kill()
            elapsed = (time.monotonic() - started) * 1000
            raise WorkerDied(
                Outcome.failure(
                    "Runtime.Timeout", f"Task timed out after {timeout:.2f} seconds", elapsed
                )
            ) from None
        except (EOFError, BrokenPipeError, OSError) as exc:
            code = self._reap()
            elapsed = (time.monotonic() - started) * 1000
            raise WorkerDied(
                Outcome.failure("Runtime.ExitError", _exit_reason(code, exc), elapsed)
            ) from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.ProtocolError", f"worker wrote garbage: {exc}")
            ) from None
        if reply.get("type") != "result" or reply.get("request_id") != request_id:
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.ProtocolError", "worker answered out of turn")
            )
        duration = float(reply.get("duration_ms", (time.monotonic() - started) * 1000))
        self.last_used = time.monotonic()
        if reply.get("ok"):
            return Outcome(
                ok=True,
                content_type=str(reply.get("content_type", "none")),
                body=body,
                duration_ms=duration,
            )
        return Outcome(ok=False, error=reply.get("error") or {}, duration_ms=duration)

    def _reap(self, timeout: float = 2.0) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._proc.returncode

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit, then make sure it did."""
        if self._proc is None:
            return
        if self.alive():
            try:
                self._send({"type": "stop"})
                self._proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        pump = self._stderr_thread
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout=2)


def _exit_reason(code: int | None, exc: BaseException) -> str:
    if code is None:
        return f"worker channel failed: {exc}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker exited on signal {name}"
    return f"worker exited with status {code}"
