"""The Python worker: imports one handler and serves invocations over its channel.

Started by the agent (and by ``edgectl invoke``) as
``python -m edge.runtime.bootstrap``, with the channel (a Unix socket) on its
stdin and stdout. It imports nothing beyond the standard library and this
package's two small runtime modules before the user's code, so a cold start
costs little more than the interpreter itself.

Protocol (see ``edge.runtime.protocol``):

    agent -> worker  {"type": "init", "dir", "handler", "function_name", ...}
    worker -> agent  {"type": "ready"} | {"type": "init_error", "error": {...}}
    agent -> worker  {"type": "invoke", "request_id", "topic", "encoding",
                      "timeout_ms", ...} + payload
    (worker -> agent {"type": "call", "id", "op", ...} + body,
     agent -> worker {"type": "reply", "id", "ok", ...} + body)*
    worker -> agent  {"type": "result", "request_id", "ok": true,
                      "content_type": "application/json" | "application/octet-stream"
                      | "none"} + body
                   | {"type": "result", "request_id", "ok": false, "error": {...},
                      "fatal": true?}

A handler that runs out of memory (``MemoryError`` under the rlimit the agent
asks for) gets a ``Runtime.OutOfMemory`` record marked ``fatal``, and the
worker exits: a heap that failed once is not trusted with the next event.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from json.scanner import make_scanner

from edge.runtime.context import LambdaContext
from edge.runtime.protocol import (
    LOG_MARK,
    FrameReader,
    encode_frame,
    encode_ok_result,
    write_all,
)

# What a worker imports before the handler is its cold start: ``typing`` (for
# annotations only), ``traceback`` (for error records only) and ``contextlib``
# stay out of it, as in the two runtime modules above.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OOM_EXIT = 86  # the status a worker exits with after reporting an out-of-memory error


def error_record(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """A Lambda-style error record: what Lambda's runtime returns for an unhandled error."""
    import traceback  # here: a worker that never fails never pays for it

    # Drop this bootstrap's own frames: the user wants to see their code.
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": [line.rstrip("\n") for line in traceback.format_list(tb)],
    }


class HandlerNotFound(Exception):
    pass


def _load_handler(folder: str, handler: str) -> Any:
    """Import the handler; ``HandlerNotFound`` for a bad name, anything else is the
    module's own import failure."""
    module_name, _, func_name = handler.rpartition(".")
    if not module_name or not func_name:
        raise HandlerNotFound(f"handler {handler!r} is not of the form module.function")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None:
        raise HandlerNotFound(f"module {module_name!r} has no handler function {func_name!r}")
    if not callable(func):
        raise HandlerNotFound(f"handler {handler!r} is not callable")
    return func


# One encoder for every result: ``json.dumps`` with options builds one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


_DECODER = json.JSONDecoder()
# The C scanner: one JSON value from a position in a str (typeshed types the argument
# oddly; the standard library passes a decoder, as here).
_SCAN = make_scanner(_DECODER)  # type: ignore[arg-type]


def _parse(payload: bytes) -> Any:
    """``json.loads(payload)``, with a UTF-8 document that is one JSON value from its
    first character to its last (what MQTT payloads are) scanned directly:
    ``json.loads`` sniffs for UTF-16 and UTF-32 and matches whitespace around the
    value with two regular expressions on every call first. Anything else (a
    BOM, surrounding whitespace, another encoding, an error) is handed to
    ``json.loads`` itself, so the outcome (and the error) is always ``json.loads``'s."""
    try:
        text = payload.decode("utf-8")
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):
        pass
    return json.loads(payload)


def _make_dumps() -> Callable[[Any], str]:
    """``_COMPACT.encode``, with the C encoder built once instead of on every call (with
    its circular-reference bookkeeping): the result of every invocation goes through
    it. A value it cannot encode so is handed to ``_COMPACT.encode`` itself, so the
    outcome (and the error: ``ValueError`` for a circular value) is always its."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return _COMPACT.encode
    encode = make(None, _COMPACT.default, json.encoder.encode_basestring_ascii, None,
                  ":", ",", False, False, True)

    def dumps(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except RecursionError:  # circular, or nested deeper than the interpreter goes
            return _COMPACT.encode(value)

    return dumps


_dumps = _make_dumps()


def _encode_result(value: Any) -> tuple[str, bytes]:
    if type(value) is dict or type(value) is list:  # the usual result, first
        return "application/json", _dumps(value).encode()
    if value is None:
        return "none", b""
    if isinstance(value, bytes | bytearray | memoryview):
        return "application/octet-stream", bytes(value)
    return "application/json", _dumps(value).encode()


def _limit_memory(megabytes: int) -> None:
    """Cap the heap: private writable memory (``RLIMIT_DATA``), which is what a
    handler's objects cost, not the shared libraries and code mapped read-only."""
    import resource

    limit = megabytes << 20
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


class _TaggedStream:
    """``sys.stdout``/``sys.stderr`` for the handler: the first write of an invocation
    is preceded by a ``LOG_MARK start <request id>`` line and ``end_invocation``
    closes it, so the agent tags every line with its request id. A quiet
    invocation costs no marker at all (and no wake-up of the agent's log reader).
    Output written below Python (by C code) between invocations is tagged with
    the request that wrote last."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.request_id = ""
        self.open = False

    def write(self, text: str) -> int:
        if not self.open and self.request_id:
            self._inner.flush()
            os.write(2, f"{LOG_MARK}start {self.request_id}\n".encode())
            self.open = True
        return int(self._inner.write(text))

    def end_invocation(self) -> None:
        if self.open:
            try:  # noqa: SIM105 - contextlib is not part of a worker's start
                self._inner.flush()
            except (OSError, ValueError):
                pass
            os.write(2, f"{LOG_MARK}end\n".encode())
            self.open = False
        self.request_id = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_TAG = _TaggedStream(sys.stderr)


class _InvalidEvent(Exception):
    """The payload on a ``json`` trigger is not JSON: the runtime's error, not the
    handler's (checked here rather than in the agent, which would parse it twice)."""

    def __init__(self, topic: str, size: int) -> None:
        super().__init__(f"payload on topic {topic!r} is not JSON ({size} bytes)")


class _Channel:
    """Lets the handler's context call the agent in the middle of an invocation."""

    def __init__(self, inp: FrameReader, out: int) -> None:
        self._inp = inp
        self._out = out
        self._next = 0

    def call(self, op: str, fields: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        self._next += 1
        header = {"type": "call", "id": self._next, "op": op, **fields}
        write_all(self._out, encode_frame(header, body))
        reply, data = self._inp.read()
        if reply.get("type") != "reply" or reply.get("id") != self._next:
            raise RuntimeError(f"agent answered out of turn: {reply.get('type')!r}")
        return reply, data


def serve(inp_fd: int, out_fd: int) -> int:
    """Serve invocations on the channel fds until ``stop`` or the agent closes it.

    Frames are read whole (``FrameReader``: one ``read`` per small frame) and
    written with one ``write`` each, straight on the fds: no buffered stream
    sits between the handler's result and the agent.
    """
    inp = FrameReader(inp_fd)

    def send(header: dict[str, Any], body: bytes = b"") -> None:
        write_all(out_fd, encode_frame(header, body))

    header, _ = inp.read()
    if header.get("type") != "init":
        return 2
    for key, value in (header.get("environment") or {}).items():
        os.environ[str(key)] = str(value)
    memory_mb = int(header.get("memory_limit_in_mb", 128))
    if header.get("enforce_memory"):
        _limit_memory(memory_mb)
    try:
        func = _load_handler(header["dir"], header["handler"])
    except HandlerNotFound as exc:
        exc.__traceback__ = None
        record = error_record(exc, "Runtime.HandlerNotFound")
        send({"type": "init_error", "error": record})
        return 1
    except BaseException as exc:  # noqa: BLE001 - any import-time failure is the user's
        kind = "Runtime.ImportModuleError"
        if isinstance(exc, MemoryError):
            kind = "Runtime.OutOfMemory"
        send({"type": "init_error", "error": error_record(exc, kind)})
        return 1
    send({"type": "ready", "pid": os.getpid()})

    channel = _Channel(inp, out_fd)
    make_context = LambdaContext.maker(
        function_name=header.get("function_name", ""),
        function_version=header.get("function_version", ""),
        memory_limit_in_mb=memory_mb,
        invoked_function_arn=header.get("invoked_function_arn", ""),
        log_group_name=header.get("log_group_name", ""),
        log_stream_name=header.get("log_stream_name", ""),
        call=channel.call,
    )
    # Bound once: this loop's own cost is what the channel adds to a bare pipe.
    read_invoke, monotonic, tag, parse = inp.read_invoke, time.monotonic, _TAG, _parse
    while True:
        try:
            invoke = read_invoke()
        except EOFError:
            return 0
        if invoke is None:  # stop
            return 0
        request_id, topic, encoding, timeout_ms, payload = invoke
        started = monotonic()
        error: dict[str, Any] | None = None
        fatal = False
        tag.request_id = request_id
        try:
            event: Any = payload
            if encoding == "json":
                try:
                    event = parse(payload)
                except ValueError:  # UnicodeDecodeError included
                    raise _InvalidEvent(topic, len(payload)) from None
            context = make_context(request_id, started + timeout_ms / 1000, topic)
            value = func(event, context)
            del event, context
        except KeyboardInterrupt:
            raise
        except _InvalidEvent as exc:
            error = {"errorType": "Runtime.InvalidEvent", "errorMessage": str(exc),
                     "stackTrace": []}
        except MemoryError as exc:
            error = error_record(exc, "Runtime.OutOfMemory")
            error["errorMessage"] = f"out of memory (limit {memory_mb} MB)"
            fatal = True
        except BaseException as exc:  # noqa: BLE001 - the handler's error (even sys.exit) is a result
            error = error_record(exc)
        else:
            try:
                content_type, body = _encode_result(value)
            except (TypeError, ValueError, RecursionError) as exc:
                error = error_record(exc, "Runtime.MarshalError")
                error["errorMessage"] = f"Unable to marshal response: {exc}"
            except MemoryError:
                error = {"errorType": "Runtime.OutOfMemory", "stackTrace": [],
                         "errorMessage": f"out of memory (limit {memory_mb} MB)"}
                fatal = True
            value = None
        duration = (monotonic() - started) * 1000
        logged = tag.open  # the agent forwards this output before the result
        if logged:
            tag.end_invocation()
        tag.request_id = ""
        if error is None:
            write_all(out_fd, encode_ok_result(request_id, content_type, duration, logged, body))
            continue
        reply: dict[str, Any] = {"type": "result", "request_id": request_id, "ok": False,
                                 "error": error, "duration_ms": round(duration, 3)}
        if fatal:
            reply["fatal"] = True
        if logged:
            reply["logged"] = True
        send(reply)
        if fatal:
            return OOM_EXIT


def main() -> int:
    # Keep the protocol on a private copy of stdout; user prints go to stderr.
    # (Kept as file objects that own the fds; serve() reads and writes the fds.)
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr = _TAG
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    return serve(inp.fileno(), channel.fileno())


if __name__ == "__main__":
    sys.exit(main())
