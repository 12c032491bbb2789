"""Runs one component on the device: its queue of intake records and its workers.

Every record handed to ``submit`` is already durable in the store, so nothing
here needs to be: a crash loses only in-memory queue entries, which the agent
re-reads from the store's pending rows at start-up.

Workers scale from one (pinned) up to ``limits.max_instances`` while the queue
is deeper than the idle workers can take, and extra workers exit after
``limits.idle_timeout`` without work.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.agent.store import IntakeRecord
from edge.agent.worker import Outcome, Worker, WorkerDied, WorkerSpec
from edge.model.component import ComponentManifest
from edge.model.topics import render
from edge.sync.records import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    ResultRecord,
    request_id_for,
    result_id_for,
)

log = logging.getLogger(__name__)

# Restarting a worker that keeps failing to start: back off up to this long.
MAX_RESTART_BACKOFF = 30.0


@dataclass
class Counters:
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    worker_restarts: int = 0
    durations_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=512)
    )

    def snapshot(self) -> dict[str, Any]:
        values = sorted(self.durations_ms)

        def pct(p: float) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3)

        return {
            "invocations": self.invocations,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "worker_restarts": self.worker_restarts,
            "duration_ms_p50": pct(50),
            "duration_ms_p99": pct(99),
        }


@dataclass(frozen=True)
class Finished:
    """What the agent must do with one completed invocation."""

    intake: IntakeRecord
    record: ResultRecord | None  # None: the handler returned None
    outcome: Outcome


FinishedHandler = Callable[["ComponentRunner", Finished], None]


class ComponentRunner:
    def __init__(
        self,
        manifest: ComponentManifest,
        *,
        device: str,
        thing: str,
        epoch: str,
        on_finished: FinishedHandler,
        environment: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manifest = manifest
        self.device = device
        self.thing = thing
        self._epoch = epoch
        self._on_finished = on_finished
        self._clock = clock
        self.counters = Counters()
        self.state = "NEW"
        self._queue: collections.deque[IntakeRecord] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._stopping = False
        self._restart_backoff = 0.0
        limits = manifest.limits
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": manifest.name,
            "AWS_LAMBDA_FUNCTION_VERSION": manifest.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(limits.memory_mb),
            "AWS_IOT_THING_NAME": thing,
            "EDGE_COMPONENT": manifest.name,
            "EDGE_DEVICE": device,
        }
        env.update(environment or {})
        env.update(manifest.environment)
        self.spec = WorkerSpec(
            folder=manifest.path,
            handler=manifest.handler,
            function_name=manifest.name,
            function_version=manifest.version,
            language=manifest.language,
            memory_limit_in_mb=limits.memory_mb,
            environment=env,
            invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{manifest.name}",
            log_group_name=f"/edge/{thing}/{manifest.name}",
            log_stream_name=f"{thing}/{manifest.version}",
        )
        self.output_topics = tuple(
            render(o.topic, thing=thing, component=manifest.name) for o in manifest.outputs
        )
        self.errors_topic = render(manifest.errors_topic, thing=thing, component=manifest.name)
        self.trigger_encodings = tuple(
            (render(t.topic, thing=thing, component=manifest.name), t.encoding)
            for t in manifest.triggers
        )

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.state = "STARTING"
        with self._cond:
            self._spawn_locked()
        self.state = "RUNNING"

    def stop(self, timeout: float) -> None:
        """Stop taking work, let in-flight invocations finish (bounded by ``timeout``)."""
        self.state = "STOPPING"
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        self.state = "FINISHED"

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def accepting(self) -> bool:
        """False when a new message must be refused at intake (full queue, ``reject``)."""
        return not (
            self.manifest.limits.queue_full == "reject"
            and len(self._queue) >= self.manifest.limits.max_queue
        )

    def submit(self, record: IntakeRecord) -> bool:
        """Queue a durable intake record; False only while stopping (it stays pending).

        The record is already on disk and acknowledged, so it is never refused for
        lack of room: ``max_queue`` is enforced at intake (``accepting``), before a
        message is recorded. Refusing here would strand it until the next restart.
        """
        with self._cond:
            if self._stopping:
                return False
            self._queue.append(record)
            # Scale up while more records wait than idle workers can take.
            if (
                len(self._queue) > self._idle
                and len(self._threads) < self.manifest.limits.max_instances
            ):
                self._spawn_locked()
            self._cond.notify()
        return True

    def _spawn_locked(self) -> None:
        idx = len(self._threads)
        t = threading.Thread(
            target=self._serve, args=(idx == 0,), name=f"{self.manifest.name}-w{idx}", daemon=True
        )
        self._threads.append(t)
        t.start()

    # -- the worker loop ----------------------------------------------------------------
    def _serve(self, pinned: bool) -> None:
        worker: Worker | None = None
        keep = pinned and self.manifest.limits.pinned
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    waited = time.monotonic()
                    while not self._queue and not self._stopping:
                        remaining = self.manifest.limits.idle_timeout - (
                            time.monotonic() - waited
                        )
                        if not keep and remaining <= 0:
                            self._idle -= 1
                            return
                        self._cond.wait(None if keep else remaining)
                    self._idle -= 1
                    if self._stopping:
                        return
                    item = self._queue.popleft()
                worker = self._run_one(worker, item)
        finally:
            if worker is not None:
                worker.stop()
            with self._cond:
                current = threading.current_thread()
                if current in self._threads:
                    self._threads.remove(current)

    def _ensure_worker(self, worker: Worker | None) -> Worker:
        if worker is not None and worker.alive():
            return worker
        if self._restart_backoff:
            time.sleep(self._restart_backoff)  # a crash-looping handler must not spin the CPU
        fresh = Worker(self.spec, on_log=self._log_line)
        fresh.start()
        return fresh

    def _run_one(self, worker: Worker | None, item: IntakeRecord) -> Worker | None:
        request_id = request_id_for(self.thing, self.manifest.name, item.seq, self._epoch)
        encoding = self._encoding_for(item.topic)
        started = self._clock()
        outcome: Outcome
        if encoding == "json" and not _is_json(item.payload):
            outcome = Outcome.failure(
                "Runtime.InvalidEvent",
                f"payload on topic {item.topic!r} is not JSON ({len(item.payload)} bytes)",
            )
        else:
            try:
                worker = self._ensure_worker(worker)
                outcome = worker.invoke(
                    request_id=request_id,
                    topic=item.topic,
                    payload=item.payload,
                    encoding=encoding,
                    timeout=self.manifest.limits.timeout,
                )
                self._restart_backoff = 0.0
            except WorkerDied as died:
                outcome = died.outcome
                worker = None
                self.counters.worker_restarts += 1
                self._restart_backoff = min(
                    MAX_RESTART_BACKOFF, max(0.1, self._restart_backoff * 2)
                )
                if outcome.error and outcome.error.get("errorType") == "Runtime.Timeout":
                    self.counters.timeouts += 1
        self.counters.invocations += 1
        self.counters.durations_ms.append(outcome.duration_ms)
        if not outcome.ok:
            self.counters.errors += 1
        record = self._record_for(item, request_id, started, outcome)
        try:
            self._on_finished(self, Finished(item, record, outcome))
        except Exception:
            log.exception("finishing %s seq %d failed", self.manifest.name, item.seq)
        return worker

    def _encoding_for(self, topic: str) -> str:
        from edge.model.topics import matches

        for topic_filter, encoding in self.trigger_encodings:
            if matches(topic_filter, topic):
                return encoding
        return "json"

    def _record_for(
        self, item: IntakeRecord, request_id: str, started: float, outcome: Outcome
    ) -> ResultRecord | None:
        if outcome.ok:
            if outcome.content_type == "none":
                return None
            kind = "result"
            content_type = (
                JSON_CONTENT_TYPE
                if outcome.content_type == JSON_CONTENT_TYPE
                else BINARY_CONTENT_TYPE
            )
            body = outcome.body
        else:
            kind = "error"
            content_type = JSON_CONTENT_TYPE
            body = json.dumps(dict(outcome.error or {}), separators=(",", ":")).encode()
        return ResultRecord(
            result_id=result_id_for(self.thing, self.manifest.name, item.seq, self._epoch),
            seq=item.seq,
            device=self.device,
            thing=self.thing,
            component=self.manifest.name,
            component_version=self.manifest.version,
            topic=item.topic,
            request_id=request_id,
            received_at=item.received_at,
            finished_at=max(started, self._clock()),
            kind=kind,
            content_type=content_type,
            body=body,
        )

    def _log_line(self, line: str) -> None:
        log.info("%s", line, extra={"component": self.manifest.name, "stream": "function"})

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.manifest.version,
            "state": self.state,
            "queue_depth": self.queue_depth,
            "workers": len(self._threads),
            **self.counters.snapshot(),
        }


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True
