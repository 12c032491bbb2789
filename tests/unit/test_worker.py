"""The worker process seen from the agent: real short-lived ``edge.runtime.bootstrap``
subprocesses running the handlers in ``fixtures/workers``."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent.worker import Outcome, Worker, WorkerDied, WorkerSpec, _FrameReader
from edge.runtime.protocol import encode_frame
from tests.harness.gate import Gate

HANDLERS = Path(__file__).parent / "fixtures" / "workers"


class LogLines:
    """An ``on_log`` sink that lets a test wait for a given line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: any(text in line for line in self.lines), timeout=timeout
            )


def spec(handler: str, **overrides: Any) -> WorkerSpec:
    fields: dict[str, Any] = {
        "folder": HANDLERS,
        "handler": handler,
        "function_name": "com.example.Test",
        "function_version": "1.2.3",
    }
    fields.update(overrides)
    return WorkerSpec(**fields)


@pytest.fixture
def logs() -> LogLines:
    return LogLines()


@pytest.fixture
def started(logs: LogLines) -> Iterator[Any]:
    """``started("app.echo")`` gives a running worker, stopped after the test."""
    workers: list[Worker] = []

    def start(handler: str, **overrides: Any) -> Worker:
        worker = Worker(spec(handler, **overrides), on_log=logs)
        workers.append(worker)
        worker.start(timeout=15)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def call(
    worker: Worker,
    payload: bytes = b"{}",
    *,
    encoding: str = "json",
    timeout: float = 5.0,
    request_id: str = "req-1",
    topic: str = "sensors/s1/hello",
) -> Outcome:
    return worker.invoke(
        request_id=request_id, topic=topic, payload=payload, encoding=encoding, timeout=timeout
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def died(worker: Worker, payload: bytes = b"{}", timeout: float = 5.0) -> dict[str, Any]:
    with pytest.raises(WorkerDied) as info:
        call(worker, payload, timeout=timeout)
    outcome = info.value.outcome
    assert not outcome.ok
    assert outcome.error is not None
    assert str(info.value) == outcome.error["errorMessage"]
    return dict(outcome.error)


# -- results ------------------------------------------------------------------------


def test_json_result(started: Any) -> None:
    outcome = call(started("app.echo"), b'{"name": "Ada", "n": [1, 2]}')
    assert outcome.ok
    assert outcome.content_type == "application/json"
    assert json.loads(outcome.body) == {"name": "Ada", "n": [1, 2]}
    assert outcome.error is None
    assert outcome.duration_ms >= 0


def test_bytes_result_is_octet_stream(started: Any) -> None:
    outcome = call(started("app.to_bytes"))
    assert outcome.ok
    assert outcome.content_type == "application/octet-stream"
    assert outcome.body == b"\x00\x01binary\xff"


def test_none_result(started: Any) -> None:
    outcome = call(started("app.returns_none"))
    assert outcome.ok
    assert outcome.content_type == "none"
    assert outcome.body == b""


def test_binary_encoding_hands_the_raw_bytes_to_the_handler(started: Any) -> None:
    outcome = call(started("app.binary_info"), b"\x89PNG\r\n\x1a\n", encoding="binary")
    assert json.loads(outcome.body) == {"type": "bytes", "length": 8, "head": "89504e47"}


def test_one_worker_serves_many_invocations_in_one_process(started: Any) -> None:
    worker = started("app.echo")
    pid = worker.pid
    for i in range(5):
        outcome = call(worker, json.dumps({"i": i}).encode(), request_id=f"r{i}")
        assert json.loads(outcome.body) == {"i": i}
    assert worker.pid == pid
    assert worker.invocations == 5
    assert worker.alive()


# -- handler errors (the worker survives) ----------------------------------------------


def test_handler_exception_is_a_lambda_style_error_record(started: Any) -> None:
    worker = started("app.boom")
    outcome = call(worker, b'{"sensor": "s9"}')
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error["errorType"] == "KeyError"
    assert "no such sensor: s9" in outcome.error["errorMessage"]
    trace = "\n".join(outcome.error["stackTrace"])
    assert str(HANDLERS / "app.py") in trace
    assert "in boom" in trace and "in _check" in trace
    assert "bootstrap.py" not in trace
    # An exception is a result: the same worker goes on serving.
    assert worker.alive()
    assert not call(worker, b'{"sensor": "s10"}').ok


def test_unserialisable_result_is_a_marshal_error(started: Any) -> None:
    worker = started("app.unserialisable")
    outcome = call(worker)
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.MarshalError"
    assert outcome.error["errorMessage"].startswith("Unable to marshal response:")
    assert "set" in outcome.error["errorMessage"]
    assert worker.alive()


@pytest.mark.parametrize(("handler", "message"), [
    ("app.circular", "Circular reference detected"),
    ("app.too_deep", "maximum recursion depth exceeded"),
])
def test_a_result_json_cannot_hold_is_a_marshal_error(
    started: Any, handler: str, message: str
) -> None:
    worker = started(handler)
    outcome = call(worker)
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.MarshalError"
    assert message in outcome.error["errorMessage"]
    assert worker.alive()  # and it goes on serving
    assert call(worker).error is not None


def test_non_json_payload_reaching_a_json_worker_is_an_error_not_a_crash(started: Any) -> None:
    worker = started("app.echo")
    outcome = call(worker, b"\xffnot json")
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.InvalidEvent"
    assert outcome.error["errorMessage"].endswith("is not JSON (9 bytes)")
    assert outcome.error["stackTrace"] == []
    assert worker.alive()


# -- the worker dies ------------------------------------------------------------------


def test_timeout_kills_the_worker(started: Any) -> None:
    worker = started("app.hang")
    pid = worker.pid
    assert pid is not None
    error = died(worker, timeout=0.3)
    assert error["errorType"] == "Runtime.Timeout"
    assert error["errorMessage"] == "Task timed out after 0.30 seconds"
    assert not worker.alive()
    assert gone(pid)


def test_a_dead_worker_refuses_further_invocations(started: Any) -> None:
    worker = started("app.hang")
    died(worker, timeout=0.2)
    error = died(worker)
    assert error["errorType"] == "Runtime.WorkerDied"


def test_os_exit_is_an_exit_error_with_the_status(started: Any) -> None:
    worker = started("app.exit3")
    error = died(worker)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == "worker exited with status 3"
    assert not worker.alive()


def test_death_by_signal_names_the_signal(started: Any) -> None:
    worker = started("app.segv")
    error = died(worker)
    assert error["errorType"] == "Runtime.ExitError"
    assert "SIGSEGV" in error["errorMessage"]


def test_a_worker_that_dies_with_an_invocation_unread_is_reported_by_its_exit(
    started: Any,
) -> None:
    """The runner sends the next invocation before the current one is answered. A
    Unix socket whose peer closes with data unread reports a reset, not an end:
    the death is still reported by the exit, and the next send fails cleanly."""
    gate = Gate()
    try:
        worker = started("app.gate", environment={"GATE_PORT": str(gate.port)})
        sent = worker.send_invoke(request_id="req-1", topic="t", payload=b"{}",
                                  encoding="json", timeout=5.0)
        assert gate.arrived() == worker.pid  # the first frame is read, the next is not
        worker.send_invoke(request_id="req-2", topic="t", payload=b"{}", encoding="json",
                           timeout=5.0)
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(WorkerDied) as info:
            worker.await_outcome(sent)
        error = info.value.outcome.error
        assert error is not None and error["errorType"] == "Runtime.ExitError"
        assert error["errorMessage"] == "worker exited on signal SIGKILL"
        with pytest.raises(WorkerDied, match="not running"):
            call(worker)
    finally:
        gate.close()


def test_garbage_on_the_result_channel_kills_the_worker(started: Any) -> None:
    worker = started("app.garbage")
    pid = worker.pid
    assert pid is not None
    error = died(worker)
    assert error["errorType"] == "Runtime.ProtocolError"
    assert "garbage" in error["errorMessage"]
    assert gone(pid)


def test_a_reply_for_another_request_kills_the_worker(started: Any) -> None:
    worker = started("app.out_of_turn")
    pid = worker.pid
    assert pid is not None
    error = died(worker)
    assert error["errorType"] == "Runtime.ProtocolError"
    assert "out of turn" in error["errorMessage"]
    assert gone(pid)


# -- start-up failures ----------------------------------------------------------------


def start_fails(handler: str, **overrides: Any) -> dict[str, Any]:
    worker = Worker(spec(handler, **overrides), on_log=lambda line: None)
    with pytest.raises(WorkerDied) as info:
        worker.start(timeout=15)
    assert not worker.alive()
    assert info.value.outcome.error is not None
    return dict(info.value.outcome.error)


def test_module_that_fails_to_import() -> None:
    error = start_fails("missing_dependency.handler")
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "edge_tests_no_such_module" in error["errorMessage"]
    trace = "\n".join(error["stackTrace"])
    assert "missing_dependency.py" in trace
    assert "bootstrap.py" not in trace


def test_missing_module() -> None:
    error = start_fails("nowhere.handler")
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "nowhere" in error["errorMessage"]


def test_missing_function_name() -> None:
    error = start_fails("app.no_such_function")
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert "no_such_function" in error["errorMessage"]


def test_handler_that_is_not_callable() -> None:
    error = start_fails("app.not_callable")
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert "not callable" in error["errorMessage"]


def test_handler_without_a_module() -> None:
    error = start_fails("handler")
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert "module.function" in error["errorMessage"]


def test_module_raising_value_error_on_import_is_not_handler_not_found() -> None:
    error = start_fails("bad_config.handler")
    assert "not-a-number" in error["errorMessage"]
    assert error["errorType"] != "Runtime.HandlerNotFound"


def test_unknown_language_is_refused_without_a_process() -> None:
    error = start_fails("app.echo", language="java")
    assert error["errorType"] == "Runtime.UnknownRuntime"
    assert "java" in error["errorMessage"]


# -- logs, environment, context ------------------------------------------------------


def test_print_goes_to_the_log_callback_not_the_channel(started: Any, logs: LogLines) -> None:
    outcome = call(started("app.chatty"))
    assert outcome.ok
    assert json.loads(outcome.body) == "done"
    assert logs.wait_for("hello from the handler")


def test_spec_environment_reaches_the_handler(started: Any) -> None:
    worker = started("app.env", environment={"EDGE_TEST_SETTING": "forty-two"})
    outcome = call(worker, b'{"name": "EDGE_TEST_SETTING"}')
    assert json.loads(outcome.body) == "forty-two"


def test_context_fields(started: Any) -> None:
    worker = started(
        "app.describe",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:local:000000000000:function:com.example.Test",
    )
    outcome = call(worker, request_id="8f2c-req", topic="sensors/s7/hello", timeout=4.0)
    doc = json.loads(outcome.body)
    assert doc["function_name"] == "com.example.Test"
    assert doc["function_version"] == "1.2.3"
    assert doc["aws_request_id"] == "8f2c-req"
    assert doc["subject"] == "sensors/s7/hello"
    assert doc["memory_limit_in_mb"] == 256
    assert doc["invoked_function_arn"] == (
        "arn:aws:lambda:local:000000000000:function:com.example.Test"
    )
    assert 0 < doc["remaining_ms"] <= 4000


# -- stopping -------------------------------------------------------------------------


def test_stop_ends_the_process() -> None:
    worker = Worker(spec("app.echo"), on_log=lambda line: None)
    worker.start(timeout=15)
    pid = worker.pid
    assert pid is not None and worker.alive()
    worker.stop()
    assert not worker.alive()
    assert gone(pid)
    worker.stop()  # idempotent


def test_stop_of_a_never_started_worker_is_harmless() -> None:
    worker = Worker(spec("app.echo"))
    worker.stop()
    assert worker.pid is None
    assert not worker.alive()


# -- the agent's end of the channel (_FrameReader) --------------------------------------


def test_the_reader_takes_a_frame_that_is_already_there_and_one_that_comes_later() -> None:
    ours, theirs = socket.socketpair()
    w = theirs.detach()
    try:
        reader = _FrameReader(ours)
        # Blocking: waiting is the read's own, with the kernel's receive timeout.
        assert ours.getblocking()
        os.write(w, encode_frame({"type": "result", "n": 1}, b"one"))
        assert reader.read(None) == ({"type": "result", "n": 1}, b"one")
        # Nothing there yet: it waits for the frame, which arrives in two pieces.
        frame = encode_frame({"type": "result", "n": 2}, b"two")

        def later() -> None:
            os.write(w, frame[:5])
            threading.Event().wait(0.05)  # a writer that pauses mid-frame
            os.write(w, frame[5:])

        writer = threading.Thread(target=later)
        writer.start()
        assert reader.read(None) == ({"type": "result", "n": 2}, b"two")
        writer.join()
    finally:
        ours.close()
        os.close(w)


def test_the_reader_keeps_its_deadline_when_nothing_comes() -> None:
    ours, theirs = socket.socketpair()
    w = theirs.detach()
    try:
        reader = _FrameReader(ours)
        with pytest.raises(TimeoutError):
            reader.read(time.monotonic() + 0.05)
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            reader.read(time.monotonic() + 1.0)
    finally:
        ours.close()
        if w >= 0:
            os.close(w)


def test_try_result_waits_for_the_answer_or_an_interrupt_and_takes_nothing_else(
    started: Any,
) -> None:
    """The component runner's wait: an answer not there in time, or an interrupt,
    gives None with nothing consumed; the answer, once there, is the frame."""
    gate = Gate()
    interrupt_r, interrupt_w = os.pipe()
    try:
        worker = started("app.gate", environment={"GATE_PORT": str(gate.port)})
        sent = worker.send_invoke(request_id="req-g", topic="t", payload=b'{"n": 1}',
                                  encoding="json", timeout=10.0)
        assert gate.arrived() == worker.pid
        assert worker.try_result(sent, 0.05, [interrupt_r]) is None  # running still
        os.write(interrupt_w, b"x")
        t0 = time.monotonic()
        assert worker.try_result(sent, 5.0, [interrupt_r]) is None  # interrupted
        assert time.monotonic() - t0 < 2.0
        os.read(interrupt_r, 1)
        gate.release_all()
        frame = worker.try_result(sent, 5.0, [interrupt_r])
        assert frame is not None and frame[0]["type"] == "result"
        outcome = worker.await_outcome(sent, first=frame)
        assert (outcome.ok, json.loads(outcome.body)) == (True, {"n": 1})
    finally:
        gate.close()
        os.close(interrupt_r)
        os.close(interrupt_w)
