"""Drains the outbox into the sinks: per sink, per component, oldest first.

Each (sink, component) pair is a *lane*. A lane writes sealed batches (see
``Store.seal``) in outbox order, and the next batch of a lane is sealed only
once the previous one was accepted, so a component's results reach each sink
in the order they were produced. A lane that fails (endpoint down, throttled,
access denied) backs off on its own schedule with full jitter, without holding
up the other lanes of the same sink or the other sinks. Rows leave the outbox
only after their sink accepted them, and every sink write is idempotent on
the records' deterministic ids, so a crash between the write and the delete
costs one harmless rewrite of the same batch.

Rows of a component that has no sink (it was removed with results still
queued) stay in the outbox and in the reported backlog; they sync if the
component comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.agent.store import Store
from edge.errors import CloudError, ValidationError
from edge.sync.records import ResultRecord
from edge.sync.retry import Backoff
from edge.sync.sinks import Sink

log = logging.getLogger(__name__)

#: Rows per batch read from the outbox. DynamoDB writes them 25 per request; the
#: S3 sink puts each batch's JSON results into one NDJSON object.
DEFAULT_BATCH = 500
#: Bytes (of outbox records) per batch, so an NDJSON object stays a sensible size.
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024


@dataclass
class SinkHealth:
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: float = 0.0
    written: int = 0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class _Lane:
    failures: int = 0
    next_attempt: float = 0.0
    error: str | None = None


class Syncer:
    """``sinks`` maps a sink name ("s3", "dynamodb", "local") to {component: Sink}."""

    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Mapping[str, Sink]],
        *,
        batch: int = DEFAULT_BATCH,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        retry_max: float = 30.0,
    ) -> None:
        self._store = store
        self._sinks: dict[str, dict[str, Sink]] = {k: dict(v) for k, v in sinks.items()}
        self._batch = batch
        self._batch_bytes = batch_bytes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._retry_max = retry_max
        self.health = {name: self._new_health() for name in sinks}
        store.on_outbox(self._wake.set)

    def set_sinks(self, component: str, sinks: Mapping[str, Sink]) -> None:
        """Route ``component``'s queued results to ``sinks`` (by sink name) from now on."""
        for name, sink in sinks.items():
            self._sinks.setdefault(name, {})[component] = sink
            if name not in self.health:
                self.health[name] = self._new_health()
        self._wake.set()

    def _new_health(self) -> SinkHealth:
        return SinkHealth(backoff=Backoff(base=min(0.5, self._retry_max), cap=self._retry_max))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="syncer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _lane(self, name: str, component: str) -> _Lane:
        return self._lanes.setdefault((name, component), _Lane())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            busy = False
            now = time.monotonic()
            for name in list(self._sinks):
                for component in list(self._sinks[name]):
                    if self._lane(name, component).next_attempt > now:
                        continue
                    busy |= self._drain_lane(name, component)
            if busy:
                continue
            pending = [lane.next_attempt for lane in self._lanes.values()]
            pending = [t for t in pending if t > now]
            timeout = max(0.05, min(pending) - time.monotonic()) if pending else 5.0
            self._wake.wait(timeout)

    def drain_once(self, name: str) -> bool:
        """Write one batch per component lane of sink ``name``; True if rows were written."""
        wrote = False
        for component in list(self._sinks.get(name, {})):
            wrote |= self._drain_lane(name, component)
        return wrote

    def _drain_lane(self, name: str, component: str) -> bool:
        sink = self._sinks[name].get(component)
        if sink is None:
            return False
        try:
            rows = self._store.seal(name, component, self._batch, self._batch_bytes)
            if not rows:
                return False
            records: list[ResultRecord] = []
            ids: list[int] = []
            for row in rows:
                try:
                    records.append(ResultRecord.from_json(row.record))
                    ids.append(row.id)
                except ValidationError:
                    log.error("dropping unreadable outbox row %d for %s", row.id, name)
                    self._store.outbox_delete([row.id])
            if records:
                sink.write(records)
            self._store.outbox_delete(ids)
        except (CloudError, OSError) as exc:  # OSError: the local sink's disk (EIO, ENOSPC)
            self._failed(name, component, str(exc))
            return False
        except Exception:  # a bug in one sink must not stop the others
            log.exception("sync of %s to %s failed unexpectedly", component, name)
            self._failed(name, component, "internal error")
            return False
        self._succeeded(name, component, len(records))
        return bool(records)

    def _succeeded(self, name: str, component: str, count: int) -> None:
        lane = self._lane(name, component)
        lane.failures, lane.next_attempt, lane.error = 0, 0.0, None
        health = self.health[name]
        health.last_success = time.time()
        health.written += count
        if not any(
            lane.error for (sink, _), lane in self._lanes.items() if sink == name
        ):
            health.last_error = None
            health.failures = 0
            health.next_attempt = 0.0
            health.backoff.reset()

    def _failed(self, name: str, component: str, error: str) -> None:
        lane = self._lane(name, component)
        lane.failures += 1
        lane.error = error
        health = self.health[name]
        health.failures += 1
        health.last_error = error
        delay = health.backoff.next_delay(lane.failures - 1)
        lane.next_attempt = time.monotonic() + delay
        health.next_attempt = lane.next_attempt
        log.warning(
            "sync of %s to %s failed (%s); retrying in %.1fs", component, name, error, delay
        )

    def snapshot(self) -> dict[str, Any]:
        """Per sink: backlog (records, bytes, oldest_age_s), written, dropped, last
        success and last error (None once every lane of the sink is healthy again)."""
        stats = self._store.outbox_stats()
        dropped = self._store.dropped()
        out: dict[str, Any] = {}
        for name in sorted(set(self.health) | set(stats) | set(dropped)):
            health = self.health.get(name, SinkHealth())
            out[name] = {
                **stats.get(name, {"records": 0, "bytes": 0, "oldest_age_s": 0.0}),
                "written": health.written,
                "dropped": dropped.get(name, 0),
                "last_success": health.last_success,
                "last_error": health.last_error,
            }
        return out
