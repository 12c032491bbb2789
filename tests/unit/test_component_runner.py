"""One component on the device: its queue, its workers, its result records.

Each test writes a component folder into ``tmp_path`` (a ``component.yaml`` next to
a copy of ``fixtures/workers/app.py``) and runs real worker processes."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent.component import ComponentRunner, Finished
from edge.agent.store import IntakeRecord
from edge.model.component import ComponentManifest, load_component
from edge.sync.records import ResultRecord, request_id_for, result_id_for
from tests.harness.gate import Gate

FIXTURES = Path(__file__).parent / "fixtures" / "workers"
WAIT = 10.0
NAME = "com.example.Runner"
THING = "pi01-thing"


def component(
    tmp_path: Path,
    handler: str = "app.dispatch",
    *,
    limits: str = "{timeout: 5s}",
    triggers: str = "[{topic: sensors/+/in, encoding: json}]",
    folder: str = "comp",
) -> ComponentManifest:
    path = tmp_path / folder
    path.mkdir()
    shutil.copy(FIXTURES / "app.py", path / "app.py")
    shutil.copy(FIXTURES / "missing_dependency.py", path / "missing_dependency.py")
    (path / "component.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: {NAME}
            version: 2.0.1
            runtime: python3.11
            handler: {handler}
            triggers: {triggers}
            limits: {limits}
            environment:
              FROM_MANIFEST: manifest-value
            """
        )
    )
    return load_component(path)


class Results:
    """The ``on_finished`` callback: collects ``Finished`` and lets a test wait for N."""

    def __init__(self) -> None:
        self.items: list[Finished] = []
        self.runners: list[ComponentRunner] = []
        self._cond = threading.Condition()

    def __call__(self, runner: ComponentRunner, done: Finished) -> None:
        with self._cond:
            self.items.append(done)
            self.runners.append(runner)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = WAIT) -> list[Finished]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.items) >= count, timeout=timeout)
            assert ok, f"{len(self.items)} of {count} invocations finished"
            return sorted(self.items, key=lambda f: f.intake.seq)

    def record(self, seq: int) -> ResultRecord:
        (done,) = [f for f in self.wait(1) if f.intake.seq == seq]
        assert done.record is not None
        return done.record


class Clock:
    def __init__(self, now: float = 1700000100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runners() -> Iterator[list[ComponentRunner]]:
    made: list[ComponentRunner] = []
    yield made
    for runner in made:
        runner.stop(timeout=WAIT)


def make_runner(
    manifest: ComponentManifest,
    results: Results,
    runners: list[ComponentRunner],
    *,
    epoch: str = "epoch-1",
    environment: dict[str, str] | None = None,
    start: bool = True,
) -> ComponentRunner:
    runner = ComponentRunner(
        manifest,
        device="pi01",
        thing=THING,
        epoch=epoch,
        on_finished=results,
        environment=environment,
        clock=Clock(),
    )
    runners.append(runner)
    if start:
        runner.start()
    return runner


def intake(
    seq: int, payload: Any = None, *, raw: bytes | None = None, topic: str = "sensors/s1/in"
) -> IntakeRecord:
    body = raw if raw is not None else json.dumps(payload).encode()
    return IntakeRecord(seq, NAME, topic, body, {}, received_at=1700000000.0 + seq)


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


# -- results ---------------------------------------------------------------------------


def test_json_result_record(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    assert runner.state == "RUNNING"
    assert runner.submit(intake(7, {"do": "echo", "x": 1}))
    (done,) = results.wait(1)
    record = done.record
    assert record is not None
    assert done.outcome.ok
    assert results.runners == [runner]
    assert record.kind == "result"
    assert record.content_type == "application/json"
    assert json.loads(record.body) == {"do": "echo", "x": 1}
    assert record.result_id == result_id_for(THING, NAME, 7, "epoch-1")
    assert record.request_id == request_id_for(THING, NAME, 7, "epoch-1")
    assert (record.seq, record.device, record.thing) == (7, "pi01", THING)
    assert (record.component, record.component_version) == (NAME, "2.0.1")
    assert record.topic == "sensors/s1/in"
    assert record.received_at == 1700000007.0
    assert record.finished_at == 1700000100.0


def test_ids_are_deterministic_per_seq_and_epoch(
    tmp_path: Path, runners: list[ComponentRunner]
) -> None:
    manifest = component(tmp_path)
    records = []
    for epoch in ("epoch-1", "epoch-1", "epoch-2"):
        results = Results()
        runner = make_runner(manifest, results, runners, epoch=epoch)
        runner.submit(intake(42, {"do": "describe"}))
        records.append(results.record(42))
    first, again, other_epoch = records
    assert first.result_id == again.result_id
    assert first.request_id == again.request_id
    assert other_epoch.result_id != first.result_id
    assert other_epoch.request_id != first.request_id
    # The handler saw the same deterministic request id.
    assert json.loads(first.body)["aws_request_id"] == first.request_id


def test_context_and_environment_seen_by_the_handler(
    tmp_path: Path, runners: list[ComponentRunner]
) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners, environment={"EXTRA": "from-agent"})
    runner.submit(intake(1, {"do": "describe"}, topic="sensors/s9/in"))
    for seq, name in enumerate(["EDGE_DEVICE", "AWS_IOT_THING_NAME", "EXTRA", "FROM_MANIFEST"]):
        runner.submit(intake(seq + 2, {"do": "env", "name": name}))
    done = results.wait(5)
    described = json.loads(done[0].record.body)  # type: ignore[union-attr]
    assert described["function_name"] == NAME
    assert described["function_version"] == "2.0.1"
    assert described["subject"] == "sensors/s9/in"
    assert described["invoked_function_arn"].endswith(f":function:{NAME}")
    assert [json.loads(f.record.body) for f in done[1:]] == [  # type: ignore[union-attr]
        "pi01",
        THING,
        "from-agent",
        "manifest-value",
    ]


def test_bytes_result_is_binary(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    runner.submit(intake(1, {"do": "to_bytes"}))
    record = results.record(1)
    assert record.kind == "result"
    assert record.content_type == "application/octet-stream"
    assert record.body == b"\x00\x01binary\xff"


def test_none_result_has_no_record(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    runner.submit(intake(1, {"do": "returns_none"}))
    (done,) = results.wait(1)
    assert done.record is None
    assert done.outcome.ok
    assert runner.counters.errors == 0


def test_handler_error_is_an_error_record(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    runner.submit(intake(1, {"do": "boom", "sensor": "s3"}))
    record = results.record(1)
    assert record.kind == "error"
    assert record.content_type == "application/json"
    error = json.loads(record.body)
    assert error["errorType"] == "KeyError"
    assert error["stackTrace"]
    assert record.result_id == result_id_for(THING, NAME, 1, "epoch-1")


def test_non_json_payload_on_a_json_trigger_is_the_runtimes_error(
    tmp_path: Path, runners: list[ComponentRunner]
) -> None:
    # ``boom`` raises for any event it is given: the handler must never see this one.
    results = Results()
    runner = make_runner(component(tmp_path, "app.boom"), results, runners)
    runner.submit(intake(3, raw=b"\x89PNG not json"))
    record = results.record(3)
    assert record.kind == "error"
    error = json.loads(record.body)
    assert error["errorType"] == "Runtime.InvalidEvent"
    assert "sensors/s1/in" in error["errorMessage"]
    assert "13 bytes" in error["errorMessage"]
    assert "PNG" not in error["errorMessage"]  # payloads stay out of messages
    assert runner.counters.invocations == 1
    assert runner.counters.errors == 1
    assert runner.counters.worker_restarts == 0
    assert runner.state == "RUNNING"  # the worker is fine and stays


def test_import_error_becomes_an_error_record(
    tmp_path: Path, runners: list[ComponentRunner]
) -> None:
    results = Results()
    runner = make_runner(component(tmp_path, "missing_dependency.handler"), results, runners)
    runner.submit(intake(1, {}))
    record = results.record(1)
    assert json.loads(record.body)["errorType"] == "Runtime.ImportModuleError"
    assert runner.counters.worker_restarts == 1


def test_binary_trigger_passes_bytes(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    manifest = component(
        tmp_path,
        "app.binary_info",
        triggers="[{topic: 'cameras/+/frames', encoding: binary}]",
    )
    runner = make_runner(manifest, results, runners)
    runner.submit(intake(1, raw=b"\x89PNG\r\n\x1a\n\x00", topic="cameras/c1/frames"))
    record = results.record(1)
    assert json.loads(record.body) == {"type": "bytes", "length": 9, "head": "89504e47"}


# -- counters, timeouts, restarts -------------------------------------------------------


def test_counters(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path, limits="{timeout: 400ms}"), results, runners)
    for seq, payload in enumerate(
        [{"do": "echo"}, {"do": "boom", "sensor": "x"}, {"do": "hang"}, {"do": "echo"}], start=1
    ):
        assert runner.submit(intake(seq, payload))
    done = results.wait(4)
    kinds = [f.record.kind for f in done]  # type: ignore[union-attr]
    assert kinds == ["result", "error", "error", "result"]
    timeout_error = json.loads(done[2].record.body)  # type: ignore[union-attr]
    assert timeout_error["errorType"] == "Runtime.Timeout"
    snap = runner.snapshot()
    assert snap["invocations"] == 4
    assert snap["errors"] == 2
    assert snap["timeouts"] == 1
    assert snap["worker_restarts"] == 1
    assert snap["duration_ms_p99"] >= 300
    assert snap["version"] == "2.0.1"
    assert snap["state"] == "RUNNING"


def test_a_crashed_worker_is_replaced(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    runner.submit(intake(1, {"do": "exit3"}))
    runner.submit(intake(2, {"do": "echo", "after": "crash"}))
    first, second = results.wait(2)
    assert json.loads(first.record.body)["errorMessage"] == "worker exited with status 3"  # type: ignore[union-attr]
    assert json.loads(second.record.body) == {"do": "echo", "after": "crash"}  # type: ignore[union-attr]
    assert runner.counters.worker_restarts == 1


def test_the_next_queued_record_runs_while_the_last_result_is_concluded(
    tmp_path: Path, runners: list[ComponentRunner], gate: Gate
) -> None:
    # One worker, three queued records: seq 2 (a handler that reports its start) is
    # sent to the worker before seq 1's result is handed on, so it starts while
    # on_finished for seq 1 still runs; the results are still handed on in order.
    started_during_seq1: list[int] = []

    class Concluding(Results):
        def __call__(self, runner: ComponentRunner, done: Finished) -> None:
            if done.intake.seq == 1:
                started_during_seq1.append(gate.arrived(timeout=5.0))
                gate.release_all()
            super().__call__(runner, done)

    results = Concluding()
    manifest = component(tmp_path, limits="{timeout: 20s, max_instances: 1}")
    runner = make_runner(manifest, results, runners, start=False,
                         environment={"GATE_PORT": str(gate.port)})
    for seq, do in enumerate(["echo", "gate", "echo"], start=1):
        assert runner.submit(intake(seq, {"do": do}))
    runner.start()
    results.wait(3)
    assert [f.intake.seq for f in results.items] == [1, 2, 3]
    assert len(started_during_seq1) == 1
    assert all(f.record is not None and f.record.kind == "result" for f in results.items)


def test_a_worker_that_dies_on_the_record_sent_ahead_is_replaced(
    tmp_path: Path, runners: list[ComponentRunner]
) -> None:
    results = Results()
    manifest = component(tmp_path, limits="{timeout: 5s, max_instances: 1}")
    runner = make_runner(manifest, results, runners, start=False)
    for seq, do in enumerate(["echo", "exit3", "echo"], start=1):
        assert runner.submit(intake(seq, {"do": do}))
    runner.start()
    done = results.wait(3)
    assert [f.record.kind for f in done] == ["result", "error", "result"]  # type: ignore[union-attr]
    assert json.loads(done[1].record.body)["errorMessage"] == "worker exited with status 3"  # type: ignore[union-attr]
    assert runner.counters.worker_restarts == 1


# -- queue and scaling ------------------------------------------------------------------


def test_full_queue_refuses_intake_but_never_strands_a_recorded_record(
    tmp_path: Path, runners: list[ComponentRunner], gate: Gate
) -> None:
    results = Results()
    manifest = component(
        tmp_path, "app.gate", limits="{timeout: 20s, max_instances: 1, max_queue: 2}"
    )
    runner = make_runner(manifest, results, runners, environment={"GATE_PORT": str(gate.port)})
    assert runner.submit(intake(1, {}))
    gate.arrived()  # the only worker is busy with seq 1; the queue is empty
    assert runner.accepting()
    # Records admitted at intake but not yet queued (in one group commit) count too.
    assert runner.accepting(admitted=1)
    assert not runner.accepting(admitted=2)
    assert runner.submit(intake(2, {}))
    assert runner.submit(intake(3, {}))
    assert runner.queue_depth == 2
    # Full under the reject policy: new messages are refused before they are recorded...
    assert not runner.accepting()
    # ...but a record already on disk (e.g. replayed at start-up) is still queued and run.
    assert runner.submit(intake(4, {}))
    assert runner.queue_depth == 3
    gate.release_all()
    for _ in range(3):
        gate.arrived()
        gate.release_all()
    assert [f.intake.seq for f in results.wait(4)] == [1, 2, 3, 4]
    assert runner.counters.invocations == 4
    assert runner.accepting()


def test_scale_up_serves_two_invocations_concurrently(
    tmp_path: Path, runners: list[ComponentRunner], gate: Gate
) -> None:
    results = Results()
    manifest = component(tmp_path, "app.gate", limits="{timeout: 20s, max_instances: 2}")
    runner = make_runner(manifest, results, runners, environment={"GATE_PORT": str(gate.port)})
    runner.submit(intake(1, {}))
    first = gate.arrived()
    runner.submit(intake(2, {}))
    second = gate.arrived()  # while the first is still held: two at once
    assert first != second
    assert runner.snapshot()["workers"] == 2
    runner.submit(intake(3, {}))  # at max_instances: waits for a free worker
    assert runner.snapshot()["workers"] == 2
    gate.release_all()
    third = gate.arrived()
    assert third in {first, second}
    gate.release_all()
    assert len(results.wait(3)) == 3


def test_a_burst_of_records_scales_up(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    manifest = component(tmp_path, "app.echo", limits="{timeout: 5s, max_instances: 2}")
    runner = make_runner(manifest, results, runners)
    # Reproducer: wait until the pinned worker thread is idle, then submit two records
    # back to back (holding the runner's lock so it cannot wake in between).
    deadline = threading.Event()
    timer = threading.Timer(WAIT, deadline.set)
    timer.start()
    try:
        while runner._idle != 1:  # the pinned thread reaching its wait
            assert not deadline.is_set(), "pinned worker thread never became idle"
        with runner._cond:
            runner.submit(intake(1, {"x": 1}))
            runner.submit(intake(2, {"x": 2}))
            workers = runner.snapshot()["workers"]
    finally:
        timer.cancel()
    results.wait(2)
    assert workers == 2


# -- stopping ------------------------------------------------------------------------------


def test_stop_refuses_new_work(tmp_path: Path, runners: list[ComponentRunner]) -> None:
    results = Results()
    runner = make_runner(component(tmp_path), results, runners)
    runner.submit(intake(1, {"do": "echo"}))
    results.wait(1)
    runner.stop(timeout=WAIT)
    assert runner.state == "FINISHED"
    assert not runner.submit(intake(2, {"do": "echo"}))
    assert runner.snapshot()["workers"] == 0


# -- the receiving thread runs a record itself (run_now, start_now / finish_now) --------


class ThreadResults(Results):
    """Also notes the thread each invocation finished on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def __call__(self, runner: ComponentRunner, done: Finished) -> None:
        self.threads.append(threading.current_thread().name)
        super().__call__(runner, done)


def idle_runner(
    tmp_path: Path,
    results: Results,
    runners: list[ComponentRunner],
    environment: dict[str, str] | None = None,
) -> ComponentRunner:
    """A started runner whose pinned worker is up and waiting (it starts in the
    background: until then ``run_now`` declines)."""
    runner = make_runner(component(tmp_path), results, runners, environment=environment)
    deadline = time.monotonic() + WAIT
    while not runner.idle():  # nothing to await: the worker reports ready to its thread
        assert time.monotonic() < deadline, "the pinned worker never became idle"
        threading.Event().wait(0.01)
    return runner


@pytest.fixture
def quiet() -> Iterator[tuple[int, int]]:
    """A pipe: its read end is an interrupt fd that stays quiet until written to."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_run_now_runs_a_record_on_the_callers_thread(
    tmp_path: Path, runners: list[ComponentRunner], quiet: tuple[int, int]
) -> None:
    results = ThreadResults()
    runner = idle_runner(tmp_path, results, runners)
    assert runner.run_now(intake(1, {"do": "echo", "x": 1}), (quiet[0],))
    assert len(results.items) == 1  # finished before run_now returned
    assert results.threads == [threading.current_thread().name]
    record = results.record(1)
    assert json.loads(record.body) == {"do": "echo", "x": 1}
    assert record.request_id == request_id_for(THING, NAME, 1, "epoch-1")
    # The worker is idle again and its own thread serves the queue as before.
    assert runner.submit(intake(2, {"do": "echo"}))
    results.wait(2)
    assert results.threads[1] == f"{NAME}-w0"
    assert runner.snapshot()["workers"] == 1 and runner.counters.invocations == 2


def test_an_interrupt_leaves_the_invocation_to_the_workers_thread(
    tmp_path: Path, runners: list[ComponentRunner], quiet: tuple[int, int], gate: Gate
) -> None:
    results = ThreadResults()
    runner = idle_runner(tmp_path, results, runners, {"GATE_PORT": str(gate.port)})
    os.write(quiet[1], b"x")  # the caller has other work at once
    # The handler answers only once let through: no answer is there yet when the
    # caller looks, so it goes back to its other work instead of waiting.
    assert runner.run_now(intake(1, {"do": "gate", "x": 2}), (quiet[0],))
    gate.arrived()
    gate.release_all()
    (done,) = results.wait(1)
    assert results.threads == [f"{NAME}-w0"]
    assert done.record is not None and json.loads(done.record.body) == {"do": "gate", "x": 2}


class HeldResults(Results):
    """An ``on_finished`` that holds the finishing thread until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, runner: ComponentRunner, done: Finished) -> None:
        self.entered.set()
        assert self.release.wait(WAIT)
        super().__call__(runner, done)


def test_stop_waits_for_a_lone_invocation_still_being_concluded(
    tmp_path: Path, runners: list[ComponentRunner], quiet: tuple[int, int]
) -> None:
    """The receiving thread gives the worker back before it concludes the record it
    ran (publish, complete). A ``stop`` in between must wait for that conclusion:
    a replacement reads what is still pending right after it, and would run the
    record a second time."""
    results = HeldResults()
    runner = idle_runner(tmp_path, results, runners)
    receiving = threading.Thread(
        target=runner.run_now, args=(intake(1, {"do": "echo", "x": 1}), (quiet[0],))
    )
    receiving.start()
    assert results.entered.wait(WAIT)  # given back, now concluding
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (runner.stop(WAIT), stopped.set()))
    stopper.start()
    assert not stopped.wait(0.3)  # still concluding: stop has not returned
    results.release.set()
    assert stopped.wait(WAIT)
    receiving.join(WAIT)
    stopper.join(WAIT)
    assert [f.intake.seq for f in results.items] == [1]


def test_run_now_declines_while_no_worker_is_idle(
    tmp_path: Path, runners: list[ComponentRunner], gate: Gate, quiet: tuple[int, int]
) -> None:
    results = Results()
    manifest = component(tmp_path, "app.gate", limits="{timeout: 20s, max_instances: 1}")
    runner = make_runner(manifest, results, runners, environment={"GATE_PORT": str(gate.port)})
    runner.submit(intake(1, {}))
    gate.arrived()
    assert not runner.run_now(intake(2, {}), (quiet[0],))  # nothing done: submit it
    assert runner.submit(intake(2, {}))
    gate.release_all()
    gate.arrived()
    gate.release_all()
    assert [f.intake.seq for f in results.wait(2)] == [1, 2]


@pytest.mark.parametrize("interrupted", [False, True], ids=["caller", "worker-thread"])
def test_the_outcome_of_a_record_whose_commit_failed_is_dropped(
    tmp_path: Path, runners: list[ComponentRunner], quiet: tuple[int, int], interrupted: bool
) -> None:
    """``start_now`` before the commit, the commit fails: whichever thread reads the
    outcome drops it, and the worker goes on with the next record."""
    results = Results()
    runner = idle_runner(tmp_path, results, runners)
    started = runner.start_now(intake(1, {"do": "echo"}))
    assert started is not None
    if interrupted:
        os.write(quiet[1], b"x")
    runner.finish_now(started, (quiet[0],), recorded=False)
    assert runner.submit(intake(2, {"do": "echo"}))
    assert [f.intake.seq for f in results.wait(1)] == [2]
    assert [f.intake.seq for f in results.items] == [2]
