"""The sync loop: outbox rows reach their sink in order, and leave only once accepted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from edge.agent.store import OutboxEntry, Store
from edge.agent.syncer import Syncer
from edge.errors import CloudError
from edge.sync.records import ResultRecord
from edge.sync.retry import Backoff

WAIT = 5.0


class FakeSink:
    """Records what it is given; raises ``CloudError`` for its first ``failures`` writes."""

    def __init__(self, name: str = "fake", *, failures: int = 0, error: Exception | None = None):
        self.name = name
        self.failures = failures
        self.error = error or CloudError("endpoint unreachable", operation="PutObject")
        self.attempts = 0
        self.records: list[ResultRecord] = []
        self._lock = threading.Lock()
        self._want = 0
        self.got_all = threading.Event()

    def expect(self, count: int) -> None:
        self._want = count

    def write(self, records: Sequence[ResultRecord]) -> None:
        with self._lock:
            self.attempts += 1
            if self.failures:
                self.failures -= 1
                raise self.error
            self.records.extend(records)
            if self._want and len(self.records) >= self._want:
                self.got_all.set()

    @property
    def ids(self) -> list[str]:
        return [r.result_id for r in self.records]


class ForeverBroken(FakeSink):
    def write(self, records: Sequence[ResultRecord]) -> None:
        self.attempts += 1
        raise self.error


def result(n: int, component: str = "comp") -> ResultRecord:
    return ResultRecord(
        result_id=f"{component}-{n:04d}",
        seq=n,
        device="pi01",
        thing="pi01-thing",
        component=component,
        component_version="1.0.0",
        topic="sensors/s1/hello",
        request_id=f"req-{n}",
        received_at=1700000000.0 + n,
        finished_at=1700000000.5 + n,
        kind="result",
        content_type="application/json",
        body=b'{"n":%d}' % n,
    )


def queue(store: Store, sinks: Sequence[str], records: Sequence[ResultRecord]) -> None:
    """Put results in the outbox (as the agent does when an invocation finishes)."""
    done = threading.Event()
    for i, rec in enumerate(records):
        entries = [OutboxEntry(s, rec.component, rec.result_id, rec.to_json()) for s in sinks]
        store.complete(rec.seq, entries, done.set if i == len(records) - 1 else None)
    assert done.wait(WAIT)


def fast_backoff(syncer: Syncer, name: str) -> None:
    syncer.health[name].backoff = Backoff(base=0.01, cap=0.02)


# -- drain_once: one batch, no threads ---------------------------------------------------


def test_rows_reach_the_sink_in_order_and_leave_the_outbox(store: Store) -> None:
    sink = FakeSink()
    syncer = Syncer(store, {"local": {"comp": sink}})
    records = [result(n) for n in range(1, 8)]
    queue(store, ["local"], records)
    assert syncer.drain_once("local") is True
    assert sink.records == records
    assert store.outbox_batch("local", 100) == []
    assert syncer.drain_once("local") is False
    assert sink.attempts == 1


def test_batches_are_limited_and_resume_where_they_stopped(store: Store) -> None:
    sink = FakeSink()
    syncer = Syncer(store, {"local": {"comp": sink}}, batch=3)
    queue(store, ["local"], [result(n) for n in range(1, 8)])
    assert syncer.drain_once("local")
    assert sink.ids == ["comp-0001", "comp-0002", "comp-0003"]
    while syncer.drain_once("local"):
        pass
    assert sink.ids == [f"comp-{n:04d}" for n in range(1, 8)]
    assert sink.attempts == 3


def test_a_failing_sink_keeps_the_rows_and_reports_the_error(store: Store) -> None:
    sink = FakeSink(failures=2)
    syncer = Syncer(store, {"local": {"comp": sink}})
    queue(store, ["local"], [result(1), result(2)])

    before = time.monotonic()
    assert syncer.drain_once("local") is False
    health = syncer.health["local"]
    assert health.failures == 1
    assert health.last_error == "endpoint unreachable"
    assert health.next_attempt >= before
    assert len(store.outbox_batch("local", 10)) == 2
    snap = syncer.snapshot()["local"]
    assert snap["last_error"] == "endpoint unreachable"  # type: ignore[index]
    assert snap["records"] == 2  # type: ignore[index]
    assert snap["written"] == 0  # type: ignore[index]

    assert syncer.drain_once("local") is False
    assert health.failures == 2
    assert syncer.drain_once("local") is True
    assert sink.ids == ["comp-0001", "comp-0002"]
    assert health.failures == 0
    assert health.last_error is None
    assert health.last_success is not None
    snap = syncer.snapshot()["local"]
    assert snap["records"] == 0  # type: ignore[index]
    assert snap["written"] == 2  # type: ignore[index]
    assert snap["last_error"] is None  # type: ignore[index]


def test_snapshot_reports_backlog_per_sink(store: Store) -> None:
    syncer = Syncer(store, {"local": {"comp": FakeSink()}, "s3": {"comp": FakeSink()}})
    records = [result(1), result(2), result(3)]
    queue(store, ["s3"], records)
    snap = syncer.snapshot()
    assert snap["local"] == {
        "records": 0,
        "bytes": 0,
        "oldest_age_s": 0.0,
        "written": 0,
        "dropped": 0,
        "last_success": None,
        "last_error": None,
    }
    s3 = snap["s3"]
    assert s3["records"] == 3  # type: ignore[index]
    assert s3["bytes"] == sum(len(r.to_json()) for r in records)  # type: ignore[index]
    assert s3["oldest_age_s"] >= 0.0  # type: ignore[index]


def test_one_sink_failing_does_not_hold_up_another_sink(store: Store) -> None:
    broken = ForeverBroken()
    working = FakeSink()
    syncer = Syncer(store, {"s3": {"comp": broken}, "local": {"comp": working}})
    queue(store, ["s3", "local"], [result(1), result(2)])
    assert syncer.drain_once("s3") is False
    assert syncer.drain_once("local") is True
    assert working.ids == ["comp-0001", "comp-0002"]
    assert len(store.outbox_batch("s3", 10)) == 2
    assert syncer.snapshot()["s3"]["last_error"] == "endpoint unreachable"  # type: ignore[index]


def test_each_component_goes_to_its_own_sink(store: Store) -> None:
    a, b = FakeSink("a"), FakeSink("b")
    syncer = Syncer(store, {"local": {"a": a, "b": b}})
    queue(store, ["local"], [result(1, "a"), result(2, "b"), result(3, "a")])
    assert syncer.drain_once("local")
    assert a.ids == ["a-0001", "a-0003"]
    assert b.ids == ["b-0002"]


def test_a_failing_component_sink_keeps_its_rows_only(store: Store) -> None:
    good, bad = FakeSink("good"), ForeverBroken("bad")
    syncer = Syncer(store, {"local": {"good": good, "bad": bad}})
    queue(store, ["local"], [result(1, "good"), result(2, "bad")])
    syncer.drain_once("local")
    assert good.ids == ["good-0001"]
    assert [r.component for r in store.outbox_batch("local", 10)] == ["bad"]


def test_a_failing_component_sink_does_not_block_other_components(store: Store) -> None:
    good, bad = FakeSink("good"), ForeverBroken("bad")
    syncer = Syncer(store, {"local": {"good": good, "bad": bad}})
    queue(store, ["local"], [result(1, "bad"), result(2, "good")])
    syncer.drain_once("local")
    assert good.ids == ["good-0002"]


def test_rows_of_a_removed_component_stay_queued(store: Store) -> None:
    sink = FakeSink()
    syncer = Syncer(store, {"local": {"comp": sink}})
    queue(store, ["local"], [result(1, "gone"), result(2)])
    assert syncer.drain_once("local") is True
    assert sink.ids == ["comp-0002"]
    assert [r.component for r in store.outbox_batch("local", 10)] == ["gone"]


def test_rows_of_a_component_that_comes_back_sync_again(store: Store) -> None:
    syncer = Syncer(store, {"local": {}})
    queue(store, ["local"], [result(1, "back"), result(2, "back")])
    assert syncer.drain_once("local") is False
    sink = FakeSink()
    syncer.set_sinks("back", {"local": sink})
    assert syncer.drain_once("local") is True
    assert sink.ids == ["back-0001", "back-0002"]


def test_rows_of_a_removed_component_do_not_block_the_sink(store: Store) -> None:
    sink = FakeSink()
    syncer = Syncer(store, {"local": {"comp": sink}}, batch=2)
    queue(store, ["local"], [result(1, "gone"), result(2, "gone"), result(3)])
    for _ in range(3):
        syncer.drain_once("local")
    assert sink.ids == ["comp-0003"]


def test_an_unreadable_row_is_dropped_and_the_rest_delivered(store: Store) -> None:
    sink = FakeSink()
    syncer = Syncer(store, {"local": {"comp": sink}})
    done = threading.Event()
    store.complete(1, [OutboxEntry("local", "comp", "damaged", "{not json")])
    store.complete(2, [OutboxEntry("local", "comp", "comp-0002", result(2).to_json())], done.set)
    assert done.wait(WAIT)
    assert syncer.drain_once("local")
    assert sink.ids == ["comp-0002"]
    assert store.outbox_batch("local", 10) == []


# -- the threaded loop ---------------------------------------------------------------


@pytest.fixture
def running() -> Iterator[list[Syncer]]:
    started: list[Syncer] = []
    yield started
    for syncer in started:
        syncer.stop()


def test_the_loop_is_woken_by_new_outbox_rows(store: Store, running: list[Syncer]) -> None:
    sink = FakeSink()
    sink.expect(5)
    syncer = Syncer(store, {"local": {"comp": sink}})
    syncer.start()
    running.append(syncer)
    queue(store, ["local"], [result(n) for n in range(1, 6)])
    assert sink.got_all.wait(WAIT)
    assert sink.ids == [f"comp-{n:04d}" for n in range(1, 6)]


def test_the_loop_backs_off_and_retries_until_nothing_is_lost(
    store: Store, running: list[Syncer]
) -> None:
    sink = FakeSink(failures=3)
    sink.expect(4)
    syncer = Syncer(store, {"local": {"comp": sink}}, batch=2)
    fast_backoff(syncer, "local")
    queue(store, ["local"], [result(n) for n in range(1, 5)])
    syncer.start()
    running.append(syncer)
    assert sink.got_all.wait(WAIT)
    assert sink.ids == [f"comp-{n:04d}" for n in range(1, 5)]  # in order, no duplicates
    assert sink.attempts == 3 + 2
    syncer.stop()
    assert store.outbox_batch("local", 10) == []
    assert syncer.snapshot()["local"]["last_error"] is None  # type: ignore[index]


def test_a_disk_error_is_the_sinks_failure_with_its_reason(
    store: Store, running: list[Syncer]
) -> None:
    # The local sink's disk failing (EIO, ENOSPC) is an outage like a cloud one: the
    # status says what failed, the records wait, and it is retried.
    retried = threading.Event()

    class FailingDisk(ForeverBroken):
        def write(self, records: Sequence[ResultRecord]) -> None:
            if self.attempts == 1:  # the first failure is recorded before a retry
                retried.set()
            super().write(records)

    broken = FailingDisk(error=OSError(5, "Input/output error"))
    syncer = Syncer(store, {"local": {"comp": broken}})
    fast_backoff(syncer, "local")
    queue(store, ["local"], [result(1)])
    syncer.start()
    running.append(syncer)
    assert retried.wait(WAIT)
    snap = syncer.snapshot()["local"]
    assert snap["last_error"] == "[Errno 5] Input/output error"  # type: ignore[index]
    assert snap["records"] == 1  # type: ignore[index]


def test_the_loop_survives_a_sink_that_raises_a_non_cloud_error(
    store: Store, running: list[Syncer]
) -> None:
    broken = ForeverBroken(error=RuntimeError("bug in sink"))
    working = FakeSink()
    working.expect(3)
    syncer = Syncer(store, {"s3": {"comp": broken}, "local": {"comp": working}})
    fast_backoff(syncer, "s3")
    queue(store, ["s3", "local"], [result(1), result(2), result(3)])
    syncer.start()
    running.append(syncer)
    assert working.got_all.wait(WAIT)
    snap = syncer.snapshot()
    assert snap["s3"]["last_error"] == "internal error"  # type: ignore[index]
    assert snap["s3"]["records"] == 3  # type: ignore[index]
    assert snap["local"]["records"] == 0  # type: ignore[index]


def test_stop_ends_the_loop(store: Store) -> None:
    syncer = Syncer(store, {"local": {"comp": FakeSink()}})
    syncer.start()
    syncer.stop(timeout=WAIT)
    assert syncer._thread is not None and not syncer._thread.is_alive()
