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

Three more duties live here because they must be atomic with those writes:

* **Redelivery.** A message recorded just before a crash whose PUBACK never
  reached the broker comes back after the reconnect with the DUP flag and its
  original packet id. ``seen`` remembers a fingerprint of the last
  ``dedupe_window`` recorded messages; see ``Store.record`` for the rule.
* **The bound.** The store counts the bytes of pending intake payloads and of
  outbox rows. Over ``max_bytes`` the ``drop-oldest`` policy deletes the
  oldest outbox rows in the same transaction that added new ones, and counts
  them per sink; under ``backpressure`` the store only reports ``full()``
  (which also reserves, for each pending record, the average size of the
  results so far) and the agent stops recording (and so acknowledging) new
  messages.
* **Sealed batches.** Before the syncer writes rows it seals them into a batch
  (``batch`` column); after a crash the same rows are written again as the
  same batch, so an S3 object named after its range is rewritten, never
  written a second time with a different range.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POLICIES = ("backpressure", "drop-oldest")
#: What backpressure reserves for each pending record's results before any result was
#: seen (a JSON result of a few hundred bytes in two sinks); then a moving average
#: of the real sizes, kept across restarts.
RESULT_ESTIMATE_PRIOR = 1024.0
#: How many recorded messages the redelivery check looks back over. Mosquitto hands
#: out packet ids per client in sequence (1..65535), so inside this window one packet
#: id belongs to one message.
DEDUPE_WINDOW = 20_000
# Rows of ``seen`` beyond the window are deleted in one go every this many messages
# (the window itself is exact: lookups ignore older rows).
PRUNE_EVERY = 512
# The moving result-size estimate is persisted every this many completions: it only
# has to survive a restart roughly.
ESTIMATE_SAVE_EVERY = 64
#: Sequence numbers are reserved durably in blocks of this many before any of them is
#: handed to a worker ahead of its commit (``record``'s ``early``), so that a number a
#: handler saw (its request id derives from it) is never given to another message
#: after a crash; a restart skips the rest of the block.
SEQ_BLOCK = 1024

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
    created_at REAL NOT NULL,
    batch INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_by_sink ON outbox (sink, id);
CREATE INDEX IF NOT EXISTS outbox_by_lane ON outbox (sink, component, id);
CREATE TABLE IF NOT EXISTS seen (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    packet_id INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    connection TEXT NOT NULL,
    first_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_by_packet ON seen (packet_id, fingerprint);
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
class Delivery:
    """How the broker delivered a message: what the redelivery check compares."""

    dup: bool = False
    packet_id: int = 0
    connection: str = ""  # a token of the broker connection it arrived on


@dataclass(frozen=True)
class _Intake:
    rows: list[IntakeRecord]  # one per component, numbered by ``record``
    done: Callable[[list[IntakeRecord]], None]
    delivery: Delivery
    reserve: int = 0  # write this sequence reservation mark in the same commit
    early: bool = False  # may be handed out before its commit (``record``)


@dataclass(frozen=True)
class _Complete:
    seq: int
    entries: Sequence[OutboxEntry]
    done: Callable[[], None] | None


def fingerprint(topic: str, payload: bytes, properties: Mapping[str, str]) -> bytes:
    """SHA-256 over the topic, the payload and the user properties (order-free)."""
    h = hashlib.sha256()
    if not properties and _PLAIN_TOPIC.fullmatch(topic):
        # What the JSON below comes to for a plain topic and no properties, without
        # the encoder (a tenth of intake's own time on a loaded device).
        head = f'["{topic}",[]]'
    else:
        head = _COMPACT.encode([topic, sorted(properties.items())])
    h.update(head.encode("utf-8"))
    h.update(b"\x00")
    h.update(payload)
    return h.digest()[:16]


# Printable ASCII without the two characters JSON escapes in a string: such a topic is
# its own JSON string body.
_PLAIN_TOPIC = re.compile(r'[ !#-\[\]-~]*')

# ``json.dumps`` with any option builds a new encoder on every call; these paths run
# once per message, so they keep one (the output is the same).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _connect(path: Path, *, fsync: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives a power cut. NORMAL: it survives a process crash
    # (SIGKILL, OOM) but the last commits may roll back on power loss.
    conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _reserve_wal(conn: sqlite3.Connection, path: Path) -> int:
    """Grow the write-ahead log to the size it cycles at, so commits overwrite it.

    An fsync of a file that grew also commits the file system's journal (its size
    changed): on ext4 here a fsynced commit that appends to the log took about twice
    as long as one that overwrites it (bench/README.md). SQLite deletes the log when
    the store closes and then lets it grow from nothing until its first checkpoint
    (``wal_autocheckpoint`` pages), after which it writes from the start again: so
    without this, the first thousand or so commits after every start of the agent
    pay the slow kind. Small commits of one meta row, not fsynced each, grow it
    (about 20 ms here) without growing the database; the checkpoint at the end
    (which does fsync, so what the log held before is safe) makes the next commit
    start at the beginning of the log. Returns how many commits that took.
    """
    wal = Path(f"{path}-wal")
    pages = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    # The log is checkpointed after the commit that takes it to ``pages`` frames, so
    # it reaches that plus one commit's frames: an eighth more covers the usual ones.
    want = 32 + (pages + pages // 8) * (page_size + 24)  # WAL header, then frames

    def size() -> int:
        try:
            return wal.stat().st_size
        except FileNotFoundError:
            return 0

    if pages <= 0 or size() >= want:
        return 0
    synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # or it would cycle at ``pages``
    commits = 0
    try:
        while size() < want and commits < 2 * pages:  # a bound, should it not grow
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('wal_reserve', ?)",
                         (str(commits),))  # fmt: skip
            commits += 1
        conn.execute("DELETE FROM meta WHERE key = 'wal_reserve'")
        conn.execute("PRAGMA wal_checkpoint(RESTART)")
    except (sqlite3.Error, OSError) as exc:
        # Only a speed-up: a full disk must not keep the agent from starting (the row
        # left behind, if any, is overwritten by the next start's).
        log.warning("write-ahead log not grown at start (%s); commits extend it instead", exc)
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    return commits


def _sync_file_range() -> Callable[[int], None] | None:
    """Linux's ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``, or None where there
    is none: it starts writing a file's dirty pages out and returns without waiting."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int) -> None:
        if call(fd, 0, 0, 2) != 0:  # 2: SYNC_FILE_RANGE_WRITE
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return start


# SQLite's primary result codes for a disk that failed a read, write or sync, and a full one.
_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def _disk_error(exc: BaseException) -> OSError | None:
    """``exc`` as an ``OSError`` when it is SQLite reporting a failing or full disk."""
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # (Python 3.11: the extended code)
    if code == _SQLITE_IOERR:
        return OSError(errno.EIO, f"store: {exc}")
    if code == _SQLITE_FULL:
        return OSError(errno.ENOSPC, f"store: {exc}")
    return None


class _Writeback:
    """The fsync of a commit, split in two so the thread can work in between.

    Under ``--durability power`` an intake commit waits for its fsync of the
    write-ahead log: on the machines measured here that is most of a lone
    message's time in the agent, during which the receiving thread could have
    been reading the function's result and building its record. A commit made
    with ``synchronous=NORMAL`` has written its frames (to the page cache) and
    is whole; ``begin`` then starts the disk write of those pages without
    waiting for it, and ``wait`` is the fdatasync of the log, which finds the
    write under way or done and only has to finish it. SQLite's FULL mode
    adds exactly that sync after a commit in WAL mode, so a commit followed by
    ``wait`` is as durable as a FULL one; before ``wait`` it is not, and the
    store's ``durable`` must come before anything that depends on it leaves
    the device.
    """

    def __init__(
        self,
        wal: Path,
        start: Callable[[int], None],
        datasync: Callable[[int], None] = os.fdatasync,
    ) -> None:
        self._wal = wal
        self._start = start
        self._datasync = datasync
        self._lock = threading.Lock()
        self._fd = -1
        self._begun = 0  # commits whose write was started (a generation)
        self._synced = 0  # the newest of those a finished sync covered
        self.failed: OSError | None = None  # the first sync that failed, for good

    def begin(self) -> None:
        """After a commit with ``synchronous=NORMAL``: start writing its frames out.

        The log's file is opened once: SQLite deletes it only when the last
        connection to the database closes, and the store keeps two open until
        it closes (it never truncates the log either)."""
        with self._lock:
            self._begun += 1
            try:
                self._start(self._file())
            except OSError as exc:  # ``wait`` syncs it all the same
                log.debug("write-back of %s not started: %s", self._wal, exc)

    def _file(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self._wal, os.O_RDWR | os.O_CLOEXEC)
        return self._fd

    @property
    def pending(self) -> bool:
        return self._synced < self._begun or self.failed is not None

    def wait(self) -> None:
        """Return once every commit ``begin`` saw is on disk (OSError: it may not be).

        A failed sync fails every later ``wait`` too, without trying again: Linux
        reports a write-back error once, marks the pages it could not write clean,
        and a second fdatasync then succeeds with those pages never written."""
        wanted = self._begun
        if self._synced >= wanted and self.failed is None:
            return
        with self._lock:
            if self.failed is not None:
                failed = self.failed
                raise OSError(failed.errno, f"an earlier sync of {self._wal} failed: "
                                            f"{failed.strerror}")
            if self._synced >= wanted:
                return  # another thread's sync covered it
            wanted = self._begun
            try:
                self._datasync(self._file())
            except OSError as exc:
                self.failed = exc
                raise
            self._synced = wanted

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an earlier agent up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "batch" not in columns:
        conn.execute("ALTER TABLE outbox ADD COLUMN batch INTEGER")


class Store:
    """The intake log and outbox; ``start()`` runs the writer thread.

    ``max_bytes`` bounds intake payloads plus outbox rows (None: unbounded);
    ``when_full`` is ``backpressure`` or ``drop-oldest``. ``inline_commits``: a
    trigger message that arrives while the writer is idle and messages are sparse
    is committed on the caller's thread (see ``record``); ``clock`` times that rule.
    """

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = True,
        max_batch: int = 512,
        max_bytes: int | None = None,
        when_full: str = "backpressure",
        dedupe_window: int = DEDUPE_WINDOW,
        inline_commits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        writeback: Callable[[int], None] | bool = True,
        datasync: Callable[[int], None] = os.fdatasync,
    ) -> None:
        if when_full not in POLICIES:
            raise ValueError(f"when_full must be one of {POLICIES}, got {when_full!r}")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._sync_full = fsync  # what the writing connection is set to now
        self._max_batch = max_batch
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._dedupe_window = dedupe_window
        self._conn = _connect(path, fsync=fsync)
        self._conn.executescript(SCHEMA)
        _migrate(self._conn)
        if fsync:  # without fsyncs per commit, where they land costs nothing
            _reserve_wal(self._conn, path)
        self._reader = _connect(path, fsync=fsync)
        # A lone message's commit on the receiving thread syncs in two halves
        # (``_Writeback``); True: with the platform's sync_file_range, where there is one
        # (not looked up without fsyncs: it loads ctypes).
        self._writeback: _Writeback | None = None
        if fsync and writeback:
            start = _sync_file_range() if writeback is True else writeback
            if start is not None:
                self._writeback = _Writeback(Path(f"{path}-wal"), start, datasync)
        self._reader_lock = threading.Lock()
        self._ops: queue.SimpleQueue[_Intake | _Complete | None] = queue.SimpleQueue()
        # Held by whichever thread commits: the writer, or a caller of ``record``
        # committing inline while the writer is idle.
        self._commit_lock = threading.Lock()
        self._closed = False
        self._unwritten = 0  # operations queued for the writer and not committed yet
        self._inline = inline_commits
        self._clock = clock
        self._last_record = float("-inf")  # when ``record`` was last called
        self._commit_cost = 0.0  # seconds a commit takes, on average (moving)
        self.inline_commits = 0
        self.handed_out_early = 0  # records given to ``early`` before their commit
        self._thread: threading.Thread | None = None
        # Entered around a commit's callbacks when there are several (``Agent``: the
        # bus's ``acks_held``, so a group commit's acknowledgements go out together).
        self.callback_scope: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        self._outbox_listeners: list[Callable[[], None]] = []
        self._space_listeners: list[Callable[[], None]] = []
        self._failure_listeners: list[Callable[[str], None]] = []
        # The first commit the disk failed (SQLite's own write or sync): for good, as a
        # failed split sync (``_Writeback``), and for the same reason.
        self._commit_failed: OSError | None = None
        self.commits = 0
        self.duplicates = 0
        # Byte accounting, kept in memory (read once at start) so ``full()`` is free.
        self._bytes_lock = threading.Lock()
        self._intake_bytes = 0
        self._pending = 0
        # Bytes of outbox rows one completed intake record adds, on average (moving):
        # backpressure reserves that much for each pending record, so intake stops
        # before results that are already on their way overrun the bound.
        self._result_estimate = RESULT_ESTIMATE_PRIOR
        self._queued = 0  # intake rows handed to ``record`` and not committed yet
        self._outbox_bytes: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._estimate_unsaved = 0
        # The sequence allocator (under ``_bytes_lock``): numbers up to ``_seq_durable``
        # are covered by a committed reservation; ``_seq_mark`` is the newest mark
        # asked for (committed or on its way).
        self._next_seq = 1
        self._seq_durable = self._seq_mark = 0
        self._load_counters()

    def _load_counters(self) -> None:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'intake'").fetchone()
        used = int(row[0]) if row else 0
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'seq_reserved'").fetchone()
        reserved = int(row[0]) if row else 0
        # Past every number used or reserved: one a handler may have seen before a
        # crash, in a commit that never landed, is not handed out again.
        self._next_seq = max(used, reserved) + 1
        self._seq_durable = self._seq_mark = self._next_seq - 1
        (seen_max,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM seen").fetchone()
        self._seen_max = self._seen_pruned_at = int(seen_max)
        row = self._conn.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM intake"
        ).fetchone()
        self._intake_bytes, self._pending = int(row[0]), int(row[1])
        for sink, size in self._conn.execute(
            "SELECT sink, COALESCE(SUM(size), 0) FROM outbox GROUP BY sink"
        ):
            self._outbox_bytes[sink] = int(size)
        for key, value in self._conn.execute(
            "SELECT key, value FROM meta WHERE key LIKE 'dropped:%' OR key = 'result_estimate'"
        ):
            if key == "result_estimate":
                self._result_estimate = float(value)
            else:
                self._dropped[key.split(":", 1)[1]] = int(value)

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
        with self._commit_lock:
            self._closed = True  # a late ``record`` now stays unrecorded (and unacknowledged)
        if self._estimate_unsaved:
            with contextlib.suppress(sqlite3.Error):  # only an estimate: never block a stop
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('result_estimate', ?)",
                    (repr(self._result_estimate),),
                )
        if self._writeback is not None:
            with contextlib.suppress(OSError):  # closing checkpoints (and syncs) anyway
                self._writeback.wait()
            self._writeback.close()
        self._conn.close()
        self._reader.close()

    def on_outbox(self, listener: Callable[[], None]) -> None:
        """Called (from the writer thread) after a commit added outbox rows."""
        self._outbox_listeners.append(listener)

    def on_space(self, listener: Callable[[], None]) -> None:
        """Called after rows left the store (synced, dropped or completed intake), from
        the thread that deleted them."""
        self._space_listeners.append(listener)

    # -- the bound ---------------------------------------------------------------
    def used_bytes(self) -> int:
        """Pending intake payloads plus outbox rows, in bytes."""
        with self._bytes_lock:
            return self._intake_bytes + sum(self._outbox_bytes.values())

    def reserved_bytes(self) -> int:
        """What pending intake records will add to the outbox, estimated from the
        average of the results so far."""
        with self._bytes_lock:
            return int((self._pending + self._queued) * self._result_estimate)

    def full(self) -> bool:
        """True when the bound is reached under ``backpressure``: record nothing new.

        Counts the bytes used plus those reserved for pending records' results."""
        if self.when_full != "backpressure" or self.max_bytes is None:
            return False
        with self._bytes_lock:  # once, not once per term: this runs for every message
            used = self._intake_bytes + sum(self._outbox_bytes.values())
            reserved = (self._pending + self._queued) * self._result_estimate
        return used + int(reserved) >= self.max_bytes

    def dropped(self) -> dict[str, int]:
        """Outbox rows deleted unsent by ``drop-oldest``, per sink, since the store was made."""
        with self._bytes_lock:
            return dict(self._dropped)

    # -- writes (asynchronous, group-committed) --------------------------------
    def record(
        self,
        components: Sequence[str],
        topic: str,
        payload: bytes,
        properties: Mapping[str, str],
        done: Callable[[list[IntakeRecord]], None],
        received_at: float | None = None,
        delivery: Delivery | None = None,
        early: Callable[[list[IntakeRecord]], None] | None = None,
    ) -> None:
        """Queue one trigger message (one intake row per component); ``done`` runs after
        the commit that made them durable, with the rows and their sequence numbers.

        ``early``, when given, receives the rows *before* their commit when that
        commit is made right here, on the caller's thread (a lone message on a
        quiet device), so the caller can start the function and let it run while
        the commit (an fsync, under ``--durability power``) is under way. The
        caller must not let anything leave the device for those rows until this
        call has returned (the commit is over) and ``done`` ran for them: without
        ``done`` the commit failed, nothing was recorded, and whatever the
        function produced must be dropped (the message is not acknowledged: the
        broker delivers it again, as a new record). And under ``--durability
        power`` such a commit may return before it is on disk (its fsync only
        started, see ``_Writeback``): the caller calls ``durable`` before whatever
        relies on the rows being on disk leaves (their acknowledgement, at least).
        Skipped for a message that may be a redelivery (whose commit may record
        nothing) and while no sequence reservation covers the new numbers
        (``SEQ_BLOCK``).

        The redelivery rule: ``done`` gets an empty list, and nothing is recorded,
        only when (1) the broker marked the message DUP, (2) one of the last
        ``dedupe_window`` recorded messages had the same packet id and the same
        topic, payload and user properties, and (3) that one arrived on a
        different broker connection (MQTT resends only after a reconnect). Two
        identical readings published twice are two messages: the second is not
        DUP, or has another packet id.
        """
        if not components:  # a caller's mistake, not to be found mid-commit
            raise ValueError("a message is recorded for at least one component")
        d = delivery or Delivery()
        received = received_at or time.time()
        now = self._clock()
        n = len(components)
        with self._bytes_lock:
            first = self._next_seq
            self._next_seq = first + n
            last = first + n - 1
            # Inline only when nothing queued before this one is still uncommitted (the
            # write stream keeps its order) and messages arrive further apart than a
            # commit takes (else they are better grouped: one fsync for many).
            inline = (
                self._inline
                and self._unwritten == 0
                and now - self._last_record >= self._commit_cost
            )
            reserve = 0
            speculative = inline and early is not None and not (d.dup and d.packet_id)
            if speculative and last > self._seq_mark - SEQ_BLOCK // 2:
                reserve = self._seq_mark = max(self._seq_mark, last) + SEQ_BLOCK
            speculative = speculative and last <= self._seq_durable
            self._last_record = now
            self._queued += n
        rows = [
            IntakeRecord(seq, component, topic, payload, properties, received)
            for seq, component in zip(range(first, last + 1), components, strict=True)
        ]
        op = _Intake(rows, done, d, reserve, speculative)
        # An idle writer would only be woken to commit this one message: commit it here,
        # on the caller's thread, and save two thread hand-offs (to the writer, and back
        # to the network thread for the acknowledgement).
        before = partial(self._hand_out, rows, early) if op.early and early is not None else None
        # Its caller waits for ``durable`` before the acknowledgement (see above), so
        # such a commit may leave its fsync to that. Not one that writes a sequence
        # reservation: numbers are handed out early on the strength of it once its
        # commit returns.
        defer = before is not None and not reserve and self._writeback is not None
        if not (inline and self._commit_here(op, before, defer=defer)):
            self._put(op)

    def _hand_out(
        self, rows: list[IntakeRecord], early: Callable[[list[IntakeRecord]], None]
    ) -> None:
        self.handed_out_early += len(rows)
        try:
            early(rows)
        except Exception:
            log.exception("handing out intake rows %s failed", [r.seq for r in rows])

    def _commit_here(
        self,
        op: _Intake | _Complete,
        before: Callable[[], None] | None = None,
        *,
        defer: bool = False,
    ) -> bool:
        """Commit ``op`` on the caller's thread if no other commit is under way (False:
        nothing done, queue it). ``before`` runs first, under the commit lock: a
        completion of the rows it hands out (committed by the writer, which needs
        this lock) cannot overtake their own commit. ``defer``: see ``_commit``."""
        if not self._commit_lock.acquire(blocking=False):
            return False
        try:
            if self._closed:
                return False
            self.inline_commits += 1
            if before is not None:
                before()
            self._commit([op], defer=defer)
            return True
        finally:
            self._commit_lock.release()

    def _put(self, op: _Intake | _Complete) -> None:
        with self._bytes_lock:
            self._unwritten += 1
        self._ops.put(op)

    def complete(
        self,
        seq: int,
        entries: Sequence[OutboxEntry],
        done: Callable[[], None] | None = None,
        *,
        here: bool = False,
    ) -> None:
        """Queue: delete intake row ``seq`` and append its results to the outbox, atomically.

        ``here``: commit on the caller's thread instead when the writer is idle (nothing
        queued for it, so nothing is overtaken), as ``record`` does for a lone
        message. Waking the writer for one small commit costs a thread hand-off and
        a fight for the interpreter lock; a worker's thread that completes an
        invocation has its worker busy with the next record meanwhile (it was sent
        ahead), so the commit costs it no time. Under load the writer is seldom
        idle, and completions are grouped there as before.
        """
        op = _Complete(seq, entries, done)
        if here and self._inline:
            with self._bytes_lock:
                idle = self._unwritten == 0
            if idle and self._commit_here(op):
                return
        self._put(op)

    def durable(self) -> None:
        """Return once every commit so far is on disk, as far as this store promises
        (``--durability power``). A lone message committed on the receiving thread
        may not be until this is called (``record``); the caller calls it before
        that message's acknowledgement leaves. Cheap when nothing waits.
        OSError: the sync failed, and nothing that depends on it may leave; once
        one failed, every later call fails too (``sync_error``)."""
        failed = self._commit_failed
        if failed is not None:
            raise OSError(failed.errno, f"an earlier commit failed: {failed.strerror}")
        if self._writeback is not None and self._writeback.pending:
            began = self._clock()
            self._writeback.wait()
            # Part of what the commit cost (``record``'s rule for committing inline
            # weighs it): the moving average took the commit without its sync.
            self._commit_cost += 0.2 * (self._clock() - began)

    @property
    def sync_error(self) -> str | None:
        """Why the disk failed the store for good (a split sync, ``durable``, or a commit),
        or None."""
        failed = self._writeback.failed if self._writeback is not None else None
        failed = failed or self._commit_failed
        return None if failed is None else f"{failed.strerror or failed} (errno {failed.errno})"

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(why)`` once, when the disk fails a commit: nothing the store
        takes after that can be promised (the agent stops; ``Agent._fail``)."""
        self._failure_listeners.append(listener)

    def _disk_failed(self, error: OSError, operations: int) -> None:
        first = self._commit_failed is None
        if first:
            self._commit_failed = error
        log.error("store commit failed: %s; %d operations not recorded", error, operations)
        if first:
            for listener in self._failure_listeners:
                try:
                    listener(str(error))
                except Exception:
                    log.exception("store failure listener failed")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is committed (False: not within
        ``timeout``). For a caller that is about to read the intake back (``pending``)
        and must not find rows whose completion is merely on its way."""
        if self._thread is None:
            return True
        marked = threading.Event()
        # A completion of no row (sequence numbers start at 1): its callback runs after
        # the commit that carries it, which carries everything queued before it.
        self.complete(0, (), marked.set)
        return marked.wait(timeout)

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
                with self._commit_lock:
                    self._commit(batch)
                with self._bytes_lock:
                    self._unwritten -= len(batch)

    def _synchronous(self, *, full: bool) -> None:
        if full != self._sync_full:
            self._conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._sync_full = full

    def _is_redelivery(self, cur: sqlite3.Cursor, op: _Intake, fp: bytes, seen_max: int) -> bool:
        d = op.delivery
        if not d.dup or not d.packet_id:
            return False
        row = cur.execute(
            "SELECT connection FROM seen WHERE packet_id = ? AND fingerprint = ? AND id > ?"
            " ORDER BY id DESC LIMIT 1",
            (d.packet_id, fp, seen_max - self._dedupe_window),
        ).fetchone()
        return row is not None and row[0] != d.connection

    def _commit(self, batch: list[_Intake | _Complete], *, defer: bool = False) -> None:
        """Commit ``batch`` in one transaction, then run its callbacks. ``defer``: no
        fsync in the commit; ``_Writeback`` starts it, ``durable`` finishes it."""
        began = self._clock()
        callbacks: list[Callable[[], None]] = []
        outbox_added = False
        intake_delta = 0
        pending_delta = 0
        queued_delta = 0
        result_sizes: list[int] = []
        outbox_delta: dict[str, int] = {}
        duplicates = 0
        dropped: dict[str, int] = {}
        seen_max = self._seen_max
        reserved = 0
        cur = self._conn.cursor()
        if self._fsync:
            # Only a commit that records intake must reach the disk before it returns
            # (the broker is acknowledged after it). One that only completes work may
            # wait for the next fsync of the write-ahead log, which covers it: a power
            # cut in between rolls it back whole, and the invocation runs again with
            # the same ids (sink writes are idempotent).
            self._synchronous(full=not defer and any(isinstance(op, _Intake) for op in batch))
        cur.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                if isinstance(op, _Intake):
                    rows = op.rows
                    first = rows[0]
                    queued_delta -= len(rows)
                    fp = fingerprint(first.topic, first.payload, first.properties)
                    if self._is_redelivery(cur, op, fp, seen_max):
                        duplicates += 1
                        callbacks.append(_bind(op.done, []))
                        continue
                    props = json.dumps(dict(first.properties)) if first.properties else "{}"
                    for row in rows:
                        cur.execute(
                            "INSERT INTO intake (seq, component, topic, payload, properties,"
                            " received_at) VALUES (?, ?, ?, ?, ?, ?)",
                            (row.seq, row.component, row.topic, row.payload, props,
                             row.received_at),
                        )
                        intake_delta += len(row.payload)
                        pending_delta += 1
                    if op.reserve:
                        cur.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_reserved', ?)",
                            (str(op.reserve),),
                        )
                        reserved = max(reserved, op.reserve)
                    if op.delivery.packet_id:
                        cur.execute(
                            "INSERT INTO seen (packet_id, fingerprint, connection, first_seq)"
                            " VALUES (?, ?, ?, ?)",
                            (op.delivery.packet_id, fp, op.delivery.connection, first.seq),
                        )
                        seen_max = cur.lastrowid or seen_max
                    callbacks.append(_bind(op.done, rows))
                else:
                    gone = cur.execute(
                        "DELETE FROM intake WHERE seq = ? RETURNING LENGTH(payload)", (op.seq,)
                    ).fetchall()
                    intake_delta -= sum(int(r[0]) for r in gone)
                    pending_delta -= len(gone)
                    if gone:
                        result_sizes.append(sum(len(e.record) for e in op.entries))
                    now = time.time()
                    for e in op.entries:
                        cur.execute(
                            "INSERT INTO outbox (sink, component, result_id, record, size,"
                            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                            (e.sink, e.component, e.result_id, e.record, len(e.record), now),
                        )
                        outbox_delta[e.sink] = outbox_delta.get(e.sink, 0) + len(e.record)
                        outbox_added = True
                    if op.done is not None:
                        callbacks.append(op.done)
            pruned_at = self._seen_pruned_at
            if seen_max - pruned_at >= PRUNE_EVERY:
                cur.execute("DELETE FROM seen WHERE id <= ?", (seen_max - self._dedupe_window,))
                pruned_at = seen_max
            estimate_saved = False
            if result_sizes and self._estimate_unsaved + len(result_sizes) >= ESTIMATE_SAVE_EVERY:
                estimate = self._result_estimate
                for size in result_sizes:
                    estimate = 0.9 * estimate + 0.1 * size
                cur.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('result_estimate', ?)",
                    (repr(estimate),),
                )
                estimate_saved = True
            if outbox_added and self.when_full == "drop-oldest" and self.max_bytes is not None:
                dropped = self._drop_oldest(cur, intake_delta, outbox_delta)
            cur.execute("COMMIT")
            if defer:
                assert self._writeback is not None
                self._writeback.begin()
            self._commit_cost = 0.8 * self._commit_cost + 0.2 * (self._clock() - began)
        except Exception as exc:
            # SQLite rolls back by itself after an I/O error in the commit; a second
            # ROLLBACK would raise and take the writer thread down with it.
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            with self._bytes_lock:
                self._seq_mark = self._seq_durable  # a lost reservation is asked for again
            disk = _disk_error(exc)
            if disk is not None and disk.errno == errno.EIO:
                self._disk_failed(disk, len(batch))
            else:
                log.exception("store commit failed; %d operations not recorded", len(batch))
            return
        self._seen_max, self._seen_pruned_at = seen_max, pruned_at
        self._estimate_unsaved = 0 if estimate_saved else self._estimate_unsaved + len(result_sizes)
        with self._bytes_lock:
            self._seq_durable = max(self._seq_durable, reserved)
            self._intake_bytes += intake_delta
            self._pending += pending_delta
            self._queued += queued_delta
            for size in result_sizes:
                self._result_estimate = 0.9 * self._result_estimate + 0.1 * size
            for sink, delta in outbox_delta.items():
                self._outbox_bytes[sink] = self._outbox_bytes.get(sink, 0) + delta
            for sink, count in dropped.items():
                self._dropped[sink] = self._dropped.get(sink, 0) + count
        self.commits += 1
        self.duplicates += duplicates
        if duplicates:
            log.info("recognised %d redelivered message(s); not run again", duplicates)
        if dropped:
            log.warning(
                "outbox over %d bytes: dropped the oldest %s", self.max_bytes,
                ", ".join(f"{n} {sink}" for sink, n in sorted(dropped.items())),
            )
        if len(callbacks) > 1:
            with self.callback_scope():
                _run_all(callbacks)
        else:
            _run_all(callbacks)
        if outbox_added:
            for listener in self._outbox_listeners:
                listener()
        if intake_delta < 0 or dropped:
            self._space_freed()

    def _space_freed(self) -> None:
        for listener in self._space_listeners:
            try:
                listener()
            except Exception:
                log.exception("store space listener failed")

    def _drop_oldest(
        self, cur: sqlite3.Cursor, intake_delta: int, outbox_delta: dict[str, int]
    ) -> dict[str, int]:
        """Delete the oldest outbox rows (any sink) until the bound holds; mutates
        ``outbox_delta`` and returns the count dropped per sink."""
        assert self.max_bytes is not None
        with self._bytes_lock:
            used = self._intake_bytes + sum(self._outbox_bytes.values())
        used += intake_delta + sum(outbox_delta.values())
        dropped: dict[str, int] = {}
        while used > self.max_bytes:
            rows = cur.execute(
                "SELECT id, sink, size FROM outbox ORDER BY id LIMIT 256"
            ).fetchall()
            if not rows:
                break
            ids = []
            for row_id, sink, size in rows:
                if used <= self.max_bytes:
                    break
                ids.append((row_id,))
                used -= size
                outbox_delta[sink] = outbox_delta.get(sink, 0) - size
                dropped[sink] = dropped.get(sink, 0) + 1
            cur.executemany("DELETE FROM outbox WHERE id = ?", ids)
        for sink, count in dropped.items():
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                " SET value = CAST(value AS INTEGER) + excluded.value",
                (f"dropped:{sink}", count),
            )
        return dropped

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

    def outbox_batch(self, sink: str, limit: int, component: str | None = None) -> list[OutboxRow]:
        """The oldest ``limit`` rows for ``sink`` (and ``component``, when given)."""
        sql = (
            "SELECT id, sink, component, result_id, record, created_at FROM outbox"
            " WHERE sink = ?"
        )
        args: tuple[Any, ...] = (sink,)
        if component is not None:
            sql += " AND component = ?"
            args += (component,)
        with self._reader_lock:
            rows = self._reader.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [OutboxRow(*r) for r in rows]

    def seal(
        self, sink: str, component: str, limit: int, max_bytes: int | None = None
    ) -> list[OutboxRow]:
        """The next batch for ``sink`` and ``component``, oldest first.

        A batch sealed earlier and not yet deleted (the process died while
        writing it) comes back exactly as it was; otherwise up to ``limit``
        rows (and about ``max_bytes``, but at least one row) are sealed into a
        new batch first. Writing a batch twice therefore writes the same thing.
        """
        select = (
            "SELECT id, sink, component, result_id, record, created_at, size FROM outbox"
            " WHERE sink = ? AND component = ?"
        )
        with self._reader_lock:
            sealed = self._reader.execute(
                "SELECT MIN(batch) FROM outbox WHERE sink = ? AND component = ?"
                " AND batch IS NOT NULL",
                (sink, component),
            ).fetchone()
            if sealed and sealed[0] is not None:
                rows = self._reader.execute(
                    select + " AND batch = ? ORDER BY id", (sink, component, sealed[0])
                ).fetchall()
                return [OutboxRow(*r[:6]) for r in rows]
            rows = self._reader.execute(
                select + " AND batch IS NULL ORDER BY id LIMIT ?", (sink, component, limit)
            ).fetchall()
            if max_bytes is not None:
                total, keep = 0, 0
                for r in rows:
                    if keep and total + r[6] > max_bytes:
                        break
                    total += r[6]
                    keep += 1
                rows = rows[:keep]
            if not rows:
                return []
            with self._reader_transaction():
                self._reader.executemany(
                    "UPDATE outbox SET batch = ? WHERE id = ?", [(rows[0][0], r[0]) for r in rows]
                )
        return [OutboxRow(*r[:6]) for r in rows]

    @contextlib.contextmanager
    def _reader_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT on the reader's connection (its lock held).

        On a failure the transaction is rolled back unless SQLite already did (it does
        after an I/O error in the commit, and a second ROLLBACK would raise in place
        of the error that matters). A failing disk (an I/O error, a full disk) is
        raised as ``OSError``: the sync loop reports it as its sink's failure, with
        the reason, as it does the local sink's own disk."""
        self._reader.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._reader.execute("COMMIT")
        except Exception as exc:
            if self._reader.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._reader.execute("ROLLBACK")
            disk = _disk_error(exc)
            if disk is not None:
                raise disk from exc
            raise

    def lanes(self, sink: str) -> list[str]:
        """The components with rows queued for ``sink``."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT DISTINCT component FROM outbox WHERE sink = ?", (sink,)
            ).fetchall()
        return sorted(r[0] for r in rows)

    def outbox_delete(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        freed: dict[str, int] = {}
        with self._reader_lock, self._reader_transaction():
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for sink, size in self._reader.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING sink, size",  # noqa: S608
                    chunk,
                ).fetchall():
                    freed[sink] = freed.get(sink, 0) + int(size)
        with self._bytes_lock:
            for sink, size in freed.items():
                self._outbox_bytes[sink] = self._outbox_bytes.get(sink, 0) - size
        if freed:
            self._space_freed()

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

    def intake_stats(self) -> dict[str, Any]:
        """Pending intake records, the bytes the store holds against its bound, duplicates."""
        with self._reader_lock:
            (count,) = self._reader.execute("SELECT COUNT(*) FROM intake").fetchone()
        return {
            "pending": int(count),
            "used_bytes": self.used_bytes(),
            "reserved_bytes": self.reserved_bytes(),
            "max_bytes": self.max_bytes,
            "when_full": self.when_full,
            "full": self.full(),
            "duplicates": self.duplicates,
            "sync_error": self.sync_error,
        }

    def next_seq(self) -> int:
        """The sequence number the next recorded row gets."""
        with self._bytes_lock:
            return self._next_seq


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for cb in callbacks:
        try:
            cb()
        except Exception:
            log.exception("store callback failed")


def _bind(fn: Callable[[list[IntakeRecord]], None], rows: list[IntakeRecord]) -> Callable[[], None]:
    return lambda: fn(rows)
