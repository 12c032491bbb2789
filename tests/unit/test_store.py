"""The intake log and outbox: group commit, callbacks after commit, crash recovery."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from edge.agent.store import (
    Delivery,
    IntakeRecord,
    OutboxEntry,
    Store,
    _reserve_wal,
    _sync_file_range,
)

WAIT = 5.0


class Recorded:
    """A ``done`` callback for ``Store.record`` that a test can wait on."""

    def __init__(self, expected: int = 1) -> None:
        self.rows: list[IntakeRecord] = []
        self.calls = 0
        self._expected = expected
        self._lock = threading.Lock()
        self.event = threading.Event()

    def __call__(self, rows: list[IntakeRecord]) -> None:
        with self._lock:
            self.rows.extend(rows)
            self.calls += 1
            if self.calls >= self._expected:
                self.event.set()

    def wait(self) -> list[IntakeRecord]:
        assert self.event.wait(WAIT), f"only {self.calls} of {self._expected} callbacks ran"
        return self.rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "agent.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(db, fsync=False)
    s.start()
    yield s
    s.close()


def record(
    store: Store,
    components: list[str] | None = None,
    topic: str = "sensors/s1/hello",
    payload: bytes = b'{"n": 1}',
    properties: dict[str, str] | None = None,
    received_at: float | None = 1700000000.5,
) -> list[IntakeRecord]:
    done = Recorded()
    store.record(
        components or ["hello"], topic, payload, properties or {}, done, received_at=received_at
    )
    return done.wait()


def complete(store: Store, seq: int, entries: list[OutboxEntry]) -> None:
    done = threading.Event()
    store.complete(seq, entries, done.set)
    assert done.wait(WAIT)


def entry(sink: str, n: int, component: str = "hello") -> OutboxEntry:
    return OutboxEntry(sink, component, f"rid-{n}", f'{{"n":{n}}}')


# -- intake -------------------------------------------------------------------------


def test_record_calls_back_after_commit_with_the_rows(store: Store) -> None:
    rows = record(store, payload=b"\x00raw", properties={"content-type": "x"})
    assert len(rows) == 1
    row = rows[0]
    assert row.seq >= 1
    assert (row.component, row.topic, row.payload) == ("hello", "sensors/s1/hello", b"\x00raw")
    assert row.properties == {"content-type": "x"}
    assert row.received_at == 1700000000.5
    assert row.attempts == 0
    # The callback runs after the commit: the row is visible to other connections.
    assert store.pending() == rows
    assert store.commits >= 1


def test_sequence_numbers_increase(store: Store) -> None:
    seqs = [record(store)[0].seq for _ in range(5)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert store.next_seq() == seqs[-1] + 1


def test_one_message_for_two_components_gives_two_rows(store: Store) -> None:
    rows = record(store, components=["a", "b"])
    assert [r.component for r in rows] == ["a", "b"]
    assert rows[1].seq == rows[0].seq + 1
    assert [r.seq for r in store.pending()] == [rows[0].seq, rows[1].seq]


def test_received_at_defaults_to_now(store: Store) -> None:
    import time

    before = time.time()
    (row,) = record(store, received_at=None)
    assert before <= row.received_at <= time.time()


def test_group_commit_covers_many_records_per_transaction(db: Path) -> None:
    store = Store(db, fsync=False, inline_commits=False)
    store.start()
    try:
        # Hold the writer inside the first commit's callback until all 500 are queued:
        # whatever the scheduling, the other 499 then wait in the queue together.
        release = threading.Event()
        store.record(["c"], "t", b"{}", {}, lambda rows: release.wait(WAIT))
        done = Recorded(expected=499)
        for i in range(499):
            store.record(["c"], "t", str(i).encode(), {}, done)
        release.set()
        rows = done.wait()
        assert len(rows) == 499
        assert store.commits in (1, 2)  # 2 if the writer took the first one alone
        assert [r.payload for r in rows] == [str(i).encode() for i in range(499)]
    finally:
        store.close()


def test_group_commit_honours_max_batch(db: Path) -> None:
    store = Store(db, fsync=False, max_batch=100, inline_commits=False)
    store.start()
    try:
        release = threading.Event()
        store.record(["c"], "t", b"{}", {}, lambda rows: release.wait(WAIT))
        done = Recorded(expected=500)
        for _ in range(500):
            store.record(["c"], "t", b"{}", {}, done)
        release.set()
        done.wait()
        # 501 operations, at most 100 per transaction: 6 commits however they queue.
        assert store.commits == 6
    finally:
        store.close()


def test_500_records_queued_quickly_need_fewer_than_500_commits(store: Store) -> None:
    done = Recorded(expected=500)
    for i in range(500):
        store.record(["c"], "t", str(i).encode(), {}, done)
    rows = done.wait()
    assert sorted(r.seq for r in rows) == [r.seq for r in rows]
    assert store.commits < 500


def test_close_commits_everything_queued(db: Path) -> None:
    store = Store(db, fsync=False)
    store.start()
    done = Recorded(expected=20)
    for _ in range(20):
        store.record(["c"], "t", b"{}", {}, done)
    store.close()
    assert done.calls == 20
    reopened = Store(db, fsync=False)
    try:
        assert len(reopened.pending()) == 20
    finally:
        reopened.close()


def test_a_failing_callback_does_not_stop_the_writer(store: Store) -> None:
    def broken(rows: list[IntakeRecord]) -> None:
        raise RuntimeError("callback bug")

    store.record(["c"], "t", b"{}", {}, broken)
    rows = record(store)
    assert len(store.pending()) == 2
    assert rows[0].seq == store.pending()[1].seq


# -- complete and the outbox ---------------------------------------------------------


def test_complete_moves_the_row_to_the_outbox_in_one_commit(store: Store) -> None:
    (row,) = record(store)
    commits = store.commits
    seen: dict[str, object] = {}

    def done() -> None:  # runs after the commit, on the writer thread
        seen["pending"] = store.pending()
        seen["outbox"] = store.outbox_batch("s3", 10)

    finished = threading.Event()
    store.complete(row.seq, [entry("s3", 1), entry("dynamodb", 1)], done)
    store.complete(row.seq + 1000, [], finished.set)  # a marker after it
    assert finished.wait(WAIT)
    assert seen["pending"] == []
    assert [r.result_id for r in seen["outbox"]] == ["rid-1"]  # type: ignore[attr-defined]
    assert store.commits - commits in (1, 2)
    assert [r.sink for r in store.outbox_batch("dynamodb", 10)] == ["dynamodb"]


def test_complete_with_no_results_just_finishes_the_intake(store: Store) -> None:
    (row,) = record(store)
    complete(store, row.seq, [])
    assert store.pending() == []
    assert store.outbox_stats() == {}


def test_pending_after_a_crash_returns_unfinished_rows(db: Path) -> None:
    store = Store(db, fsync=False)
    store.start()
    first = record(store, payload=b"one", properties={"k": "v"})[0]
    second = record(store, payload=b"two")[0]
    third = record(store, payload=b"three")[0]
    complete(store, second.seq, [entry("s3", 2)])
    store.close()  # the process dies here: first and third never completed

    reopened = Store(db, fsync=False)
    reopened.start()
    try:
        pending = reopened.pending()
        assert pending == [first, third]
        assert pending[0].properties == {"k": "v"}
        assert isinstance(pending[0].payload, bytes)
        assert [r.result_id for r in reopened.outbox_batch("s3", 10)] == ["rid-2"]
        # Sequence numbers never go back, even for a row deleted before the crash.
        (fresh,) = record(reopened)
        assert fresh.seq == third.seq + 1
    finally:
        reopened.close()


def test_sequence_numbers_are_not_reused_after_everything_completed(db: Path) -> None:
    store = Store(db, fsync=False)
    store.start()
    (row,) = record(store)
    complete(store, row.seq, [])
    store.close()
    reopened = Store(db, fsync=False)
    reopened.start()
    try:
        assert reopened.next_seq() == row.seq + 1
        assert record(reopened)[0].seq == row.seq + 1
    finally:
        reopened.close()


def test_bump_attempts(store: Store) -> None:
    rows = record(store, components=["a", "b"])
    store.bump_attempts([rows[0].seq])
    store.bump_attempts([rows[0].seq])
    assert [r.attempts for r in store.pending()] == [2, 0]


def test_outbox_batch_is_per_sink_oldest_first_and_limited(store: Store) -> None:
    rows = record(store, components=["a", "b", "c"])
    complete(store, rows[0].seq, [entry("s3", 1), entry("local", 1)])
    complete(store, rows[1].seq, [entry("local", 2), entry("s3", 2)])
    complete(store, rows[2].seq, [entry("s3", 3)])
    s3 = store.outbox_batch("s3", 10)
    assert [r.result_id for r in s3] == ["rid-1", "rid-2", "rid-3"]
    assert [r.id for r in s3] == sorted(r.id for r in s3)
    assert {r.sink for r in s3} == {"s3"}
    assert [r.result_id for r in store.outbox_batch("s3", 2)] == ["rid-1", "rid-2"]
    assert [r.result_id for r in store.outbox_batch("local", 10)] == ["rid-1", "rid-2"]
    assert store.outbox_batch("dynamodb", 10) == []
    assert s3[0].record == '{"n":1}'


def test_outbox_delete_removes_only_the_given_rows(store: Store) -> None:
    (row,) = record(store)
    complete(store, row.seq, [entry("s3", 1), entry("s3", 2), entry("local", 3)])
    s3 = store.outbox_batch("s3", 10)
    store.outbox_delete([s3[0].id])
    assert [r.result_id for r in store.outbox_batch("s3", 10)] == ["rid-2"]
    assert [r.result_id for r in store.outbox_batch("local", 10)] == ["rid-3"]
    store.outbox_delete([])
    assert len(store.outbox_batch("s3", 10)) == 1


def test_outbox_stats(store: Store) -> None:
    (row,) = record(store)
    complete(store, row.seq, [entry("s3", 1), entry("s3", 22), entry("local", 3)])
    stats = store.outbox_stats()
    assert set(stats) == {"s3", "local"}
    assert stats["s3"]["records"] == 2
    assert stats["s3"]["bytes"] == len('{"n":1}') + len('{"n":22}')
    assert stats["local"] == {
        "records": 1,
        "bytes": len('{"n":3}'),
        "oldest_age_s": stats["local"]["oldest_age_s"],
    }
    assert 0.0 <= stats["s3"]["oldest_age_s"] < 60.0


def test_on_outbox_fires_only_for_commits_that_add_outbox_rows(store: Store) -> None:
    calls: list[int] = []
    fired = threading.Event()

    def listener() -> None:
        calls.append(store.commits)
        fired.set()

    store.on_outbox(listener)
    (row,) = record(store)
    other = record(store)[0]
    complete(store, other.seq, [])  # no outbox rows: no call
    assert calls == []
    store.complete(row.seq, [entry("s3", 1)])
    assert fired.wait(WAIT)
    assert len(calls) == 1
    assert store.outbox_batch("s3", 10) != []


def test_store_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "agent.db"
    store = Store(path, fsync=True)
    try:
        assert path.parent.is_dir()
        assert store.pending() == []
        assert store.next_seq() == 1
    finally:
        store.close()


# -- inline commits: a sparse message is committed on the caller's thread ----------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def threads_of(store: Store, n: int, *, gap: float, clock: ManualClock) -> list[str]:
    """Record ``n`` messages ``gap`` seconds apart; the thread each callback ran on."""
    names: list[str] = []
    done = threading.Event()

    def recorded(rows: list[IntakeRecord]) -> None:
        names.append(threading.current_thread().name)
        if len(names) == n:
            done.set()

    for i in range(n):
        clock.now += gap
        store.record(["c"], "t", str(i).encode(), {}, recorded)
    assert done.wait(WAIT)
    return names


def test_sparse_messages_are_committed_on_the_callers_thread(db: Path) -> None:
    clock = ManualClock()
    store = Store(db, fsync=False, clock=clock)
    store.start()
    try:
        store._commit_cost = 0.010  # as if a commit (its fsync) took 10 ms
        assert threads_of(store, 3, gap=1.0, clock=clock) == [threading.current_thread().name] * 3
        assert store.inline_commits == 3 and store.commits == 3
        assert [r.payload for r in store.pending()] == [b"0", b"1", b"2"]
    finally:
        store.close()


def test_messages_closer_than_a_commit_go_to_the_writer(db: Path) -> None:
    clock = ManualClock()
    store = Store(db, fsync=False, clock=clock)
    store.start()
    try:
        store._commit_cost = 0.010
        names = threads_of(store, 5, gap=0.001, clock=clock)
        assert names[1:] == ["store-writer"] * 4  # the first follows a long gap
        assert store.inline_commits == 1
    finally:
        store.close()


def test_no_inline_commit_overtakes_queued_work(db: Path) -> None:
    """A continuation completes the row it replaces, then records its own: the new row
    must never be durable while the old one is not yet completed."""
    clock = ManualClock()
    store = Store(db, fsync=False, clock=clock)
    store.start()
    try:
        (old,) = record(store)
        release = threading.Event()
        store.complete(old.seq, [], lambda: release.wait(WAIT))  # holds the writer
        clock.now += 60
        new = Recorded()
        store.record(["c"], "t", b"new", {}, new)
        assert store.inline_commits == 1  # only the first record
        release.set()
        (row,) = new.wait()
        assert [r.seq for r in store.pending()] == [row.seq]
    finally:
        store.close()


def test_a_completion_made_here_commits_on_the_callers_thread_when_the_writer_is_idle(
    store: Store,
) -> None:
    (row,) = record(store)
    ran_on: list[str] = []
    commits = store.commits
    store.complete(row.seq, [], lambda: ran_on.append(threading.current_thread().name),
                   here=True)
    # Committed before the call returned, by this thread, in a commit of its own.
    assert ran_on == [threading.current_thread().name]
    assert store.commits == commits + 1
    assert store.pending() == []


def test_a_completion_made_here_waits_its_turn_behind_queued_work(store: Store) -> None:
    """Whatever is queued for the writer commits first: a completion made here must
    not overtake it (a continuation's record queued before its parent completes)."""
    (first,) = record(store)
    (second,) = record(store)
    release = threading.Event()
    order: list[int] = []
    store.complete(first.seq, [], lambda: (release.wait(WAIT), order.append(first.seq)))
    done = threading.Event()
    store.complete(second.seq, [], lambda: (order.append(second.seq), done.set()), here=True)
    assert order == []  # queued, not committed here ahead of the writer's work
    release.set()
    assert done.wait(WAIT)
    assert order == [first.seq, second.seq]
    assert store.pending() == []


def test_a_group_commits_callbacks_run_inside_the_callback_scope(db: Path) -> None:
    """The agent sets the bus's ``acks_held`` as the scope, so the acknowledgements of
    a group commit go out in one write; a commit with one callback needs none."""
    store = Store(db, fsync=False, inline_commits=False)
    inside = threading.local()
    scopes: list[int] = []
    seen: list[bool] = []

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        inside.on = True
        scopes.append(len(seen))
        try:
            yield
        finally:
            inside.on = False

    store.callback_scope = scope
    group, alone = Recorded(expected=3), Recorded()

    def noting(done: Recorded) -> Callable[[list[IntakeRecord]], None]:
        def recorded(rows: list[IntakeRecord]) -> None:
            seen.append(getattr(inside, "on", False))
            done(rows)
        return recorded

    for n in range(3):  # queued before the writer starts: one group commit
        store.record(["c"], "t", b"%d" % n, {}, noting(group))
    store.start()
    try:
        group.wait()
        store.record(["c"], "t", b"alone", {}, noting(alone))
        alone.wait()
        assert seen == [True, True, True, False]
        assert scopes == [0]
    finally:
        store.close()


def test_a_record_after_close_is_neither_committed_nor_an_error(db: Path) -> None:
    store = Store(db, fsync=False)
    store.start()
    store.close()
    late = Recorded()
    store.record(["c"], "t", b"late", {}, late)
    assert late.calls == 0  # unrecorded, so never acknowledged: the broker keeps it


def test_with_fsync_every_intake_commit_is_full_and_completions_are_not(db: Path) -> None:
    store = Store(db, fsync=True)
    store.start()
    seen: list[int] = []
    try:
        def level() -> int:
            return int(store._conn.execute("PRAGMA synchronous").fetchone()[0])

        done = threading.Event()
        rows: list[IntakeRecord] = []

        def recorded(committed: list[IntakeRecord]) -> None:
            rows.extend(committed)
            seen.append(level())  # runs right after the commit, on the committing thread
            done.set()

        store.record(["c"], "t", b"{}", {}, recorded)
        assert done.wait(WAIT)
        completed = threading.Event()
        store.complete(rows[0].seq, [], lambda: (seen.append(level()), completed.set()))
        assert completed.wait(WAIT)
        done.clear()
        store.record(["c"], "t", b"{}", {}, recorded)
        assert done.wait(WAIT)
        assert seen == [2, 1, 2]  # FULL, NORMAL, FULL
    finally:
        store.close()



def _wal_working_size(store: Store) -> int:
    (pages,) = store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    (page_size,) = store._conn.execute("PRAGMA page_size").fetchone()
    return 32 + (pages + pages // 8) * (page_size + 24)


def test_with_fsync_the_log_is_grown_at_open_so_commits_overwrite_it(db: Path) -> None:
    wal = Path(f"{db}-wal")
    store = Store(db, fsync=True)
    store.start()
    try:
        grown = wal.stat().st_size
        assert grown >= _wal_working_size(store)
        assert db.stat().st_size < 256 * 1024  # grown with the log's frames, not the db's
        assert _reserve_wal(store._conn, db) == 0  # already there: nothing to do
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL again
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        for n in range(300):  # past the point where a fresh log would have grown
            (row,) = record(store, payload=b'{"n": %d}' % n)
            complete(store, row.seq, [entry("s3", n)])
        assert wal.stat().st_size == grown
        assert store._conn.execute("SELECT COUNT(*) FROM meta WHERE key = 'wal_reserve'"
                                   ).fetchone() == (0,)  # fmt: skip
    finally:
        store.close()


def test_without_fsync_the_log_is_left_to_grow_as_it_needs(db: Path) -> None:
    store = Store(db, fsync=False)
    try:
        assert Path(f"{db}-wal").stat().st_size < 1024 * 1024
    finally:
        store.close()


class _DiskFillsUp:
    """A connection whose disk fills up after ``room`` inserts (the rest is SQLite's)."""

    def __init__(self, conn: sqlite3.Connection, room: int) -> None:
        self._conn = conn
        self._room = room

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("INSERT"):
            if self._room == 0:
                raise sqlite3.OperationalError("database or disk is full")
            self._room -= 1
        return self._conn.execute(sql, *args)


def test_a_full_disk_while_growing_the_log_is_not_an_error(db: Path) -> None:
    store = Store(db, fsync=False)  # the log left small
    conn = store._conn
    try:
        full = _DiskFillsUp(conn, room=10)
        assert _reserve_wal(cast(sqlite3.Connection, full), db) == 10
        # Checkpointing and syncing are as they were, and the store still works.
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL (no fsync)
        store.start()
        assert record(store, payload=b"after")[0].payload == b"after"
    finally:
        store.close()


def test_growing_the_log_keeps_what_a_crash_left_in_it(db: Path, tmp_path: Path) -> None:
    store = Store(db, fsync=False)  # leaves the log small
    store.start()
    first = record(store, payload=b"one")[0]
    second = record(store, payload=b"two")[0]
    complete(store, first.seq, [entry("s3", 1)])
    # The files as a crash leaves them: committed rows still only in the log.
    crashed = tmp_path / "crashed" / "agent.db"
    crashed.parent.mkdir()
    for suffix in ("", "-wal"):
        Path(f"{crashed}{suffix}").write_bytes(Path(f"{db}{suffix}").read_bytes())
    store.close()
    assert Path(f"{crashed}-wal").stat().st_size > 0

    reopened = Store(crashed, fsync=True)
    reopened.start()
    try:
        assert Path(f"{crashed}-wal").stat().st_size >= _wal_working_size(reopened)
        assert reopened.pending() == [second]
        assert [r.result_id for r in reopened.outbox_batch("s3", 10)] == ["rid-1"]
    finally:
        reopened.close()



# -- early hand-out: a lone record reaches its caller before its commit ------------------


class HandedOut:
    """An ``early`` callback for ``Store.record``; notes whether each row was committed
    when it was handed out."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: list[IntakeRecord] = []
        self.committed_then: list[bool] = []
        self.thread = ""

    def __call__(self, rows: list[IntakeRecord]) -> None:
        self.thread = threading.current_thread().name
        self.rows.extend(rows)
        pending = {r.seq for r in self.store.pending()}
        self.committed_then += [r.seq in pending for r in rows]


def record_early(
    store: Store, payload: bytes = b"{}", *, dup: bool = False, packet_id: int = 0
) -> tuple[HandedOut, Recorded]:
    early, done = HandedOut(store), Recorded()
    store.record(
        ["c"], "t", payload, {}, done, early=early,
        delivery=Delivery(dup=dup, packet_id=packet_id, connection="a"),
    )
    done.wait()
    return early, done


def test_a_lone_record_is_handed_out_before_its_commit_on_the_callers_thread(
    store: Store,
) -> None:
    first, done = record_early(store, b"1")
    # No sequence reservation covered the first number yet: not handed out early.
    assert first.rows == [] and len(done.rows) == 1
    early, done = record_early(store, b"2")
    (row,) = early.rows
    assert early.committed_then == [False]
    assert early.thread == threading.current_thread().name
    assert done.rows == [row]  # then committed, and ``done`` has the same row
    assert [r.payload for r in store.pending()] == [b"1", b"2"]
    assert store.handed_out_early == 1


def test_a_possible_redelivery_is_never_handed_out_early(store: Store) -> None:
    record_early(store)  # the reservation
    early, done = record_early(store, dup=True, packet_id=7)
    assert early.rows == [] and len(done.rows) == 1


def test_a_record_in_a_burst_goes_to_the_writer_and_is_not_handed_out_early(
    store: Store,
) -> None:
    """In a burst one group commit covers many messages; the writer's commit is not
    the caller's to wait for, so nothing is handed out before it."""
    record_early(store)
    release = threading.Event()
    store.complete(0, [], lambda: release.wait(WAIT))  # queued work: no inline commit
    early, done = HandedOut(store), Recorded()
    store.record(["c"], "t", b"burst", {}, done, early=early)
    release.set()
    done.wait()
    assert early.rows == []


def test_numbers_handed_out_early_are_never_given_out_again_after_a_crash(db: Path) -> None:
    """A handler saw the request id of a record whose commit never landed (the agent
    died first): after a restart no other message gets that sequence number."""
    store = Store(db, fsync=False)
    store.start()
    try:
        record_early(store)
        early, _ = record_early(store)
        (row,) = early.rows
        # Another process opening the file now sees what a restart would see, whether
        # or not that row's own commit had landed.
        assert Store(db, fsync=False).next_seq() > row.seq + 1
    finally:
        store.close()


def test_a_failed_commit_after_a_hand_out_never_calls_done(store: Store, db: Path) -> None:
    import sqlite3

    record_early(store)
    taken = store.next_seq()  # taken from outside: the next INSERT fails
    with sqlite3.connect(db) as other:
        other.execute(
            "INSERT INTO intake (seq, component, topic, payload, received_at)"
            " VALUES (?, 'c', 't', x'00', 0)", (taken,),
        )
    early, done = HandedOut(store), Recorded()
    store.record(["c"], "t", b"lost", {}, done, early=early)
    assert [r.seq for r in early.rows] == [taken]
    assert not done.event.is_set()  # never acknowledged: the broker keeps the message
    assert b"lost" not in [r.payload for r in store.pending()]
    # The store goes on: the next message is recorded under the next number.
    (row,) = record(store)
    assert row.seq == taken + 1


def test_completing_a_handed_out_record_at_once_still_completes_it(store: Store) -> None:
    """A completion queued from the hand-out, before the commit that records the row:
    the write stream keeps the order, so the row never stays behind as pending."""
    completed = threading.Event()
    record_early(store)
    (first,) = store.pending()
    complete(store, first.seq, [])

    def finish(rows: list[IntakeRecord]) -> None:
        for r in rows:
            store.complete(r.seq, [entry("s3", r.seq)], completed.set)

    done = Recorded()
    store.record(["c"], "t", b"x", {}, done, early=finish)
    done.wait()
    assert completed.wait(WAIT)
    assert store.pending() == []
    assert [r.result_id for r in store.outbox_batch("s3", 10)] == [f"rid-{done.rows[0].seq}"]


def test_flush_returns_once_everything_queued_before_it_is_committed(store: Store) -> None:
    (row,) = record(store)
    lock = store._commit_lock
    with lock:  # the writer cannot commit while this is held
        store.complete(row.seq, [])
        assert [r.seq for r in store.pending()] == [row.seq]
        assert not store.flush(timeout=0.2)
    assert store.flush(timeout=WAIT)
    assert store.pending() == []


def test_flush_without_a_writer_returns_at_once(db: Path) -> None:
    s = Store(db, fsync=False)
    try:
        assert s.flush(timeout=0)
    finally:
        s.close()


# -- the split sync: a lone record's commit starts its fsync, ``durable`` finishes it ----


class Syncs:
    """The two halves of the split sync (``Store``'s ``writeback`` and ``datasync``):
    notes which file each was given and when; the second does the real fdatasync."""

    def __init__(self, fail: int = 0) -> None:
        self.started: list[str] = []
        self.synced: list[str] = []
        self.fail = fail  # this many syncs fail first

    def start(self, fd: int) -> None:
        self.started.append(os.readlink(f"/proc/self/fd/{fd}"))

    def datasync(self, fd: int) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(errno.EIO, "Input/output error")
        self.synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fdatasync(fd)


def split_store(db: Path, syncs: Syncs, **options: Any) -> Store:
    """A store whose clock says every record comes long after the last (a quiet
    device: each lone record is committed on its caller's thread)."""
    options.setdefault("fsync", True)
    ticks = itertools.count(step=10.0)
    store = Store(db, writeback=syncs.start, datasync=syncs.datasync,
                  clock=lambda: next(ticks), **options)
    store.start()
    return store


def test_a_lone_record_handed_out_early_is_synced_in_two_halves(db: Path) -> None:
    syncs = Syncs()
    store = split_store(db, syncs)
    try:
        record_early(store)  # it writes the sequence reservation: synced in its commit
        assert syncs.started == []
        early, done = record_early(store, b"2")
        assert len(early.rows) == 1 and done.rows == early.rows
        # Committed and handed back, its write to disk started and not waited for.
        assert syncs.started == [f"{db}-wal"] and syncs.synced == []
        store.durable()
        assert syncs.synced == [f"{db}-wal"]
        store.durable()  # nothing new since: no second sync
        record_early(store, b"3")
        record_early(store, b"4")
        assert len(syncs.started) == 3 and len(syncs.synced) == 1
        store.durable()  # one sync covers both
        assert len(syncs.synced) == 2
    finally:
        store.close()
    reopened = Store(db, fsync=False)
    try:
        assert [r.payload for r in reopened.pending()] == [b"{}", b"2", b"3", b"4"]
    finally:
        reopened.close()


def test_records_the_writer_commits_are_synced_in_their_commit(db: Path) -> None:
    """Only the lone record whose caller started its function early (and so calls
    ``durable`` before anything leaves) has its sync split; the writer's group
    commits and commits without fsync keep theirs whole."""
    for options in ({"inline_commits": False}, {"fsync": False}):
        syncs = Syncs()
        store = split_store(db, syncs, **options)
        try:
            for payload in (b"1", b"2", b"3"):
                record_early(store, payload)
            store.durable()
            assert syncs.started == [] and syncs.synced == [], options
        finally:
            store.close()
        for path in db.parent.iterdir():
            path.unlink()


def test_a_failed_sync_fails_every_durable_after_it(db: Path) -> None:
    """Linux reports a write-back error once and marks the pages it could not write
    clean: a second fdatasync would succeed with them never written. So the store
    does not try again, and says so in its intake report."""
    syncs = Syncs(fail=1)
    store = split_store(db, syncs)
    try:
        assert store.sync_error is None
        record_early(store)
        record_early(store, b"2")
        with pytest.raises(OSError, match="Input/output error"):
            store.durable()
        with pytest.raises(OSError, match="an earlier sync of .* failed: Input/output error"):
            store.durable()  # the next sync would succeed: it is not tried
        assert syncs.synced == []
        assert store.intake_stats()["sync_error"] == "Input/output error (errno 5)"
    finally:
        store.close()


def test_the_platform_starts_a_write_back_of_the_log(db: Path) -> None:
    start = _sync_file_range()
    assert start is not None  # Linux: the agent's platform
    store = Store(db, fsync=True)  # the default: this ``start`` and os.fdatasync
    store.start()
    try:
        record_early(store)
        early, _ = record_early(store, b"2")
        assert len(early.rows) == 1
        fd = os.open(f"{db}-wal", os.O_RDWR)
        try:
            start(fd)  # what the commit did: it raises on failure
        finally:
            os.close(fd)
        store.durable()
    finally:
        store.close()
    reopened = Store(db, fsync=False)
    try:
        assert [r.payload for r in reopened.pending()] == [b"{}", b"2"]
    finally:
        reopened.close()


def test_only_a_store_with_fsyncs_loads_ctypes_for_the_write_back(tmp_path: Path) -> None:
    """``--durability process`` has no fsync to split: it does not pay ctypes's memory."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from edge.agent.store import Store\n"
        "Store(Path(sys.argv[1]), fsync=sys.argv[2] == 'power').close()\n"
        "print('ctypes' in sys.modules)\n"
    )
    loaded = {}
    for durability in ("process", "power"):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / durability / "agent.db"), durability],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        loaded[durability] = proc.stdout.strip()
    assert loaded == {"process": "False", "power": "True"}

