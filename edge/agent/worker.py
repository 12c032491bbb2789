"""One function worker process, seen from the agent.

The agent never runs user code in its own process: a handler that segfaults,
calls ``os._exit``, runs out of memory or loops forever must cost one worker,
not the device. Every read from the worker has a deadline, and a worker that
overruns it, dies, or writes something that is not a frame is killed and
reported; the caller decides whether to start another.

Two runtimes speak the same protocol (``edge.runtime.protocol``): Python
(``python -m edge.runtime.bootstrap``, channel on its stdin/stdout) and Node.js
(``node edge/runtime/node/bootstrap.js``, channel on two extra fds, since Node
cannot move its own stdout aside). The channel is a Unix stream socket pair, not
a pipe: see ``_FrameReader`` for why.

While an invocation runs the worker may *call* the agent (``{"type": "call"}``
frames, e.g. ``context.invoke_self``); the agent answers each with a
``{"type": "reply"}`` frame before the worker goes on.

Memory: ``memory_limit_in_mb`` is enforced by a cgroup v2 slot when the agent
may create one (``edge.agent.cgroup``), else by an rlimit the bootstrap sets on
itself (``RLIMIT_DATA`` for Python, ``--max-old-space-size`` for Node.js).
Either way an invocation that exceeds it becomes a ``Runtime.OutOfMemory``
record and the worker is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from edge.runtime.protocol import (
    LOG_MARK,
    MAX_BODY,
    MAX_HEADER,
    ProtocolError,
    decode_header,
    encode_frame,
    encode_invoke,
    frame_size,
    take_whole,
    write_all,
)

if TYPE_CHECKING:
    from edge.model.component import ComponentManifest

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
# ``struct timeval`` for SO_RCVTIMEO: two C longs, or two 64-bit fields where a
# 32-bit system has moved to a 64-bit time_t.
_TIMEVALS = (struct.Struct("@ll"), struct.Struct("@qq"))
# The longest receive timeout set at once (a longer wait is several), so that a
# timeout of years still fits a 32-bit time_t.
_LONGEST_WAIT = 86400.0
RUNTIME_DIR = Path(__file__).resolve().parents[1] / "runtime"
NODE_BOOTSTRAP = RUNTIME_DIR / "node" / "bootstrap.js"
GGV1_PATH = RUNTIME_DIR / "ggv1"
# Lines a dying Node.js prints when V8's heap limit is hit.
_NODE_OOM = ("JavaScript heap out of memory", "Reached heap limit")


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
    node: str = "node"
    # Enforce memory_limit_in_mb with an rlimit when no cgroup slot is given.
    enforce_memory: bool = False
    # Extra PYTHONPATH entries (the greengrasssdk v1 contract modules).
    python_path: tuple[str, ...] = ()


@dataclass(slots=True)
class Outcome:
    """What one invocation produced: a result body or a Lambda-style error record.

    Not changed once made (not ``frozen`` only because a frozen dataclass costs
    2 µs to build, six times a plain one, and one is built per invocation)."""

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

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))


class WorkerDied(Exception):
    """The worker is gone or unusable; ``outcome`` is what to report for the request."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error["errorMessage"] if outcome.error else "worker died")
        self.outcome = outcome


@dataclass(slots=True)
class InFlight:
    """An invocation sent to a worker and not yet answered (``Worker.send_invoke``)."""

    request_id: str
    started: float  # time.monotonic()
    deadline: float
    timeout: float
    error: OSError | None = None  # the send failed: the worker is gone


class MemorySlot(Protocol):
    """Where a worker's memory is accounted (a cgroup); see ``edge.agent.cgroup``."""

    def attach(self, pid: int) -> None: ...
    def oom_killed(self) -> bool: ...
    def close(self) -> None: ...


# A call from the worker during an invocation: (header, body) -> (reply header, body).
CallHandler = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]
LogSink = Callable[[str], None]
OutputSink = Callable[[str, str], None]  # (line, request id or "")


class _FrameReader:
    """Reads frames from the agent's end of the worker's socket, with a deadline, so a
    stalled worker cannot stall us.

    The socket stays blocking, with the kernel's receive timeout (``SO_RCVTIMEO``)
    set to the time left: a caller that waits for an answer sleeps in the read
    itself, and its wake-up costs one system call where ``poll`` and a read cost
    two (a tenth of a round trip on a VM). The timeout is set only when it is off
    by more than a little (a component's invocations all have the same one), and
    the deadline is checked again after every wake-up. A read that must not wait
    (``read_now``) passes ``MSG_DONTWAIT``. Each read takes up to 64 KiB, so a
    small frame comes in one.

    Where the kernel refuses the timeout (a ``timeval`` layout this Python does
    not know), the reader waits with ``poll`` before each read instead.
    """

    def __init__(
        self, sock: socket.socket, timevals: Sequence[struct.Struct] = _TIMEVALS
    ) -> None:
        self._sock = sock
        self._timevals = timevals
        self._fd = sock.fileno()
        self._buf = bytearray()
        sock.setblocking(True)
        self._timeout = 0.0  # SO_RCVTIMEO as set on the socket; 0: none (wait for good)
        self._kernel_timeout = True
        self._poll: select.poll | None = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    @property
    def fd(self) -> int:
        return self._fd

    def read_now(self) -> tuple[dict[str, Any], bytes] | None:
        """A whole frame if one is there without waiting, else None (a part of one
        stays buffered for the next read)."""
        if self._poll is None:
            raise EOFError("reader closed")
        if not self.buffered_frame():
            try:
                chunk = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            if not chunk:
                raise EOFError("worker closed its channel")
            if not self._buf:
                whole = take_whole(chunk, self._buf)
                if whole is not None:
                    return whole
            else:
                self._buf += chunk
        return self.read(None) if self.buffered_frame() else None

    def buffered_frame(self) -> bool:
        """True when a whole frame is already buffered (read needs no system call)."""
        size = frame_size(self._buf)
        return size is not None and len(self._buf) >= size

    def _recv(self, deadline: float | None, size: int = 65536) -> bytes:
        """One read of up to ``size`` bytes, waiting until ``deadline`` (None: for good)
        for there to be something; ``TimeoutError`` once it has passed, ``EOFError``
        on a close."""
        poll = self._poll
        if poll is None:
            raise EOFError("reader closed")
        while True:
            if deadline is None:
                left = wait = 0.0
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                wait = min(left, _LONGEST_WAIT)
            if not self._kernel_timeout:
                # Round up: poll's unit is 1 ms, and 0 would spin until the deadline.
                if not poll.poll(None if deadline is None else math.ceil(left * 1000)):
                    continue  # the loop re-checks the deadline
                try:
                    chunk = self._sock.recv(size, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue  # readable turned out to mean nothing yet
            else:
                # Set anew only when the timeout on the socket is none where one is
                # needed, too long by over a millisecond, or too short by a tenth.
                timeout = self._timeout
                if (not timeout) != (not wait) or timeout > wait + 0.001 \
                        or timeout < wait * 0.9:
                    self._set_timeout(wait)
                    continue
                try:
                    chunk = self._sock.recv(size)
                except BlockingIOError:
                    continue  # the timeout ran out: the loop checks the deadline
            if not chunk:
                raise EOFError("worker closed its channel")
            return chunk

    def _set_timeout(self, seconds: float) -> None:
        micros = math.ceil(seconds * 1e6)
        for layout in self._timevals:
            try:
                self._sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVTIMEO, layout.pack(*divmod(micros, 1_000_000))
                )
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                continue
            self._timeout = micros / 1e6
            return
        self._kernel_timeout = False

    def read(self, deadline: float | None) -> tuple[dict[str, Any], bytes]:
        buf = self._buf
        # The usual case: nothing left over, and one read brings one whole frame.
        if not buf:
            whole = take_whole(self._recv(deadline), buf)
            if whole is not None:
                return whole
        self._fill(4, deadline)
        (hlen,) = _LEN.unpack_from(buf, 0)
        if hlen > MAX_HEADER:
            raise ProtocolError(f"header length {hlen} exceeds {MAX_HEADER}")
        self._fill(4 + hlen + 4, deadline)
        (blen,) = _LEN.unpack_from(buf, 4 + hlen)
        if blen > MAX_BODY:
            raise ProtocolError(f"body length {blen} exceeds {MAX_BODY}")
        total = 4 + hlen + 4 + blen
        self._fill(total, deadline)
        view = memoryview(buf)
        try:
            header = decode_header(view[4 : 4 + hlen].tobytes())
            body = view[4 + hlen + 4 : total].tobytes()
        finally:
            view.release()
        del buf[:total]
        return header, body

    def _fill(self, need: int, deadline: float | None) -> None:
        while len(self._buf) < need:
            self._buf += self._recv(deadline, max(65536, need - len(self._buf)))

    def close(self) -> None:
        self._poll = None


class Worker:
    """A started worker process for one component; not thread-safe (one caller at a time)."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        on_log: LogSink | None = None,
        on_output: OutputSink | None = None,
        memory_slot: MemorySlot | None = None,
    ) -> None:
        self.spec = spec
        sink = on_log or (lambda line: log.info("%s", line))
        self._on_output: OutputSink = on_output or (lambda line, _rid: sink(line))
        self._slot = memory_slot
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: _FrameReader | None = None
        self._chan: socket.socket | None = None  # the agent's end, written to
        self._chan_in: socket.socket | None = None  # read from (Node.js: a second socket)
        self._log_stream: IO[bytes] | None = None
        self._log_thread: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=20)  # last output lines, to explain a death
        self._log_cond = threading.Condition()
        self._logs_closed = ""  # the last request whose output was fully forwarded
        self.invocations = 0
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def reaped(self) -> bool:
        """True once the agent has reaped the process (after ``kill``, or a fatal
        reply): what ``alive()`` says without a system call, for after each invocation."""
        return self._proc is None or self._proc.returncode is not None

    # -- start ---------------------------------------------------------------------------
    def _command(self, env: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
        """The command line and Popen keywords for the spec's runtime."""
        spec = self.spec
        if spec.language == "python":
            pkg_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (pkg_root, *spec.python_path, env.get("PYTHONPATH", "")) if p
            )
            env["PYTHONUNBUFFERED"] = "1"
            # glibc reserves 64 MiB of address space per malloc arena and thread;
            # two arenas keep a small worker small.
            env.setdefault("MALLOC_ARENA_MAX", "2")
            return [spec.python, "-m", "edge.runtime.bootstrap"], {"stderr": subprocess.PIPE}
        if spec.language == "nodejs":
            node = shutil.which(spec.node) or spec.node
            args = [node]
            if spec.enforce_memory or self._slot is not None:
                args.append(f"--max-old-space-size={max(16, spec.memory_limit_in_mb)}")
            return [*args, str(NODE_BOOTSTRAP)], {
                "stdin": subprocess.DEVNULL,
                "stdout": subprocess.PIPE,
                "stderr": subprocess.STDOUT,
            }
        raise WorkerDied(
            Outcome.failure(
                "Runtime.UnknownRuntime",
                f"no worker runtime for language {spec.language!r}",
            )
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait for its ``ready``; raise ``WorkerDied`` on init failure."""
        env = dict(os.environ)
        env.update(self.spec.environment)
        argv, popen = self._command(env)
        # The channel: Unix stream sockets, not pipes (see _FrameReader). Python's
        # worker has one, on its stdin and stdout; Node.js gets one per direction,
        # as extra fds named in the environment: its reading socket is made
        # non-blocking by Node, and its blocking writes need a socket of their own.
        node = self.spec.language == "nodejs"
        chan, child = socket.socketpair()
        chan_in, child_out = socket.socketpair() if node else (chan, child)
        if node:
            child_fds = (child.fileno(), child_out.fileno())
            env["EDGE_CHANNEL_IN"], env["EDGE_CHANNEL_OUT"] = map(str, child_fds)
            popen.update(pass_fds=child_fds)
        else:
            popen.update(stdin=child.fileno(), stdout=child.fileno())
        try:
            self._proc = subprocess.Popen(
                argv, cwd=str(self.spec.folder), env=env, start_new_session=True, **popen
            )
        except OSError as exc:
            chan.close()
            chan_in.close()
            raise WorkerDied(
                Outcome.failure("Runtime.InitError", f"cannot start {argv[0]}: {exc}")
            ) from None
        finally:
            child.close()
            child_out.close()
        if self._slot is not None:
            try:
                self._slot.attach(self._proc.pid)
            except OSError as exc:
                log.warning("worker %d not moved into its cgroup: %s", self._proc.pid, exc)
        self._chan, self._chan_in = chan, chan_in
        self._log_stream = self._proc.stderr or self._proc.stdout
        self._reader = _FrameReader(chan_in)
        self._log_thread = threading.Thread(
            target=self._pump_output, name=f"worker-log-{self._proc.pid}", daemon=True
        )
        self._log_thread.start()
        init = {
            "type": "init",
            "dir": str(self.spec.folder),
            "handler": self.spec.handler,
            "function_name": self.spec.function_name,
            "function_version": self.spec.function_version,
            "memory_limit_in_mb": self.spec.memory_limit_in_mb,
            "enforce_memory": self.spec.enforce_memory and self._slot is None,
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
            code = self._reap()
            raise WorkerDied(
                Outcome.failure("Runtime.InitError", self._death_reason(code, exc))
            ) from None
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
        assert self._chan is not None
        # One write on the socket's fd (``write_all``), as the worker writes its frames.
        write_all(self._chan.fileno(), encode_frame(header, body))

    def _pump_output(self) -> None:
        """Forward the worker's output lines, tagged with the request they belong to.

        The runtime writes ``LOG_MARK start <id>`` / ``LOG_MARK end`` on the same
        stream around each invocation, so the tag is exact even for lines read late.
        """
        assert self._log_stream is not None
        current = ""
        for raw in self._log_stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            while LOG_MARK in text:
                before, _, rest = text.partition(LOG_MARK)
                if before:
                    self._emit(before, current)
                marker, _, text = rest.partition("\n")
                words = marker.split(" ", 2)
                if words[0] == "end" and current:
                    with self._log_cond:
                        self._logs_closed = current
                        self._log_cond.notify_all()
                current = words[1] if len(words) > 1 and words[0] == "start" else ""
                text = ""  # a marker always ends its line
            if text:
                self._emit(text, current)

    def _emit(self, line: str, request_id: str) -> None:
        self._tail.append(line)
        try:
            self._on_output(line, request_id)
        except Exception:  # a broken log sink must not kill the pump
            log.exception("worker log sink failed")

    # -- invoke --------------------------------------------------------------------------
    def invoke(
        self,
        *,
        request_id: str,
        topic: str,
        payload: bytes,
        encoding: str,
        timeout: float,
        on_call: CallHandler | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Run one invocation; raise ``WorkerDied`` (with the outcome to report) if the
        worker overran, died or broke the protocol; the worker is then dead.

        ``on_call`` answers the worker's calls to the agent during the invocation
        (``context.invoke_self``); without it such calls are refused.
        """
        sent = self.send_invoke(
            request_id=request_id, topic=topic, payload=payload, encoding=encoding,
            timeout=timeout, extra=extra,
        )
        return self.await_outcome(sent, on_call)

    def send_invoke(
        self,
        *,
        request_id: str,
        topic: str,
        payload: bytes,
        encoding: str,
        timeout: float,
        extra: Mapping[str, Any] | None = None,
    ) -> InFlight:
        """Send one invocation; ``await_outcome`` (on this thread or another, one at a
        time) reads what comes back. Raises ``WorkerDied`` only when the worker is
        not running (as last seen: callers that may have been idle a while check
        ``alive()`` first); a failed write is reported by ``await_outcome``."""
        if self._reader is None or self.reaped:
            raise WorkerDied(Outcome.failure("Runtime.WorkerDied", "worker is not running"))
        started = time.monotonic()
        self.last_used = started
        self.invocations += 1
        sent = InFlight(request_id, started, started + timeout, timeout)
        timeout_ms = int(timeout * 1000)
        if extra:
            header = {
                "type": "invoke",
                "request_id": request_id,
                "topic": topic,
                "encoding": encoding,
                "timeout_ms": timeout_ms,
                **extra,
            }
            frame = encode_frame(header, payload)
        else:
            frame = encode_invoke(request_id, topic, encoding, timeout_ms, payload)
        assert self._chan is not None
        try:
            write_all(self._chan.fileno(), frame)
        except OSError as exc:
            sent.error = exc
        return sent

    def try_result(
        self, sent: InFlight, wait: float, interrupts: Sequence[int]
    ) -> tuple[dict[str, Any], bytes] | None:
        """The invocation's next frame if it is there already, or arrives within
        ``wait`` seconds and before any fd in ``interrupts`` becomes readable; else
        None, with nothing consumed (``await_outcome`` then reads it, or the failure,
        on any thread). An answer already there is taken even when an interrupt is
        pending too: concluding it here costs less than handing it to another thread."""
        reader = self._reader
        if sent.error is not None or reader is None:
            return None
        try:  # the usual case: it answered while this thread committed the record
            frame = reader.read_now()
        except (EOFError, ProtocolError, OSError):
            return None
        if frame is not None:
            return frame
        # Nothing whole yet (read_now would have returned a buffered frame): wait.
        poller = select.poll()
        poller.register(reader.fd, select.POLLIN)
        for fd in interrupts:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(max(0, math.ceil(wait * 1000)))
        if not any(fd == reader.fd for fd, _ in ready):
            return None
        try:
            # Readable: usually a whole frame, taken without touching the receive
            # timeout; one not whole within 2 ms stays buffered for the next reader.
            return reader.read_now() or reader.read(time.monotonic() + 0.002)
        except (TimeoutError, EOFError, ProtocolError, OSError):
            return None

    def await_outcome(
        self,
        sent: InFlight,
        on_call: CallHandler | None = None,
        first: tuple[dict[str, Any], bytes] | None = None,
    ) -> Outcome:
        """Read the outcome of ``sent`` (``first``: its first frame, already read by
        ``try_result``), answering calls on the way; see ``invoke``."""
        started, timeout = sent.started, sent.timeout
        try:
            if sent.error is not None:
                raise sent.error
            assert self._reader is not None
            reply, body = first if first is not None else self._reader.read(sent.deadline)
            while reply.get("type") == "call":
                self._answer(reply, body, on_call)
                reply, body = self._reader.read(sent.deadline)
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
            kind = "Runtime.OutOfMemory" if self._out_of_memory() else "Runtime.ExitError"
            reason = self._death_reason(code, exc)
            raise WorkerDied(Outcome.failure(kind, reason, elapsed)) from None
        except ProtocolError as exc:
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.ProtocolError", f"worker wrote garbage: {exc}")
            ) from None
        request_id = sent.request_id
        if reply.get("type") != "result" or reply.get("request_id") != request_id:
            self.kill()
            raise WorkerDied(
                Outcome.failure("Runtime.ProtocolError", "worker answered out of turn")
            )
        self.last_used = now = time.monotonic()
        duration = reply.get("duration_ms")
        duration = float(duration if duration is not None else (now - started) * 1000)
        if reply.get("logged"):
            # Forward the invocation's output before its result (as Lambda's END line).
            with self._log_cond:
                self._log_cond.wait_for(lambda: self._logs_closed == request_id, timeout=1.0)
            self.last_used = time.monotonic()
        if reply.get("fatal"):
            # The runtime cannot go on (it ran out of memory); it exits after this reply.
            self.kill()
        if reply.get("ok"):
            # Positional: keywords cost a fifth of the whole construction.
            return Outcome(True, str(reply.get("content_type", "none")), body, None, duration)
        return Outcome(ok=False, error=reply.get("error") or {}, duration_ms=duration)

    def _answer(self, call: dict[str, Any], body: bytes, on_call: CallHandler | None) -> None:
        call_id = call.get("id")
        if on_call is None:
            answer: dict[str, Any] = {"ok": False, "error": "calls are not available here"}
            data = b""
        else:
            try:
                answer, data = on_call(call, body)
            except Exception as exc:  # the handler sees the failure, the agent goes on
                log.warning("worker call %r failed: %s", call.get("op"), exc)
                answer, data = {"ok": False, "error": str(exc)}, b""
        self._send({"type": "reply", "id": call_id, **answer}, data)

    # -- end -----------------------------------------------------------------------------
    def _out_of_memory(self) -> bool:
        if self._slot is not None and self._slot.oom_killed():
            return True
        if self._log_thread is not None:
            self._log_thread.join(1.0)  # read what it said while dying
        return any(mark in line for line in self._tail for mark in _NODE_OOM)

    def _death_reason(self, code: int | None, exc: BaseException) -> str:
        reason = _exit_reason(code, exc)
        if self._out_of_memory():
            return f"out of memory (limit {self.spec.memory_limit_in_mb} MB); {reason}"
        return reason

    def _reap(self, timeout: float = 2.0) -> int | None:
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._proc.returncode
        self._close_streams()
        return code

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
        else:
            # The leader is gone; children it left in its group go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._close_streams()
        pump = self._log_thread
        if pump is not None and pump is not threading.current_thread():
            pump.join(timeout=2)
        if self._slot is not None:
            self._slot.close()

    def _close_streams(self) -> None:
        for sock in (self._chan, self._chan_in):
            if sock is not None:
                sock.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


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


def lambda_environment(manifest: ComponentManifest, *, thing: str, device: str) -> dict[str, str]:
    """The environment a Lambda or Greengrass function reads, the same in every mode
    (agent, ``edgectl invoke``, ``edge.testing``), so what passes locally behaves the
    same on the device."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": manifest.name,
        "AWS_LAMBDA_FUNCTION_VERSION": manifest.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(manifest.limits.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/edge/{thing}/{manifest.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{thing}/{manifest.version}",
        "AWS_EXECUTION_ENV": f"edgectl_{manifest.runtime}",
        "AWS_IOT_THING_NAME": thing,
        "EDGE_COMPONENT": manifest.name,
        "EDGE_DEVICE": device,
    }


def worker_spec(
    manifest: ComponentManifest,
    *,
    thing: str,
    device: str,
    environment: Mapping[str, str] | None = None,
    enforce_memory: bool = False,
    python_path: tuple[str, ...] = (),
) -> WorkerSpec:
    """The worker for ``manifest``: Lambda environment, then ``environment`` (the
    agent's additions), then the manifest's own ``environment``, which wins."""
    env = lambda_environment(manifest, thing=thing, device=device)
    env.update(environment or {})
    env.update(manifest.environment)
    return WorkerSpec(
        folder=manifest.path,
        handler=manifest.handler,
        function_name=manifest.name,
        function_version=manifest.version,
        language=manifest.language,
        memory_limit_in_mb=manifest.limits.memory_mb,
        environment=env,
        invoked_function_arn=function_arn(manifest.name),
        log_group_name=env["AWS_LAMBDA_LOG_GROUP_NAME"],
        log_stream_name=env["AWS_LAMBDA_LOG_STREAM_NAME"],
        enforce_memory=enforce_memory,
        python_path=python_path,
    )


def function_arn(name: str, version: str | None = None) -> str:
    """The Lambda-style ARN a component's handler sees as ``invoked_function_arn``."""
    arn = f"arn:aws:lambda:local:000000000000:function:{name}"
    return f"{arn}:{version}" if version else arn
