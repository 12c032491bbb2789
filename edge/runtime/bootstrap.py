"""The Python worker: imports one handler and serves invocations over a pipe.

Started by the agent (and by ``edgectl invoke``) as
``python -m edge.runtime.bootstrap``. It imports nothing beyond the standard
library and this package's two small runtime modules before the user's code,
so a cold start costs little more than the interpreter itself.

Protocol (see ``edge.runtime.protocol``):

    agent -> worker  {"type": "init", "dir", "handler", "function_name", ...}
    worker -> agent  {"type": "ready"} | {"type": "init_error", "error": {...}}
    agent -> worker  {"type": "invoke", "request_id", "topic", "encoding",
                      "timeout_ms", ...} + payload
    worker -> agent  {"type": "result", "request_id", "ok": true,
                      "content_type": "application/json" | "application/octet-stream"
                      | "none"} + body
                   | {"type": "result", "request_id", "ok": false, "error": {...}}
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any, BinaryIO

from edge.runtime.context import LambdaContext
from edge.runtime.protocol import read_frame, write_frame


def error_record(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """A Lambda-style error record: what Lambda's runtime returns for an unhandled error."""
    # Drop this bootstrap's own frames: the user wants to see their code.
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": [line.rstrip("\n") for line in traceback.format_list(tb)],
    }


class HandlerNotFound(Exception):
    """The module imported but has no such callable: Lambda's Runtime.HandlerNotFound."""


def _load_handler(folder: str, handler: str) -> Any:
    module_name, _, func_name = handler.rpartition(".")
    if not module_name or not func_name:
        raise HandlerNotFound(f"handler {handler!r} is not of the form module.function")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # Anything raised while the module imports is the module's fault (ImportModuleError),
    # whatever its type; only a missing or non-callable attribute is HandlerNotFound.
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None:
        raise HandlerNotFound(f"module {module_name!r} has no handler function {func_name!r}")
    if not callable(func):
        raise HandlerNotFound(f"handler {handler!r} is not callable")
    return func


def _encode_result(value: Any) -> tuple[str, bytes]:
    if value is None:
        return "none", b""
    if isinstance(value, bytes | bytearray | memoryview):
        return "application/octet-stream", bytes(value)
    return "application/json", json.dumps(value, separators=(",", ":")).encode()


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    header, _ = read_frame(inp)
    if header.get("type") != "init":
        return 2
    for key, value in (header.get("environment") or {}).items():
        os.environ[str(key)] = str(value)
    try:
        func = _load_handler(header["dir"], header["handler"])
    except BaseException as exc:  # noqa: BLE001 - any import-time failure is the user's
        kind = "Runtime.ImportModuleError"
        if isinstance(exc, HandlerNotFound):
            kind = "Runtime.HandlerNotFound"
        write_frame(out, {"type": "init_error", "error": error_record(exc, kind)})
        return 1
    write_frame(out, {"type": "ready", "pid": os.getpid()})

    common = {
        "function_name": header.get("function_name", ""),
        "function_version": header.get("function_version", ""),
        "memory_limit_in_mb": int(header.get("memory_limit_in_mb", 128)),
        "invoked_function_arn": header.get("invoked_function_arn", ""),
        "log_group_name": header.get("log_group_name", ""),
        "log_stream_name": header.get("log_stream_name", ""),
    }
    while True:
        try:
            req, payload = read_frame(inp)
        except EOFError:
            return 0
        if req.get("type") == "stop":
            return 0
        started = time.monotonic()
        request_id = req.get("request_id", "")
        reply: dict[str, Any] = {"type": "result", "request_id": request_id}
        body = b""
        try:
            event: Any = payload
            if req.get("encoding", "json") == "json":
                event = json.loads(payload)
            context = LambdaContext(
                aws_request_id=request_id,
                deadline=started + int(req.get("timeout_ms", 3000)) / 1000,
                subject=req.get("topic", ""),
                **common,
            )
            value = func(event, context)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the handler's error (even sys.exit) is a result
            reply.update(ok=False, error=error_record(exc))
        else:
            try:
                content_type, body = _encode_result(value)
                reply.update(ok=True, content_type=content_type)
            except (TypeError, ValueError) as exc:
                err = error_record(exc, "Runtime.MarshalError")
                err["errorMessage"] = f"Unable to marshal response: {exc}"
                reply.update(ok=False, error=err)
        reply["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        write_frame(out, reply, body)


def main() -> int:
    # Keep the protocol on a private copy of stdout; user prints go to stderr.
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    return serve(inp, channel)


if __name__ == "__main__":
    sys.exit(main())
