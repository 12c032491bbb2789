"""The store's redelivery rule, its bound (backpressure / drop-oldest) and sealed batches."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.agent.store import (
    PRUNE_EVERY,
    Delivery,
    IntakeRecord,
    OutboxEntry,
    Store,
    fingerprint,
)

WAIT = 5.0


def record(
    store: Store, payload: bytes = b'{"t": 21.5}', *, delivery: Delivery | None = None,
    topic: str = "sensors/s1", properties: dict[str, str] | None = None,
) -> list[IntakeRecord]:
    got: list[list[IntakeRecord]] = []
    done = threading.Event()

    def callback(rows: list[IntakeRecord]) -> None:
        got.append(rows)
        done.set()

    store.record(["c"], topic, payload, properties or {}, callback, delivery=delivery)
    assert done.wait(WAIT)
    return got[0]


def complete(store: Store, seq: int, entries: list[OutboxEntry]) -> None:
    done = threading.Event()
    store.complete(seq, entries, done.set)
    assert done.wait(WAIT)


def entry(n: int, sink: str = "s3", component: str = "c", size: int = 10) -> OutboxEntry:
    return OutboxEntry(sink, component, f"rid-{n}", "x" * size)


# -- redelivery -------------------------------------------------------------------------


def test_a_dup_copy_from_an_earlier_connection_is_recognised(store: Store) -> None:
    (first,) = record(store, delivery=Delivery(packet_id=7, connection="conn-1"))
    again = record(store, delivery=Delivery(dup=True, packet_id=7, connection="conn-2"))
    assert again == []
    assert store.duplicates == 1
    assert [r.seq for r in store.pending()] == [first.seq]


def test_two_identical_readings_are_two_messages(store: Store) -> None:
    record(store, delivery=Delivery(packet_id=7, connection="a"))
    record(store, delivery=Delivery(packet_id=8, connection="a"))  # not DUP
    assert len(store.pending()) == 2
    assert store.duplicates == 0


@pytest.mark.parametrize(
    "delivery, payload",
    [
        (Delivery(dup=False, packet_id=7, connection="b"), b'{"t": 21.5}'),  # not marked DUP
        (Delivery(dup=True, packet_id=8, connection="b"), b'{"t": 21.5}'),  # other packet id
        (Delivery(dup=True, packet_id=7, connection="a"), b'{"t": 21.5}'),  # same connection
        (Delivery(dup=True, packet_id=7, connection="b"), b'{"t": 21.6}'),  # other payload
        (Delivery(dup=True, packet_id=0, connection="b"), b'{"t": 21.5}'),  # no packet id
    ],
)
def test_anything_short_of_the_whole_rule_is_a_new_message(
    store: Store, delivery: Delivery, payload: bytes
) -> None:
    record(store, delivery=Delivery(packet_id=7, connection="a"))
    assert record(store, payload, delivery=delivery) != []
    assert store.duplicates == 0


def test_properties_and_topic_are_part_of_the_fingerprint(store: Store) -> None:
    record(store, delivery=Delivery(packet_id=7, connection="a"), properties={"k": "1"})
    dup = Delivery(dup=True, packet_id=7, connection="b")
    assert record(store, delivery=dup, properties={"k": "2"}) != []
    assert record(store, delivery=dup, topic="sensors/s2", properties={"k": "1"}) != []
    assert record(store, delivery=dup, properties={"k": "1"}) == []


def test_recognised_after_the_original_completed_and_after_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", fsync=False)
    store.start()
    (row,) = record(store, delivery=Delivery(packet_id=3, connection="a"))
    complete(store, row.seq, [])
    store.close()
    reopened = Store(tmp_path / "agent.db", fsync=False)
    reopened.start()
    try:
        assert record(reopened, delivery=Delivery(dup=True, packet_id=3, connection="b")) == []
        assert reopened.pending() == []
    finally:
        reopened.close()


def test_the_window_forgets_old_messages(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", fsync=False, dedupe_window=3)
    store.start()
    try:
        record(store, delivery=Delivery(packet_id=1, connection="a"))
        for pid in (2, 3, 4):
            first_seen = Delivery(packet_id=pid, connection="a")
            record(store, payload=str(pid).encode(), delivery=first_seen)
        late = Delivery(dup=True, packet_id=1, connection="b")
        assert record(store, delivery=late) != []  # outside the window: runs again
        assert record(store, payload=b"4", delivery=Delivery(True, 4, "b")) == []
    finally:
        store.close()


def test_rows_beyond_the_window_are_deleted_in_batches(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", fsync=False, dedupe_window=10)
    store.start()
    try:
        for pid in range(1, PRUNE_EVERY + 2):
            first = Delivery(packet_id=pid, connection="a")
            record(store, payload=str(pid).encode(), delivery=first)
        (left,) = store._reader.execute("SELECT COUNT(*) FROM seen").fetchone()
        assert 10 <= left <= 10 + PRUNE_EVERY and left < PRUNE_EVERY
    finally:
        store.close()


# -- the bound -------------------------------------------------------------------------------


def test_backpressure_reports_full_and_frees_as_rows_leave(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", fsync=False, max_bytes=1100)
    freed = threading.Event()
    store.on_space(freed.set)
    store.start()
    try:
        # Before any result, a pending record reserves RESULT_ESTIMATE_PRIOR (1 KiB).
        (row,) = record(store, payload=b"p" * 40)
        assert store.used_bytes() == 40 and store.reserved_bytes() == 1024
        assert not store.full()
        complete(store, row.seq, [entry(1, size=700)])
        assert store.used_bytes() == 700 and store.reserved_bytes() == 0
        assert not store.full()
        # Then the moving average of real results: 0.9 * 1024 + 0.1 * 700.
        (row2,) = record(store, payload=b"p" * 30)
        assert store.used_bytes() == 730 and store.reserved_bytes() == 991
        assert store.full()
        assert store.intake_stats()["full"] is True
        (out,) = store.outbox_batch("s3", 10)
        freed.clear()
        store.outbox_delete([out.id])
        assert freed.is_set()
        assert store.used_bytes() == 30 and not store.full()
        assert store.dropped() == {}
    finally:
        store.close()
    reopened = Store(tmp_path / "agent.db", fsync=False, max_bytes=1100)
    try:  # the estimate survives a restart
        assert reopened.reserved_bytes() == 991
    finally:
        store.close()


def test_drop_oldest_deletes_the_oldest_rows_and_counts_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", fsync=False, max_bytes=35, when_full="drop-oldest")
    store.start()
    try:
        for n in range(1, 6):
            complete(store, n, [entry(n, sink="s3" if n % 2 else "dynamodb")])
        # 5 rows of 10 bytes, room for 3: rows 1 (s3) and 2 (dynamodb) went.
        assert store.dropped() == {"s3": 1, "dynamodb": 1}
        assert not store.full()  # drop-oldest never holds intake back
        assert [r.result_id for r in store.outbox_batch("s3", 10)] == ["rid-3", "rid-5"]
        assert [r.result_id for r in store.outbox_batch("dynamodb", 10)] == ["rid-4"]
        assert store.used_bytes() == 30
    finally:
        store.close()
    reopened = Store(tmp_path / "agent.db", fsync=False, max_bytes=35, when_full="drop-oldest")
    try:
        assert reopened.dropped() == {"s3": 1, "dynamodb": 1}
        assert reopened.used_bytes() == 30
    finally:
        reopened.close()


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="when_full"):
        Store(tmp_path / "agent.db", when_full="drop-newest")


# -- sealed batches --------------------------------------------------------------------------


def test_a_sealed_batch_comes_back_unchanged_until_deleted(store: Store) -> None:
    for n in range(1, 4):
        complete(store, n, [entry(n)])
    first = store.seal("s3", "c", limit=10)
    assert [r.result_id for r in first] == ["rid-1", "rid-2", "rid-3"]
    for n in range(4, 6):
        complete(store, n, [entry(n)])
    # The writer died before deleting: the same three come back, not five.
    assert store.seal("s3", "c", limit=10) == first
    store.outbox_delete([r.id for r in first])
    assert [r.result_id for r in store.seal("s3", "c", limit=10)] == ["rid-4", "rid-5"]


def test_seal_respects_limit_bytes_and_lanes(store: Store) -> None:
    for n in range(1, 6):
        complete(store, n, [entry(n, component="a" if n != 3 else "b", size=10)])
    assert [r.result_id for r in store.seal("s3", "a", limit=2)] == ["rid-1", "rid-2"]
    assert [r.result_id for r in store.seal("s3", "b", limit=10)] == ["rid-3"]
    assert store.lanes("s3") == ["a", "b"]
    store.outbox_delete([r.id for r in store.seal("s3", "a", limit=2)])
    # At least one row even when it alone is over the byte budget.
    assert [r.result_id for r in store.seal("s3", "a", limit=10, max_bytes=5)] == ["rid-4"]


def _reference_fingerprint(topic: str, payload: bytes, properties: dict[str, str]) -> bytes:
    head = json.dumps([topic, sorted(properties.items())], separators=(",", ":"))
    return hashlib.sha256(head.encode() + b"\x00" + payload).digest()[:16]


@given(
    topic=st.text(max_size=40),
    payload=st.binary(max_size=64),
    properties=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_the_fingerprint_is_the_documented_hash_for_every_topic(
    topic: str, payload: bytes, properties: dict[str, str]
) -> None:
    """Rows in ``seen`` written by an earlier agent must still match: the shortcut for a
    plain topic without properties gives the same bytes as the JSON form."""
    assert fingerprint(topic, payload, properties) == _reference_fingerprint(
        topic, payload, properties
    )
    plain = "sensors/" + "".join(c for c in topic if " " <= c <= "~" and c not in '"\\')
    assert fingerprint(plain, payload, {}) == _reference_fingerprint(plain, payload, {})
