"""Intake on top of the store: acknowledge after the commit, only on the connection the
message came on; recognise the broker's resend; park while the store is full."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from edge.agent.intake import Intake
from edge.agent.store import IntakeRecord, OutboxEntry, Store
from edge.mqtt.bus import ConnectionHandler, Message, MessageHandler

WAIT = 5.0


class AckBus:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.event = threading.Event()

    def ack(self, message: Message) -> None:
        self.acked.append(message.mid)
        self.event.set()

    def connect(self, timeout: float = 10.0) -> None: ...
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None,
                timeout: float | None = None, expiry: int | None = None) -> None: ...
    def on_connection_change(self, handler: ConnectionHandler) -> None: ...
    def close(self) -> None: ...


class Dispatched:
    def __init__(self) -> None:
        self.records: list[IntakeRecord] = []

    def __call__(self, record: IntakeRecord) -> None:
        self.records.append(record)


def msg(mid: int, payload: bytes = b"{}", dup: bool = False) -> Message:
    return Message("in/t", payload, qos=1, dup=dup, mid=mid)


def flush(store: Store) -> None:
    """Wait until everything queued before this call is committed (and called back)."""
    done = threading.Event()
    store.complete(-1, [], done.set)
    assert done.wait(WAIT)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Store]:
    """Full once one record is pending: 12 payload bytes + 1 KiB reserved for its results."""
    s = Store(tmp_path / "small.db", fsync=False, max_bytes=1030)
    s.start()
    yield s
    s.close()


def test_acknowledged_after_the_commit_and_dispatched(store: Store) -> None:
    bus, dispatched = AckBus(), Dispatched()
    intake = Intake(store, bus, dispatched)
    intake.on_connection(True)
    intake.accept(msg(1), ["c"])
    flush(store)
    assert bus.acked == [1]
    assert [r.component for r in dispatched.records] == ["c"]


def test_a_lost_connection_drops_the_ack_and_the_resend_is_recognised(store: Store) -> None:
    bus, dispatched = AckBus(), Dispatched()
    intake = Intake(store, bus, dispatched)
    intake.on_connection(True)
    release = threading.Event()
    store.complete(-1, [], release.wait)  # hold the writer: the commit comes after the drop
    intake.accept(msg(7), ["c"])
    intake.on_connection(False)
    intake.on_connection(True)
    release.set()
    flush(store)
    assert bus.acked == [] and intake.stale_acks == 1
    assert len(dispatched.records) == 1  # recorded once, runs once
    intake.accept(msg(7, dup=True), ["c"])  # the broker's resend on the new connection
    flush(store)
    assert bus.acked == [7]
    assert len(dispatched.records) == 1
    assert store.duplicates == 1


def test_full_store_parks_messages_and_resumes_in_order(small: Store) -> None:
    store = small
    bus, dispatched = AckBus(), Dispatched()
    intake = Intake(store, bus, dispatched)
    intake.on_connection(True)
    store.on_space(intake.resume)
    intake.accept(msg(1, b"x" * 12), ["c"])  # over the 10-byte bound once committed
    flush(store)
    intake.accept(msg(2), ["c"])
    intake.accept(msg(3), ["c"])
    flush(store)
    assert bus.acked == [1] and intake.parked == 2
    # The first record finishes and its result leaves the outbox: space again.
    store.complete(dispatched.records[0].seq, [OutboxEntry("s3", "c", "r1", "{}")])
    flush(store)
    (row,) = store.outbox_batch("s3", 10)
    store.outbox_delete([row.id])
    flush(store)
    assert bus.acked == [1, 2, 3] and intake.parked == 0


def test_a_message_held_back_for_a_full_queue_is_a_throttle(small: Store) -> None:
    """Not one held back for a full store: that is the outbox's bound, not a queue's."""
    store = small
    bus, dispatched = AckBus(), Dispatched()
    throttled: list[list[str]] = []
    intake = Intake(
        store, bus, dispatched,
        # A queue of one, which the records dispatched so far stay in.
        room=lambda targets, admitted: len(dispatched.records) + admitted["c"] < 1,
        throttled=lambda targets, admitted: throttled.append(list(targets)),
    )
    intake.on_connection(True)
    intake.accept(msg(1), ["c"])
    flush(store)
    intake.accept(msg(2), ["c"])  # held back: the queue is full
    assert intake.parked == 1 and throttled == [["c"]]
    intake.on_connection(False)  # (the broker has it again)
    dispatched.records.clear()
    intake.on_connection(True)
    intake.accept(msg(3, b"x" * 12), ["c"])
    flush(store)
    dispatched.records.clear()  # room in the queue; the store is over its bound now
    intake.accept(msg(4), ["c"])
    assert intake.parked == 1 and throttled == [["c"]]


def test_parked_messages_are_left_to_the_broker_on_disconnect(small: Store) -> None:
    store = small
    bus, dispatched = AckBus(), Dispatched()
    intake = Intake(store, bus, dispatched)
    intake.on_connection(True)
    intake.accept(msg(1, b"x" * 12), ["c"])
    flush(store)
    intake.accept(msg(2), ["c"])
    assert intake.parked == 1
    intake.on_connection(False)
    assert intake.parked == 0 and bus.acked == [1]
