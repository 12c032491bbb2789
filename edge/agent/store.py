"""The device's durable state: the intake log and the outbox, in one SQLite file.

Why one file: a result must enter the outbox in the same transaction that
marks its trigger done, so after a crash either the trigger is still pending
(and runs again, producing the same deterministic ids) or its results are
queued; never neither, never both.

Writes go through a single writer thread that commits whatever has queued up
since the last commit in one transaction (group commit): under load one
fsync covers many messages, and the MQTT acknowledgement of each message is
sent only from the commit callback. Readers (the sync loop) use their own
connection; WAL mode lets them read while the writer writes.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    component TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    received_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    component TEXT NOT NULL,
    result_id TEXT NOT NULL,
    record TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_sink ON outbox (sink, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class IntakeRecord:
    seq: int
    component: str
    topic: str
    payload: bytes
    properties: Mapping[str, str]
    received_at: float
    attempts: int = 0


@dataclass(frozen=True)
class OutboxEntry:
    sink: str
    component: str
    result_id: str
    record: str  # JSON of an ``edge.sync.records.ResultRecord``


@dataclass(frozen=True)
class OutboxRow:
    id: int
    sink: str
    component: str
    result_id: str
    record: str
    created_at: float


@dataclass(frozen=True)
class _Intake:
    components: Sequence[str]
    topic: str
    payload: bytes
    properties: Mapping[str, str]
    received_at: float
    done: Callable[[list[IntakeRecord]], None]


@dataclass(frozen=True)
class _Complete:
    seq: int
    entries: Sequence[OutboxEntry]
    done: Callable[[], None] | None


def _connect(path: Path, *, fsync: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives a power cut. NORMAL: it survives a process crash
    # (SIGKILL, OOM) but the last commits may roll back on power loss.
    conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Store:
    """The intake log and outbox; ``start()`` runs the writer thread."""

    def __init__(self, path: Path, *, fsync: bool = True, max_batch: int = 512) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._max_batch = max_batch
        self._conn = _connect(path, fsync=fsync)
        self._conn.executescript(SCHEMA)
        self._reader = _connect(path, fsync=fsync)
        self._reader_lock = threading.Lock()
        self._ops: queue.SimpleQueue[_Intake | _Complete | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._outbox_listeners: list[Callable[[], None]] = []
        self.commits = 0

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Commit everything queued so far, then close."""
        if self._thread is not None:
            self._ops.put(None)
            self._thread.join()
            self._thread = None
        self._conn.close()
        self._reader.close()

    def on_outbox(self, listener: Callable[[], None]) -> None:
        """Called (from the writer thread) after a commit added outbox rows."""
        self._outbox_listeners.append(listener)

    # -- writes (asynchronous, group-committed) --------------------------------
    def record(
        self,
        components: Sequence[str],
        topic: str,
        payload: bytes,
        properties: Mapping[str, str],
        done: Callable[[list[IntakeRecord]], None],
        received_at: float | None = None,
    ) -> None:
        """Queue one trigger message (one intake row per component); ``done`` runs after
        the commit that made them durable, with the rows and their sequence numbers."""
        self._ops.put(
            _Intake(components, topic, payload, properties, received_at or time.time(), done)
        )

    def complete(
        self, seq: int, entries: Sequence[OutboxEntry], done: Callable[[], None] | None = None
    ) -> None:
        """Queue: delete intake row ``seq`` and append its results to the outbox, atomically."""
        self._ops.put(_Complete(seq, entries, done))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            op = self._ops.get()
            batch: list[_Intake | _Complete] = []
            if op is None:
                stopping = True
            else:
                batch.append(op)
            while len(batch) < self._max_batch:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Intake | _Complete]) -> None:
        callbacks: list[Callable[[], None]] = []
        outbox_added = False
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                if isinstance(op, _Intake):
                    rows = []
                    props = json.dumps(dict(op.properties))
                    for component in op.components:
                        cur.execute(
                            "INSERT INTO intake (component, topic, payload, properties,"
                            " received_at) VALUES (?, ?, ?, ?, ?)",
                            (component, op.topic, op.payload, props, op.received_at),
                        )
                        seq = cur.lastrowid
                        assert seq is not None
                        rows.append(
                            IntakeRecord(
                                seq, component, op.topic, op.payload, op.properties,
                                op.received_at,
                            )
                        )
                    callbacks.append(_bind(op.done, rows))
                else:
                    cur.execute("DELETE FROM intake WHERE seq = ?", (op.seq,))
                    now = time.time()
                    for e in op.entries:
                        cur.execute(
                            "INSERT INTO outbox (sink, component, result_id, record, size,"
                            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                            (e.sink, e.component, e.result_id, e.record, len(e.record), now),
                        )
                        outbox_added = True
                    if op.done is not None:
                        callbacks.append(op.done)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            log.exception("store commit failed; %d operations not recorded", len(batch))
            return
        self.commits += 1
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("store callback failed")
        if outbox_added:
            for listener in self._outbox_listeners:
                listener()

    # -- synchronous access (start-up, sync loop, status) ----------------------
    def pending(self) -> list[IntakeRecord]:
        """Intake rows recorded but not completed: what a crash left in flight."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT seq, component, topic, payload, properties, received_at, attempts"
                " FROM intake ORDER BY seq"
            ).fetchall()
        return [
            IntakeRecord(r[0], r[1], r[2], bytes(r[3]), json.loads(r[4]), r[5], r[6])
            for r in rows
        ]

    def bump_attempts(self, seqs: Iterable[int]) -> None:
        with self._reader_lock:
            self._reader.executemany(
                "UPDATE intake SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def outbox_batch(self, sink: str, limit: int) -> list[OutboxRow]:
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT id, sink, component, result_id, record, created_at FROM outbox"
                " WHERE sink = ? ORDER BY id LIMIT ?",
                (sink, limit),
            ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def outbox_delete(self, ids: Sequence[int]) -> None:
        with self._reader_lock:
            self._reader.execute("BEGIN IMMEDIATE")
            self._reader.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._reader.execute("COMMIT")

    def outbox_stats(self) -> dict[str, Any]:
        """Backlog per sink: count, bytes and the age of the oldest row."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT sink, COUNT(*), COALESCE(SUM(size), 0), MIN(created_at) FROM outbox"
                " GROUP BY sink"
            ).fetchall()
        now = time.time()
        return {
            sink: {
                "records": count,
                "bytes": size,
                "oldest_age_s": round(now - oldest, 3) if oldest else 0.0,
            }
            for sink, count, size, oldest in rows
        }

    def next_seq(self) -> int:
        with self._reader_lock:
            row = self._reader.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'intake'"
            ).fetchone()
        return int(row[0]) + 1 if row else 1


def _bind(fn: Callable[[list[IntakeRecord]], None], rows: list[IntakeRecord]) -> Callable[[], None]:
    return lambda: fn(rows)
