"""The framing between the agent and a function's worker process.

A frame is a JSON header and an opaque body, each length-prefixed::

    u32 header_len | header (UTF-8 JSON) | u32 body_len | body

The body carries the raw trigger payload or the raw result, so binary events
(camera frames) cross the pipe without base64. Only the standard library is
used: the worker bootstrap imports this module before the user's code and
must start fast.

The worker writes frames on a duplicate of its original stdout and points
fd 1 at stderr, so a ``print`` in a handler lands in the logs instead of
corrupting the channel.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

_LEN = struct.Struct(">I")
# A header is a small JSON object; anything bigger is a corrupt channel.
MAX_HEADER = 1 << 20
# Bodies above this are refused rather than buffered (a worker writing garbage
# must not make the agent allocate gigabytes).
MAX_BODY = 256 << 20


# Written by a runtime on its log stream around each invocation
# (``LOG_MARK + "start <request id>\n"`` ... ``LOG_MARK + "end\n"``) so the agent
# tags every output line with the request it belongs to.
LOG_MARK = "\x1eedge:"


class ProtocolError(Exception):
    """The peer wrote something that is not a frame (or closed mid-frame)."""


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(raw)) + raw + _LEN.pack(len(body)) + body


def write_frame(stream: BinaryIO, header: dict[str, Any], body: bytes = b"") -> None:
    stream.write(encode_frame(header, body))
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """Read one frame; ``EOFError`` on a clean close, ``ProtocolError`` on garbage."""
    (hlen,) = _LEN.unpack(_read_exact(stream, 4))
    if hlen > MAX_HEADER:
        raise ProtocolError(f"header of {hlen} bytes exceeds {MAX_HEADER}")
    raw = _read_exact(stream, hlen)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or "type" not in header:
        raise ProtocolError("header is not an object with a 'type'")
    (blen,) = _LEN.unpack(_read_exact(stream, 4))
    if blen > MAX_BODY:
        raise ProtocolError(f"body of {blen} bytes exceeds {MAX_BODY}")
    return header, _read_exact(stream, blen)
