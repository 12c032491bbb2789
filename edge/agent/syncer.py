"""Drains the outbox into the sinks, one sink at a time, oldest first.

A sink that fails (endpoint down, throttled, access denied) backs off on its
own schedule without holding up the others; rows leave the outbox only after
their sink accepted them, and every sink write is idempotent on the record's
deterministic id, so a crash between the write and the delete costs one
harmless rewrite.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.agent.store import OutboxRow, Store
from edge.errors import CloudError, ValidationError
from edge.sync.records import ResultRecord
from edge.sync.retry import Backoff
from edge.sync.sinks import Sink

log = logging.getLogger(__name__)


@dataclass
class SinkHealth:
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: float = 0.0
    written: int = 0
    backoff: Backoff = field(default_factory=Backoff)


class Syncer:
    """``sinks`` maps a sink name ("s3", "dynamodb", "local") to {component: Sink}."""

    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Mapping[str, Sink]],
        *,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._sinks: dict[str, dict[str, Sink]] = {k: dict(v) for k, v in sinks.items()}
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health = {name: SinkHealth() for name in sinks}
        store.on_outbox(self._wake.set)

    def set_sinks(self, component: str, sinks: Mapping[str, Sink]) -> None:
        """Route ``component``'s queued results to ``sinks`` (by sink name) from now on."""
        for name, sink in sinks.items():
            self._sinks.setdefault(name, {})[component] = sink
            self.health.setdefault(name, SinkHealth())
        self._wake.set()

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

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            busy = False
            now = time.monotonic()
            for name in list(self._sinks):
                if self.health[name].next_attempt > now:
                    continue
                try:
                    busy |= self.drain_once(name)
                except Exception:  # a bug in one sink must not stop the others
                    log.exception("sync to %s failed unexpectedly", name)
                    self._failed(name, "internal error")
            if busy:
                continue
            pending = [h.next_attempt for h in self.health.values() if h.next_attempt > now]
            timeout = max(0.05, min(pending) - time.monotonic()) if pending else 5.0
            self._wake.wait(timeout)

    def drain_once(self, name: str) -> bool:
        """Write one batch to sink ``name``; True if rows were written."""
        rows = self._store.outbox_batch(name, self._batch)
        if not rows:
            return False
        by_component: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_component.setdefault(row.component, []).append(row)
        wrote = False
        for component, group in by_component.items():
            sink = self._sinks[name].get(component)
            if sink is None:
                # The component was removed with results still queued: keep them;
                # they sync if it comes back, and the backlog stays visible.
                continue
            records = []
            for row in group:
                try:
                    records.append(ResultRecord.from_json(row.record))
                except ValidationError:
                    log.error("dropping unreadable outbox row %d for %s", row.id, name)
                    self._store.outbox_delete([row.id])
            try:
                sink.write(records)
            except CloudError as exc:
                self._failed(name, str(exc))
                return wrote
            self._store.outbox_delete([r.id for r in group])
            health = self.health[name]
            health.last_success = time.time()
            health.last_error = None
            health.failures = 0
            health.written += len(group)
            health.backoff.reset()
            wrote = True
        return wrote

    def _failed(self, name: str, error: str) -> None:
        health = self.health[name]
        health.failures += 1
        health.last_error = error
        delay = health.backoff.next_delay(health.failures)
        health.next_attempt = time.monotonic() + delay
        log.warning("sync to %s failed (%s); retrying in %.1fs", name, error, delay)

    def snapshot(self) -> dict[str, object]:
        stats = self._store.outbox_stats()
        out: dict[str, object] = {}
        for name, health in self.health.items():
            out[name] = {
                **stats.get(name, {"records": 0, "bytes": 0, "oldest_age_s": 0.0}),
                "written": health.written,
                "last_success": health.last_success,
                "last_error": health.last_error,
            }
        return out
