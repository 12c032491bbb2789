"""The framing between the agent and a function's worker process.

A frame is a header and an opaque body, each length-prefixed::

    u32 header_len | header | u32 body_len | body

The header is a UTF-8 JSON object with a ``type`` (it starts with ``{``), or,
for the two frames every invocation sends, a compact binary header that
decodes to the same object (JSON costs a few microseconds to write and read on
each side, a tenth of the whole round trip)::

    invoke:     u8 1 | u8 encoding (0 json, 1 binary) | u32 timeout_ms
                | u16 len(request_id) | request_id | topic        (UTF-8)
    ok result:  u8 2 | u8 content type (0 none, 1 application/json,
                2 application/octet-stream) | u8 flags (1: logged)
                | f64 duration_ms | request_id                    (UTF-8)

All other frames (and an invoke or result with any other field: extra
invoke fields, an error record, ``fatal``) are JSON. A reader accepts both
forms for every frame; a writer may always send JSON, but both runtimes
write an ok result in the compact form, which the agent reads without a JSON
parse (``whole_frame``), as the Python worker reads an invoke
(``split_invoke``).

The body carries the raw trigger payload or the raw result, so binary events
(camera frames) cross the channel without base64. Only the standard library is
used: the worker bootstrap imports this module before the user's code and
must start fast.

The worker writes frames on a duplicate of its original stdout and points
fd 1 at stderr, so a ``print`` in a handler lands in the logs instead of
corrupting the channel.
"""

from __future__ import annotations

import json
import os
import struct

TYPE_CHECKING = False  # ``typing`` is not part of a worker's start (see bootstrap)
if TYPE_CHECKING:
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


_INVOKE = 1
_RESULT = 2
_INVOKE_HEAD = struct.Struct(">BBIH")  # type, encoding, timeout_ms, len(request_id)
_RESULT_HEAD = struct.Struct(">BBBd")  # type, content type, flags, duration_ms
# The same two with the frame's header length in front: one ``unpack``/``pack`` for
# the fixed part of the two frames of every invocation.
_INVOKE_FRAME = struct.Struct(">IBBIH")
_RESULT_FRAME = struct.Struct(">IBBBd")
_ENCODINGS = ("json", "binary")
_CONTENT_TYPES = ("none", "application/json", "application/octet-stream")
_INVOKE_KEYS = frozenset({"type", "request_id", "topic", "encoding", "timeout_ms"})
_RESULT_KEYS = frozenset({"type", "request_id", "ok", "content_type", "duration_ms", "logged"})
_RESULT_REQUIRED = frozenset({"type", "request_id", "ok", "content_type", "duration_ms"})


def _compact(header: dict[str, Any]) -> bytes | None:
    """The compact form of an invoke or ok-result header, or None when it has
    anything the compact form cannot carry."""
    kind = header.get("type")
    if not isinstance(header.get("request_id"), str):
        return None
    if (kind == "invoke" and isinstance(header.get("topic"), str)
            and header.keys() == _INVOKE_KEYS):
        rid: bytes = header["request_id"].encode()
        topic: bytes = header["topic"].encode()
        timeout = header["timeout_ms"]
        if (header["encoding"] in _ENCODINGS and isinstance(timeout, int)
                and 0 <= timeout <= 0xFFFFFFFF and len(rid) <= 0xFFFF):
            encoding = _ENCODINGS.index(header["encoding"])
            return _INVOKE_HEAD.pack(_INVOKE, encoding, timeout, len(rid)) + rid + topic
    elif (kind == "result" and header.get("ok") is True
          and _RESULT_REQUIRED <= header.keys() <= _RESULT_KEYS
          and header["content_type"] in _CONTENT_TYPES):
        flags = 1 if header.get("logged") else 0
        content_type = _CONTENT_TYPES.index(header["content_type"])
        request_id: bytes = header["request_id"].encode()
        return _RESULT_HEAD.pack(_RESULT, content_type, flags, float(header["duration_ms"])) + (
            request_id
        )
    return None


def _decode_compact(raw: bytes) -> dict[str, Any]:
    try:
        if raw[0] == _INVOKE:
            _, encoding, timeout, rlen = _INVOKE_HEAD.unpack_from(raw)
            start = _INVOKE_HEAD.size
            return {
                "type": "invoke",
                "request_id": raw[start : start + rlen].decode(),
                "topic": raw[start + rlen :].decode(),
                "encoding": _ENCODINGS[encoding],
                "timeout_ms": timeout,
            }
        if raw[0] == _RESULT:
            _, content_type, flags, duration = _RESULT_HEAD.unpack_from(raw)
            header = {
                "type": "result",
                "request_id": raw[_RESULT_HEAD.size :].decode(),
                "ok": True,
                "content_type": _CONTENT_TYPES[content_type],
                "duration_ms": duration,
            }
            if flags & 1:
                header["logged"] = True
            return header
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad compact header: {exc}") from exc
    raise ProtocolError(f"header is not JSON and not a compact header: {raw[:8]!r}")


def encode_header(header: dict[str, Any]) -> bytes:
    """A header's bytes: compact for a plain invoke or ok result, else JSON."""
    compact = _compact(header)
    if compact is not None:
        return compact
    return json.dumps(header, separators=(",", ":")).encode()


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    raw = encode_header(header)
    return b"".join((_LEN.pack(len(raw)), raw, _LEN.pack(len(body)), body))


_ENCODING_INDEX = {name: i for i, name in enumerate(_ENCODINGS)}
_CONTENT_TYPE_INDEX = {name: i for i, name in enumerate(_CONTENT_TYPES)}


def encode_invoke(
    request_id: str, topic: str, encoding: str, timeout_ms: int, payload: bytes
) -> bytes:
    """The frame ``encode_frame`` makes of a plain invoke header, built directly: every
    invocation sends one, and the header dict and its checks are a good part of the
    channel's own cost on a small CPU."""
    rid, raw_topic = request_id.encode(), topic.encode()
    index = _ENCODING_INDEX.get(encoding)
    if index is None or not 0 <= timeout_ms <= 0xFFFFFFFF or len(rid) > 0xFFFF:
        header = {"type": "invoke", "request_id": request_id, "topic": topic,
                  "encoding": encoding, "timeout_ms": timeout_ms}
        return encode_frame(header, payload)
    rlen = len(rid)
    head = _INVOKE_FRAME.pack(_INVOKE_HEAD.size + rlen + len(raw_topic), _INVOKE, index,
                              timeout_ms, rlen)
    return b"".join((head, rid, raw_topic, _LEN.pack(len(payload)), payload))


def encode_ok_result(
    request_id: str, content_type: str, duration_ms: float, logged: bool, body: bytes
) -> bytes:
    """The frame ``encode_frame`` makes of a plain ok result header, built directly (the
    other frame of every invocation)."""
    index = _CONTENT_TYPE_INDEX.get(content_type)
    if index is None:
        header: dict[str, Any] = {"type": "result", "request_id": request_id, "ok": True,
                                  "content_type": content_type, "duration_ms": duration_ms}
        if logged:
            header["logged"] = True
        return encode_frame(header, body)
    rid = request_id.encode()
    head = _RESULT_FRAME.pack(_RESULT_HEAD.size + len(rid), _RESULT, index, 1 if logged else 0,
                              float(duration_ms))
    return b"".join((head, rid, _LEN.pack(len(body)), body))


# What ``FrameReader.read_invoke`` returns: request id, topic, encoding, timeout in ms
# and the payload (a tuple, not an object: it is made for every invocation).
Invoke = tuple[str, str, str, int, bytes]


def split_invoke(chunk: bytes) -> Invoke | None:
    """The invocation that ``chunk`` holds exactly, as one compact invoke frame, read
    straight from the bytes (no header object); None for anything else (another
    frame, a JSON header, part of a frame or more than one), which the general
    reader then takes, with its errors."""
    size = len(chunk)
    if size < 8 + _INVOKE_HEAD.size or chunk[4] != _INVOKE:
        return None
    hlen, _, encoding, timeout_ms, rlen = _INVOKE_FRAME.unpack_from(chunk)
    if hlen > MAX_HEADER or encoding > 1 or _INVOKE_HEAD.size + rlen > hlen \
            or 8 + hlen > size or _LEN.unpack_from(chunk, 4 + hlen)[0] != size - 8 - hlen:
        return None
    start = 4 + _INVOKE_HEAD.size
    try:
        request_id = chunk[start : start + rlen].decode()
        topic = chunk[start + rlen : 4 + hlen].decode()
    except UnicodeDecodeError:
        return None
    return request_id, topic, _ENCODINGS[encoding], timeout_ms, chunk[8 + hlen :]


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


def decode_header(raw: bytes) -> dict[str, Any]:
    """Parse a frame's header (JSON or compact); ``ProtocolError`` unless it is an
    object with a type."""
    if raw[:1] in (b"\x01", b"\x02"):
        return _decode_compact(raw)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or "type" not in header:
        raise ProtocolError("header is not an object with a 'type'")
    return header


class FrameReader:
    """Reads whole frames from a blocking fd with one ``read`` call per frame.

    A small frame (an invoke of a 100-byte event) arrives in one pipe write, so
    one ``os.read`` of up to 64 KiB takes all of it; reading the four pieces
    separately (as ``read_frame`` on an unbuffered stream does) costs four
    system calls and four trips through the interpreter's I/O layer per frame.
    Bytes beyond the frame stay buffered for the next one. For the worker side
    only: it blocks without a deadline (the agent's reader has the deadline).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def read_invoke(self) -> Invoke | None:
        """The next frame as an invocation, None for a ``stop``; ``EOFError`` on a close,
        ``ProtocolError`` on garbage. The usual frame (one compact invoke, alone in
        one read) is taken apart without a header object: the worker's own cost
        per invocation is what the channel adds to a bare pipe."""
        if not self._buf:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError("channel closed")
            invoke = split_invoke(chunk)
            if invoke is not None:
                return invoke
            self._buf += chunk
        header, payload = self.read()
        if header.get("type") == "stop":
            return None
        return (header.get("request_id", ""), header.get("topic", ""),
                header.get("encoding", "json"), int(header.get("timeout_ms", 3000)), payload)

    def read(self) -> tuple[dict[str, Any], bytes]:
        """The next frame; ``EOFError`` on a close, ``ProtocolError`` on garbage."""
        buf = self._buf
        if not buf:
            whole = read_whole(self._fd, buf)
            if whole is not None:
                return whole
        need = 8
        while True:
            if len(buf) >= 4:
                (hlen,) = _LEN.unpack_from(buf, 0)
                if hlen > MAX_HEADER:
                    raise ProtocolError(f"header of {hlen} bytes exceeds {MAX_HEADER}")
                need = 8 + hlen
                if len(buf) >= need:
                    (blen,) = _LEN.unpack_from(buf, 4 + hlen)
                    if blen > MAX_BODY:
                        raise ProtocolError(f"body of {blen} bytes exceeds {MAX_BODY}")
                    need += blen
                    if len(buf) >= need:
                        break
            chunk = os.read(self._fd, max(65536, need - len(buf)))
            if not chunk:
                raise EOFError("channel closed")
            buf += chunk
        view = memoryview(buf)
        header = decode_header(view[4 : 4 + hlen].tobytes())
        body = view[8 + hlen : need].tobytes()
        view.release()
        del buf[:need]
        return header, body


def read_whole(fd: int, buf: bytearray) -> tuple[dict[str, Any], bytes] | None:
    """One read into an empty ``buf``, then ``take_whole``. ``EOFError`` on a close."""
    chunk = os.read(fd, 65536)
    if not chunk:
        raise EOFError("channel closed")
    return take_whole(chunk, buf)


def take_whole(chunk: bytes, buf: bytearray) -> tuple[dict[str, Any], bytes] | None:
    """What one read into an empty ``buf`` brought: the usual case is exactly one
    frame, returned as parsed from the chunk (no buffer, no copies); otherwise the
    bytes go into ``buf`` for the caller's reassembly, and None."""
    try:
        whole = whole_frame(chunk)
    except ProtocolError:
        buf += chunk  # kept: whoever reads next finds the garbage too, not a silence
        raise
    if whole is None:
        buf += chunk
    return whole


def frame_size(buf: bytes | bytearray) -> int | None:
    """How many bytes the first frame in ``buf`` takes, once both its lengths are in
    ``buf`` (None before, and for a header length over ``MAX_HEADER``)."""
    if len(buf) < 8:
        return None
    (hlen,) = _LEN.unpack_from(buf, 0)
    if hlen > MAX_HEADER or len(buf) < 8 + hlen:
        return None
    (blen,) = _LEN.unpack_from(buf, 4 + hlen)
    return 8 + int(hlen) + int(blen)


def whole_frame(chunk: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The frame that ``chunk`` holds exactly, or None (part of one, or more than one,
    or oversized lengths: the buffered reader deals with those)."""
    size = len(chunk)
    if size >= 8 + _RESULT_HEAD.size and chunk[4] == _RESULT:
        # The usual answer, a compact ok result: its lengths checked straight from the
        # chunk (the agent reads one per invocation).
        (hlen,) = _LEN.unpack_from(chunk)
        if hlen <= size - 8 and _LEN.unpack_from(chunk, 4 + hlen)[0] == size - 8 - hlen:
            return _decode_compact(chunk[4 : 4 + hlen]), chunk[8 + hlen :]
    if frame_size(chunk) != size:
        return None
    (hlen,) = _LEN.unpack_from(chunk, 0)
    return decode_header(chunk[4 : 4 + hlen]), chunk[8 + hlen :]


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to a blocking fd in as few calls as the kernel allows (one
    for a frame that fits the pipe's or socket's buffer), without a buffered stream's extra copy."""
    written = os.write(fd, data)
    if written == len(data):  # the usual case: one call, no view
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """Read one frame; ``EOFError`` on a clean close, ``ProtocolError`` on garbage."""
    (hlen,) = _LEN.unpack(_read_exact(stream, 4))
    if hlen > MAX_HEADER:
        raise ProtocolError(f"header of {hlen} bytes exceeds {MAX_HEADER}")
    header = decode_header(_read_exact(stream, hlen))
    (blen,) = _LEN.unpack(_read_exact(stream, 4))
    if blen > MAX_BODY:
        raise ProtocolError(f"body of {blen} bytes exceeds {MAX_BODY}")
    return header, _read_exact(stream, blen)
