"""The worker framing: ``write_frame``/``read_frame`` on streams, and the agent's
deadline-bound ``_FrameReader`` on a real socket pair."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.agent.worker import _FrameReader
from edge.runtime.protocol import (
    MAX_BODY,
    MAX_HEADER,
    ProtocolError,
    encode_frame,
    encode_invoke,
    encode_ok_result,
    frame_size,
    read_frame,
    split_invoke,
    whole_frame,
    write_all,
    write_frame,
)

_LEN = struct.Struct(">I")


def frame(header: bytes, body: bytes = b"") -> bytes:
    return _LEN.pack(len(header)) + header + _LEN.pack(len(body)) + body


def encode(header: dict[str, object], body: bytes = b"") -> bytes:
    buf = io.BytesIO()
    write_frame(buf, header, body)
    return buf.getvalue()


# -- write_frame / read_frame on a stream -------------------------------------------


def test_frame_layout_is_length_prefixed_header_then_body() -> None:
    raw = encode({"type": "ready"}, b"xyz")
    assert raw == frame(b'{"type":"ready"}', b"xyz")


def test_round_trip_keeps_header_and_binary_body() -> None:
    body = bytes(range(256))
    stream = io.BytesIO(encode({"type": "invoke", "request_id": "r1"}, body))
    assert read_frame(stream) == ({"type": "invoke", "request_id": "r1"}, body)


def test_consecutive_frames_are_read_one_at_a_time() -> None:
    stream = io.BytesIO(encode({"type": "a"}) + encode({"type": "b"}, b"2"))
    assert read_frame(stream) == ({"type": "a"}, b"")
    assert read_frame(stream) == ({"type": "b"}, b"2")
    with pytest.raises(EOFError):
        read_frame(stream)


@settings(max_examples=60, deadline=None)
@given(
    header=st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20), st.none())
    ),
    body=st.binary(max_size=300),
)
def test_any_header_and_body_round_trip(header: dict[str, object], body: bytes) -> None:
    header = {**header, "type": "t"}
    assert read_frame(io.BytesIO(encode(header, body))) == (header, body)


def test_empty_stream_is_eof() -> None:
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b""))


@pytest.mark.parametrize("cut", [2, 4, 10, 21])
def test_stream_closed_mid_frame_is_eof(cut: int) -> None:
    raw = encode({"type": "result"}, b"body")
    assert cut < len(raw)
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(raw[:cut]))


def test_oversized_header_length_is_refused_before_reading_it() -> None:
    stream = io.BytesIO(_LEN.pack(MAX_HEADER + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        read_frame(stream)


def test_oversized_body_length_is_refused_before_reading_it() -> None:
    stream = io.BytesIO(_LEN.pack(13) + b'{"type":"x"}' + b" " + _LEN.pack(MAX_BODY + 1))
    with pytest.raises(ProtocolError, match="body"):
        read_frame(stream)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"junk!", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "'type'"),
        (b'{"kind": "result"}', "'type'"),
        (b'"type"', "'type'"),
    ],
)
def test_garbage_header_is_a_protocol_error(header: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        read_frame(io.BytesIO(frame(header)))


# -- _FrameReader: the agent's side, on a real socket pair, with deadlines -----------


def socket_reader() -> tuple[_FrameReader, socket.socket, int]:
    """A reader on one end of a socket pair, its socket, and the other end's raw fd
    (written with ``os.write`` as a worker writes, and closed to signal EOF)."""
    ours, theirs = socket.socketpair()
    return _FrameReader(ours), ours, theirs.detach()


@pytest.fixture
def chan() -> Iterator[tuple[_FrameReader, int]]:
    reader, sock, wfd = socket_reader()
    yield reader, wfd
    reader.close()
    sock.close()
    with contextlib.suppress(OSError):  # the test may have closed it to signal EOF
        os.close(wfd)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_reader_returns_frames_written_in_one_chunk_in_order(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    os.write(wfd, encode({"type": "a"}, b"1") + encode({"type": "b"}, b"22"))
    assert reader.read(soon()) == ({"type": "a"}, b"1")
    assert reader.read(soon()) == ({"type": "b"}, b"22")


def test_reader_reassembles_a_frame_written_byte_by_byte(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    for byte in encode({"type": "result", "ok": True}, b"payload"):
        os.write(wfd, bytes([byte]))
    assert reader.read(soon()) == ({"type": "result", "ok": True}, b"payload")


def test_reader_times_out_when_nothing_arrives(chan: tuple[_FrameReader, int]) -> None:
    reader, _ = chan
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        reader.read(time.monotonic() + 0.05)
    assert time.monotonic() - started < 2.0


def test_reader_with_a_past_deadline_times_out_at_once(chan: tuple[_FrameReader, int]) -> None:
    reader, _ = chan
    with pytest.raises(TimeoutError):
        reader.read(time.monotonic() - 1)


def test_reader_times_out_on_half_a_frame_and_keeps_what_it_has(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    raw = encode({"type": "result"}, b"body")
    os.write(wfd, raw[:7])
    with pytest.raises(TimeoutError):
        reader.read(time.monotonic() + 0.05)
    os.write(wfd, raw[7:])
    assert reader.read(soon()) == ({"type": "result"}, b"body")


def test_reader_sees_eof_when_the_writer_closes_mid_frame(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    os.write(wfd, encode({"type": "result"}, b"body")[:9])
    os.close(wfd)
    with pytest.raises(EOFError):
        reader.read(soon())


def test_reader_sees_eof_on_a_clean_close(chan: tuple[_FrameReader, int]) -> None:
    reader, wfd = chan
    os.close(wfd)
    with pytest.raises(EOFError):
        reader.read(soon())


def test_reader_refuses_an_oversized_header_without_waiting_for_it(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    os.write(wfd, _LEN.pack(0xFFFFFFFF))
    # No deadline: if the reader tried to buffer 4 GiB it would block forever.
    with pytest.raises(ProtocolError, match="header length"):
        reader.read(None)


def test_reader_refuses_an_oversized_body_without_waiting_for_it(
    chan: tuple[_FrameReader, int],
) -> None:
    reader, wfd = chan
    os.write(wfd, _LEN.pack(12) + b'{"type":"x"}' + _LEN.pack(MAX_BODY + 1))
    with pytest.raises(ProtocolError, match="body length"):
        reader.read(None)


@pytest.mark.parametrize("header", [b"junk!", b"[]", b'{"ok": true}', b"\x00\x01\x02"])
def test_reader_refuses_junk_headers(chan: tuple[_FrameReader, int], header: bytes) -> None:
    reader, wfd = chan
    os.write(wfd, frame(header))
    with pytest.raises(ProtocolError):
        reader.read(soon())


def test_read_now_takes_only_what_is_there(chan: tuple[_FrameReader, int]) -> None:
    reader, wfd = chan
    assert reader.read_now() is None  # nothing written: no wait, no frame
    whole = frame(b'{"type":"result"}', b"body")
    os.write(wfd, whole[:7])
    assert reader.read_now() is None  # half a frame stays buffered
    os.write(wfd, whole[7:])
    assert reader.read_now() == ({"type": "result"}, b"body")
    assert reader.read_now() is None


def test_garbage_found_by_read_now_is_found_again_by_the_next_read(
    chan: tuple[_FrameReader, int],
) -> None:
    """The agent's receiving thread peeks with ``read_now`` and leaves the reply to
    the worker's own thread; garbage it saw must reach that thread as garbage (a
    protocol error), not as a silence that ends in a timeout."""
    reader, wfd = chan
    os.write(wfd, frame(b"junk!"))
    with pytest.raises(ProtocolError):
        reader.read_now()
    with pytest.raises(ProtocolError):
        reader.read(soon(0.5))


def receive_timeout(sock: socket.socket) -> float:
    sec, usec = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return float(sec + usec / 1e6)


def test_the_reader_waits_in_the_read_with_the_kernel_timeout_set_only_when_off() -> None:
    """The wait for an answer is the read itself (SO_RCVTIMEO), not poll and a read;
    the timeout is left alone while it fits the time left, so a component's
    invocations (all with the same timeout) set it once."""
    reader, sock, wfd = socket_reader()
    try:
        assert sock.getblocking()
        os.write(wfd, encode({"type": "a"}))
        reader.read(soon(5.0))
        first = receive_timeout(sock)
        assert 4.9 < first <= 5.011  # (the kernel keeps it in clock ticks: rounded up)
        os.write(wfd, encode({"type": "b"}))
        reader.read(soon(5.0))
        assert receive_timeout(sock) == first  # left alone
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            reader.read(time.monotonic() + 0.05)
        assert 0.04 < time.monotonic() - started < 2.0
        assert 0 < receive_timeout(sock) <= 0.061
        # No deadline: the kernel timeout is cleared, and the read waits for the frame.
        writer = threading.Timer(0.1, os.write, args=(wfd, encode({"type": "c"})))
        writer.start()
        assert reader.read(None) == ({"type": "c"}, b"")
        writer.join()
        assert receive_timeout(sock) == 0
        # A deadline years away waits a day at a time (a timeval fits any time_t).
        os.write(wfd, encode({"type": "d"}))
        assert reader.read(soon(1e9)) == ({"type": "d"}, b"")
        assert 86399 < receive_timeout(sock) <= 86401
    finally:
        reader.close()
        sock.close()
        os.close(wfd)


def test_the_reader_waits_with_poll_where_the_kernel_refuses_the_timeout() -> None:
    """A ``timeval`` layout the kernel does not take (EINVAL) turns the reader to
    poll and a non-blocking read; deadlines, frames and EOF work the same."""
    ours, theirs = socket.socketpair()
    reader = _FrameReader(ours, timevals=(struct.Struct("@hh"),))  # 4 bytes: too short
    wfd = theirs.detach()
    try:
        with pytest.raises(TimeoutError):
            reader.read(time.monotonic() + 0.02)  # (its microseconds fit a short)
        assert receive_timeout(ours) == 0  # never set
        raw = encode({"type": "result"}, b"body")
        os.write(wfd, raw[:5])
        writer = threading.Timer(0.05, os.write, args=(wfd, raw[5:]))
        writer.start()
        assert reader.read(soon()) == ({"type": "result"}, b"body")
        writer.join()
        os.close(wfd)
        wfd = -1
        with pytest.raises(EOFError):
            reader.read(soon())
    finally:
        reader.close()
        ours.close()
        if wfd >= 0:
            os.close(wfd)


@settings(max_examples=30, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=200), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=6),
)
def test_reader_handles_any_split_of_a_frame_stream(bodies: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(encode({"type": "r", "i": i}, body) for i, body in enumerate(bodies))
    reader, sock, wfd = socket_reader()
    try:
        pos = 0
        for cut in cuts:
            os.write(wfd, raw[pos : pos + cut])
            pos += cut
        os.write(wfd, raw[pos:])
        got = [reader.read(soon()) for _ in bodies]
    finally:
        reader.close()
        sock.close()
        os.close(wfd)
    assert got == [({"type": "r", "i": i}, body) for i, body in enumerate(bodies)]


# -- compact headers for the per-invocation frames ----------------------------------


def test_a_plain_invoke_and_ok_result_use_the_compact_header() -> None:
    invoke = {"type": "invoke", "request_id": "r-1", "topic": "a/ü", "encoding": "binary",
              "timeout_ms": 3000}
    result = {"type": "result", "request_id": "r-1", "ok": True,
              "content_type": "application/json", "duration_ms": 1.25, "logged": True}
    for header in (invoke, result):
        raw = encode(header, b"{}")
        assert raw[4:5] in (b"\x01", b"\x02")  # not JSON
        assert read_frame(io.BytesIO(raw)) == (header, b"{}")


@pytest.mark.parametrize(
    "header",
    [
        {"type": "invoke", "request_id": "r", "topic": "t", "encoding": "json",
         "timeout_ms": 1, "continuation": "x"},  # an extra field
        {"type": "invoke", "request_id": "r", "topic": "t", "encoding": "other",
         "timeout_ms": 1},
        {"type": "result", "request_id": "r", "ok": False, "error": {"errorType": "E"}},
        {"type": "result", "request_id": "r", "ok": True, "content_type": "none",
         "duration_ms": 1, "fatal": True},
    ],
)
def test_anything_else_stays_json(header: dict[str, object]) -> None:
    raw = encode(header)
    assert raw[4:5] == b"{"
    assert read_frame(io.BytesIO(raw)) == (header, b"")


@pytest.mark.parametrize("junk", [b"\x01", b"\x01\x00\x00", b"\x02\x09\x00" + bytes(8),
                                  b"\x01\x05" + bytes(6)])
def test_a_truncated_or_unknown_compact_header_is_a_protocol_error(junk: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_frame(io.BytesIO(frame(junk)))


def test_the_worker_reader_takes_frames_whole_and_keeps_the_rest() -> None:
    from edge.runtime.protocol import FrameReader

    rfd, wfd = os.pipe()
    try:
        reader = FrameReader(rfd)
        first = encode({"type": "a"}, b"1")
        second = encode({"type": "b"}, b"2" * 100_000)  # more than one pipe read
        os.write(wfd, first + second[:10])
        assert reader.read() == ({"type": "a"}, b"1")
        writer = threading.Thread(target=os.write, args=(wfd, second[10:]))
        writer.start()
        assert reader.read() == ({"type": "b"}, b"2" * 100_000)
        writer.join()
        os.close(wfd)
        wfd = -1
        with pytest.raises(EOFError):
            reader.read()
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


# -- the two frames of every invocation, built directly --------------------------------

# Any invoke and ok result, including what the compact form cannot carry (an unknown
# encoding or content type, a timeout out of range): those go as JSON.
INVOKE_FIELDS = {
    "request_id": st.text(max_size=80),
    "topic": st.text(max_size=80),
    "encoding": st.sampled_from(["json", "binary", "cbor"]),
    "timeout_ms": st.integers(min_value=-1, max_value=(1 << 32) + 1),
    "payload": st.binary(max_size=200),
}
RESULT_FIELDS = {
    "request_id": st.text(max_size=80),
    "content_type": st.sampled_from(
        ["none", "application/json", "application/octet-stream", "text/plain"]
    ),
    "duration_ms": st.floats(min_value=0, max_value=1e7, allow_nan=False),
    "logged": st.booleans(),
    "body": st.binary(max_size=200),
}



@given(**INVOKE_FIELDS)
def test_encode_invoke_is_encode_frame_of_the_invoke_header(
    request_id: str, topic: str, encoding: str, timeout_ms: int, payload: bytes
) -> None:
    header = {"type": "invoke", "request_id": request_id, "topic": topic,
              "encoding": encoding, "timeout_ms": timeout_ms}
    assert encode_invoke(request_id, topic, encoding, timeout_ms, payload) == encode_frame(
        header, payload
    )


@given(**RESULT_FIELDS)
def test_encode_ok_result_is_encode_frame_of_the_result_header(
    request_id: str, content_type: str, duration_ms: float, logged: bool, body: bytes
) -> None:
    header: dict[str, object] = {"type": "result", "request_id": request_id, "ok": True,
                                 "content_type": content_type, "duration_ms": duration_ms}
    if logged:
        header["logged"] = True
    built = encode_ok_result(request_id, content_type, duration_ms, logged, body)
    assert built == encode_frame(header, body)
    assert read_frame(io.BytesIO(built)) == (header, body)


# -- the same two frames, read without a header object ---------------------------------


@given(**INVOKE_FIELDS)
def test_split_invoke_reads_what_the_general_reader_reads(
    request_id: str, topic: str, encoding: str, timeout_ms: int, payload: bytes
) -> None:
    raw = encode_invoke(request_id, topic, encoding, timeout_ms, payload)
    fields = split_invoke(raw)
    header, body = read_frame(io.BytesIO(raw))
    if raw[4:5] == b"{":  # what the compact form cannot carry is left to the general reader
        assert fields is None
        return
    assert fields == (header["request_id"], header["topic"], header["encoding"],
                      header["timeout_ms"], body)
    assert fields == (request_id, topic, encoding, timeout_ms, payload)


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=60))
def test_split_invoke_never_misreads_a_damaged_or_partial_frame(junk: bytes, cut: int) -> None:
    # Whatever the bytes, split_invoke takes them only when the general reader reads
    # the very same invocation from them; else it leaves them to that reader.
    good = encode_invoke("r-1", "a/b", "json", 3000, b'{"k":1}')
    for raw in (good[:cut], good[:cut] + junk, b"\x00\x00\x00" + junk, good + good):
        fields = split_invoke(raw)
        if fields is None:
            continue
        header, body = read_frame(io.BytesIO(raw))
        assert frame_size(raw) == len(raw)
        assert fields == (header["request_id"], header["topic"], header["encoding"],
                          header["timeout_ms"], body)


@given(**RESULT_FIELDS)
def test_whole_frame_reads_an_ok_result_as_the_general_reader_does(
    request_id: str, content_type: str, duration_ms: float, logged: bool, body: bytes
) -> None:
    raw = encode_ok_result(request_id, content_type, duration_ms, logged, body)
    assert whole_frame(raw) == read_frame(io.BytesIO(raw))
    assert whole_frame(raw + raw) is None  # two frames: the buffered reader's job
    assert whole_frame(raw[:-1]) is None


@pytest.mark.parametrize(
    "raw",
    [
        frame(b"\x02\x01\x00" + bytes(8) + b"\xff\xfe"),  # a request id that is not UTF-8
        frame(b"\x02\x07\x00" + bytes(8) + b"r"),  # an unknown content type
        frame(b"\x02\x01\x00" + bytes(4)),  # shorter than its fixed part
    ],
)
def test_whole_frame_refuses_a_damaged_compact_result(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        whole_frame(raw)


def test_the_worker_reader_hands_out_invocations_in_any_form() -> None:
    from edge.runtime.protocol import FrameReader

    compact = encode_invoke("r-1", "a/b", "binary", 1500, b"\x00\x01")
    as_json = encode_frame({"type": "invoke", "request_id": "r-2", "topic": "c",
                            "encoding": "json", "timeout_ms": 20, "extra": 1}, b"{}")
    rfd, wfd = os.pipe()
    try:
        reader = FrameReader(rfd)
        os.write(wfd, compact)  # alone in its read: taken apart without a header object
        assert reader.read_invoke() == ("r-1", "a/b", "binary", 1500, b"\x00\x01")
        os.write(wfd, compact + as_json[:7])  # more than one frame, and part of one
        assert reader.read_invoke() == ("r-1", "a/b", "binary", 1500, b"\x00\x01")
        os.write(wfd, as_json[7:] + encode_frame({"type": "stop"}))
        assert reader.read_invoke() == ("r-2", "c", "json", 20, b"{}")
        assert reader.read_invoke() is None  # stop
        os.write(wfd, frame(b"not json"))
        with pytest.raises(ProtocolError):
            reader.read_invoke()
    finally:
        os.close(rfd)
        os.close(wfd)
    rfd, wfd = os.pipe()
    os.close(wfd)
    try:
        with pytest.raises(EOFError):
            FrameReader(rfd).read_invoke()
    finally:
        os.close(rfd)


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_frame_size_is_known_once_both_lengths_are_in(header: bytes, body: bytes) -> None:
    raw = frame(header, body)
    for cut in range(len(raw) + 1):
        expected = len(raw) if cut >= 8 + len(header) else None
        assert frame_size(raw[:cut]) == expected


def test_write_all_writes_what_the_pipe_takes_in_parts() -> None:
    # A frame bigger than a pipe holds goes out in several writes, all of it, in order.
    data = bytes(range(256)) * 4096  # 1 MiB: sixteen times a default pipe's capacity
    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_all(w, data)
    finally:
        os.close(w)
        reader.join(10)
        os.close(r)
    assert bytes(got) == data
