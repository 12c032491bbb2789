"""Runs one component on the device: its queue of intake records and its workers.

Every record handed to ``submit`` is already durable in the store, so nothing
here needs to be: a crash loses only in-memory queue entries, which the agent
re-reads from the store's pending rows at start-up.

A record may also be run by the thread that received it (``run_now``, or
``start_now`` then ``finish_now``): when a worker is idle and nothing is queued,
the MQTT network thread sends the invocation and waits for the result itself,
for as long as it has nothing else to do, instead of waking the worker's thread
to do that (the worker's thread sleeps on, and takes the invocation over on
any interrupt). ``start_now`` may take a record whose commit is still under way
(``Store.record``'s ``early``): ``finish_now`` is told whether the commit
landed, and the outcome of one that did not is dropped.

The pool follows the Greengrass Lambda parameters (``limits`` in the
manifest): a ``pinned`` component starts one long-lived worker with the
component; workers scale up to ``max_instances`` while the queue is deeper than
the idle workers can take, and the extra (or, unpinned, all) workers exit after
``idle_timeout`` without work. The queue holds ``max_queue`` records; when it
is full, ``reject`` refuses new messages at intake (the broker keeps them) and
``drop-oldest`` completes the oldest queued record unrun (``on_dropped``) and
counts it.

Lifecycle states follow Greengrass: NEW, INSTALLED, STARTING, RUNNING,
STOPPING, FINISHED, ERRORED (a worker failed to start or died) and BROKEN
(three worker failures in a row without a good invocation between them: the
component stops starting workers; its records stay pending in the store until
it is redeployed or the agent restarts). A handler that raises is not a
worker failure, and neither is a timeout.

Continuations (``context.invoke_self``) are recorded by the agent
(``ContinuationRecorder``) before the handler goes on; a continuation does not
run until the invocation that asked for it has finished, so a re-run of that
invocation after a crash finds it still pending and replaces it instead of
adding a second one: each continuation exists exactly once.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from edge.agent.store import IntakeRecord
from edge.agent.worker import (
    CallHandler,
    InFlight,
    MemorySlot,
    Outcome,
    Worker,
    WorkerDied,
    worker_spec,
)
from edge.model.component import ComponentManifest
from edge.model.topics import TopicMemo, matches, render
from edge.sync.records import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    IdMinter,
    ResultRecord,
)

log = logging.getLogger(__name__)

# Restarting a worker that keeps failing: back off up to this long.
MAX_RESTART_BACKOFF = 30.0
# Worker failures in a row that make a component BROKEN (Greengrass: 3).
BROKEN_AFTER = 3
# Intake record properties the agent sets on records it makes itself.
PROP_PARENT = "edge-parent"  # the seq of the invocation that asked for a continuation
PROP_CONTINUATION = "edge-continuation"  # "<parent seq>:<n>", n-th call in that invocation
PROP_ENCODING = "edge-encoding"  # json | binary, overriding the trigger's encoding

STATES = (
    "NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING", "FINISHED", "ERRORED", "BROKEN",
)
# Errors that say the worker (not the handler) failed.
WORKER_FAILURES = frozenset(
    {
        "Runtime.ExitError",
        "Runtime.OutOfMemory",
        "Runtime.ProtocolError",
        "Runtime.InitError",
        "Runtime.InitTimeout",
        "Runtime.ImportModuleError",
        "Runtime.HandlerNotFound",
        "Runtime.UnknownRuntime",
        "Runtime.WorkerDied",
    }
)


@dataclass
class Counters:
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    worker_restarts: int = 0
    out_of_memory: int = 0
    dropped: int = 0
    throttles: int = 0  # new messages held back at intake: the queue full under reject
    continuations: int = 0
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
            "out_of_memory": self.out_of_memory,
            "dropped": self.dropped,
            "throttles": self.throttles,
            "continuations": self.continuations,
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
StateHandler = Callable[["ComponentRunner", str], None]
DroppedHandler = Callable[["ComponentRunner", IntakeRecord], None]
# (component, request id, line) -> None: the function's own output.
OutputHandler = Callable[[str, str, str], None]


class ContinuationRecorder:
    """What the agent provides for ``invoke_self``: durably record one continuation.

    ``record`` blocks until the new intake row is committed and returns it;
    ``replaces`` (a still-pending continuation made by an earlier run of the
    same invocation) is completed unrun in the same ordered write stream.
    """

    def record(
        self,
        component: str,
        topic: str,
        payload: bytes,
        properties: dict[str, str],
        replaces: IntakeRecord | None,
    ) -> IntakeRecord:
        raise NotImplementedError


# The longest a trigger's thread waits for a result it runs itself (``run_now``) before
# it leaves the rest of the invocation to the worker's own thread.
RUN_NOW_WAIT = 0.5


@dataclass
class _Invocation:
    """One record's invocation: what sending it, and finishing it on whichever thread
    reads the outcome (``start_now`` may hand it to the worker's own thread), needs."""

    item: IntakeRecord
    request_id: str
    started: float
    sent: InFlight | None = None
    first: tuple[dict[str, Any], bytes] | None = None  # its first frame, already read
    discard: bool = False  # its record was never committed: drop the outcome


@dataclass(eq=False)
class _Slot:
    """One serving thread's worker, as other threads may see it while the thread is idle.

    ``lent``: another thread (``run_now``) is using the worker; the serving thread
    waits, and gets it back idle or with a ``handoff`` to finish.
    """

    worker: Worker | None = None
    pinned: bool = False
    lent: bool = False
    handoff: _Invocation | None = None
    returned_at: float = 0.0


@dataclass(frozen=True)
class Started:
    """An invocation ``start_now`` sent, for ``finish_now``."""

    slot: _Slot
    worker: Worker
    invocation: _Invocation


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
        on_state_change: StateHandler | None = None,
        on_dropped: DroppedHandler | None = None,
        on_output: OutputHandler | None = None,
        continuations: ContinuationRecorder | None = None,
        memory_slot: Callable[[], MemorySlot | None] | None = None,
        python_path: tuple[str, ...] = (),
    ) -> None:
        self.manifest = manifest
        self.device = device
        self.thing = thing
        self._epoch = epoch
        self._ids = IdMinter(thing, manifest.name, epoch)
        self._on_finished = on_finished
        self._on_state_change = on_state_change
        self._on_dropped = on_dropped
        self._on_output = on_output
        self._continuations = continuations
        self._memory_slot = memory_slot
        self._clock = clock
        self.counters = Counters()
        self.state = "NEW"
        self._queue: collections.deque[IntakeRecord] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lendable: list[_Slot] = []  # slots of idle serving threads with a worker
        self._lent = 0
        # Lone invocations whose slot is given back but which are still being concluded
        # on the receiving thread (``finish_now``): ``stop`` waits for them too.
        self._concluding = 0
        self._stopping = False
        self._stop_event = threading.Event()
        self._restart_backoff = 0.0
        self._failures_in_a_row = 0
        self._reported = (0, 0, 0, 0)
        # Continuation bookkeeping: records submitted and not finished, by seq; the
        # continuations waiting for their parent; and continuation key -> record.
        self._inflight: set[int] = set()
        self._held: dict[int, list[IntakeRecord]] = {}
        self._keys: dict[str, IntakeRecord] = {}
        self._watchers: dict[int, Future[Outcome]] = {}
        self.spec = worker_spec(
            manifest, thing=thing, device=device, environment=environment,
            enforce_memory=True, python_path=python_path,
        )
        self.output_topics = tuple(
            render(o.topic, thing=thing, component=manifest.name) for o in manifest.outputs
        )
        self.errors_topic = render(manifest.errors_topic, thing=thing, component=manifest.name)
        self.trigger_encodings = tuple(
            (render(t.topic, thing=thing, component=manifest.name), t.encoding)
            for t in manifest.triggers
        )
        # Topic -> the encoding of the first trigger that matches it (json if none).
        self.encoding_for = TopicMemo(
            lambda topic: next(
                (enc for f, enc in self.trigger_encodings if matches(f, topic)), "json"
            )
        )
        self._set_state("INSTALLED")

    # -- lifecycle -------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        with self._cond:
            if self.state == state:
                return
            if self.state == "BROKEN" and state not in ("STOPPING", "FINISHED"):
                return
            self.state = state
        log.info("component %s is %s", self.manifest.name, state,
                 extra={"component": self.manifest.name})
        if self._on_state_change is not None:
            try:
                self._on_state_change(self, state)
            except Exception:
                log.exception("state change hook failed")

    def start(self) -> None:
        self._set_state("STARTING")
        with self._cond:
            limits = self.manifest.limits
            if limits.pinned:
                self._spawn_locked(pinned=True)
            # Records submitted before the start (pending from before a restart).
            wanted = min(len(self._queue), limits.max_instances)
            while len(self._threads) < wanted:
                self._spawn_locked(pinned=False)
        self._set_state("RUNNING")

    def request_stop(self) -> None:
        """Stop taking work, without waiting (``stop`` waits): the agent asks every
        component first, so in-flight invocations finish in parallel."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stop_event.set()
            self._cond.notify_all()
        self._set_state("STOPPING")

    def stop(self, timeout: float) -> None:
        """Stop taking work, let in-flight invocations finish (bounded by ``timeout``)."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._cond.wait_for(
                lambda: not self._concluding, max(0.0, deadline - time.monotonic())
            )
        for future in list(self._watchers.values()):
            future.cancel()
        self._set_state("FINISHED")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def idle(self) -> bool:
        """True when a started worker waits for work (``run_now`` would take a record)."""
        with self._cond:
            return any(slot.worker is not None for slot in self._lendable)

    def accepting(self, admitted: int = 0) -> bool:
        """False when a new message must be held back at intake (full queue under
        ``reject``); ``admitted`` records are on their way to the queue already."""
        return not (
            self.manifest.limits.queue_full == "reject"
            and len(self._queue) + admitted >= self.manifest.limits.max_queue
        )

    def submit(self, record: IntakeRecord) -> bool:
        """Queue a durable intake record; False only when stopping (it stays pending).

        Under ``reject`` a record already on disk is always queued (``accepting``
        keeps new ones out); under ``drop-oldest`` a full queue makes room by
        dropping its oldest record (handed to ``on_dropped``, which completes it
        in the store, and counted). A continuation whose parent is still running
        waits for it.
        """
        dropped: IntakeRecord | None = None
        with self._cond:
            if self._stopping:
                return False
            parent = _int(record.properties.get(PROP_PARENT))
            key = record.properties.get(PROP_CONTINUATION)
            if key:
                self._keys[key] = record
            if parent is not None and parent in self._inflight:
                self._held.setdefault(parent, []).append(record)
                self._inflight.add(record.seq)
                return True
            limits = self.manifest.limits
            if (
                limits.queue_full == "drop-oldest"
                and len(self._queue) >= limits.max_queue
                and self._queue
                and not key
            ):
                dropped = self._queue.popleft()
                self._inflight.discard(dropped.seq)
                self.counters.dropped += 1
            self._enqueue_locked(record)
        if dropped is not None:
            log.warning(
                "queue of %s is full; dropped seq %d (drop-oldest)",
                self.manifest.name, dropped.seq, extra={"component": self.manifest.name},
            )
            if self._on_dropped is not None:
                self._on_dropped(self, dropped)
            self._notify_watcher(dropped.seq, Outcome.failure(
                "Runtime.Dropped", "dropped from a full queue (drop-oldest)"))
        return True

    def _enqueue_locked(self, record: IntakeRecord) -> None:
        self._inflight.add(record.seq)
        self._queue.append(record)
        started = self.state not in ("NEW", "INSTALLED", "STARTING", "BROKEN")
        # Workers already waiting take one record each; start another for the rest.
        if (
            started
            and len(self._queue) > self._idle
            and len(self._threads) < self.manifest.limits.max_instances
        ):
            self._spawn_locked(pinned=False)
        if self._lent:
            self._cond.notify_all()  # a thread waiting for its lent worker is no taker
        else:
            self._cond.notify()

    def watch(self, seq: int) -> Future[Outcome]:
        """A future for the outcome of record ``seq`` (a synchronous local invoke)."""
        future: Future[Outcome] = Future()
        with self._cond:
            self._watchers[seq] = future
        return future

    def _notify_watcher(self, seq: int, outcome: Outcome) -> None:
        with self._cond:
            future = self._watchers.pop(seq, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def _spawn_locked(self, *, pinned: bool) -> None:
        idx = len(self._threads)
        t = threading.Thread(
            target=self._serve, args=(pinned,), name=f"{self.manifest.name}-w{idx}", daemon=True
        )
        self._threads.append(t)
        t.start()

    # -- the worker loop ----------------------------------------------------------------
    def _serve(self, pinned: bool) -> None:
        slot = _Slot(pinned=pinned)
        try:
            if pinned:
                slot.worker = self._prewarm()
            while True:
                handoff: _Invocation | None = None
                with self._cond:
                    self._idle += 1
                    self._lendable.append(slot)
                    waited = time.monotonic()
                    while True:
                        if slot.handoff is not None:  # lent, and given back in flight
                            handoff, slot.handoff = slot.handoff, None
                            break
                        if slot.lent:
                            self._cond.wait()
                            continue
                        if self._queue or self._stopping:
                            self._lendable.remove(slot)
                            self._idle -= 1
                            break
                        since = max(waited, slot.returned_at)
                        remaining = self.manifest.limits.idle_timeout - (time.monotonic() - since)
                        if not pinned and remaining <= 0:
                            self._lendable.remove(slot)
                            self._idle -= 1
                            return
                        self._cond.wait(None if pinned else remaining)
                    if handoff is None:
                        if self._stopping or self.state == "BROKEN":
                            return
                        item = self._queue.popleft()
                if handoff is not None:
                    slot.worker = self._await(slot.worker, handoff)
                else:
                    slot.worker = self._run_one(slot.worker, item)
        finally:
            if slot.worker is not None:
                slot.worker.stop()
            with self._cond:
                current = threading.current_thread()
                if current in self._threads:
                    self._threads.remove(current)

    def run_now(self, record: IntakeRecord, interrupts: Sequence[int]) -> bool:
        """Run ``record`` on the calling thread if a worker is idle and nothing is queued;
        False (nothing done) otherwise, and the caller ``submit``s it.

        For the thread that received the trigger (the MQTT network thread): it has
        nothing else to do until one of ``interrupts`` (its socket, its wake-up
        pipe) turns readable, so it sends the invocation itself and waits for the
        result, instead of waking the worker's thread to do that and that thread
        waking it back to publish: two thread hand-offs and a fight for the
        interpreter lock per message. When an interrupt comes first, when the
        function outlasts ``RUN_NOW_WAIT``, or calls the agent, or logged, the
        worker's own thread is woken to finish the invocation as usual.
        """
        started = self.start_now(record)
        if started is None:
            return False
        self.finish_now(started, interrupts, recorded=True)
        return True

    def start_now(self, record: IntakeRecord) -> Started | None:
        """The first half of ``run_now``: send ``record`` to an idle worker, or None.

        The record need not be committed yet (``Store.record``'s ``early``): the
        function runs while the commit is under way, and ``finish_now`` is told
        whether it landed; nothing leaves the device for the record before that.
        """
        if record.properties.get(PROP_PARENT) or record.properties.get(PROP_CONTINUATION):
            return None  # continuations keep their order rules (``submit``)
        with self._cond:
            if self._stopping or self.state != "RUNNING" or self._queue or not self._lendable:
                return None
            slot = self._lendable[-1]
            worker = slot.worker
            if worker is None or worker.reaped:
                return None
            self._lendable.pop()
            slot.lent = True
            self._lent += 1
            self._idle -= 1
            self._inflight.add(record.seq)
        invocation = self._invocation(record)
        try:
            if not worker.alive():  # died while idle: its own thread replaces it
                raise WorkerDied(Outcome.failure("Runtime.WorkerDied", "worker is not running"))
            self._send(worker, invocation)
        except Exception as exc:
            if not isinstance(exc, WorkerDied):
                log.exception("starting seq %d on %s failed", record.seq, self.manifest.name)
            self._give_back(slot, None)  # a dead worker is replaced by its thread
            with self._cond:
                self._inflight.discard(record.seq)
            return None
        return Started(slot, worker, invocation)

    def finish_now(self, started: Started, interrupts: Sequence[int], *, recorded: bool) -> None:
        """The second half of ``run_now``. ``recorded``: the record's commit landed;
        if not, the outcome is dropped (the broker delivers the message again)."""
        slot, worker, invocation = started.slot, started.worker, started.invocation
        invocation.discard = not recorded
        sent = invocation.sent
        assert sent is not None
        wait = min(RUN_NOW_WAIT, max(0.0, sent.deadline - time.monotonic()))
        try:
            frame = worker.try_result(sent, wait, interrupts)
        except Exception:  # whatever it was, the worker's own thread reads it again
            log.exception("waiting for seq %d on %s failed", invocation.item.seq,
                          self.manifest.name)
            frame = None
        if frame is None or frame[0].get("type") != "result" or frame[0].get("logged") \
                or frame[0].get("fatal"):
            invocation.first = frame
            self._give_back(slot, invocation)
            return
        try:
            outcome = worker.await_outcome(sent, first=frame)  # no I/O: a plain result
        except WorkerDied as died:  # answered out of turn: the worker was killed
            self._give_back(slot, None, concluding=True)  # its thread replaces the worker
            self._conclude_here(None, invocation, died.outcome, died=True)
            return
        self._give_back(slot, None, concluding=True)
        self._conclude_here(worker, invocation, outcome)

    def _conclude_here(
        self,
        worker: Worker | None,
        invocation: _Invocation,
        outcome: Outcome,
        *,
        died: bool = False,
    ) -> None:
        """``_conclude`` on the receiving thread, after the slot went back to its own
        thread (which may take the next record meanwhile): a ``stop`` in between
        waits for it, so a replacement never reads this record as still pending."""
        try:
            self._conclude(worker, invocation, outcome, died=died)
        finally:
            with self._cond:
                self._concluding -= 1
                if self._stopping and not self._concluding:
                    self._cond.notify_all()

    def _give_back(
        self, slot: _Slot, handoff: _Invocation | None, *, concluding: bool = False
    ) -> None:
        with self._cond:
            slot.lent = False
            self._lent -= 1
            self._concluding += concluding
            if handoff is not None:
                slot.handoff = handoff
            else:
                slot.returned_at = time.monotonic()
                self._lendable.append(slot)
                self._idle += 1
            # Its thread sleeps on: woken only when it has something to do (a handoff,
            # queued work, a stop, or an idle timeout to restart), not per message.
            if handoff is not None or self._queue or self._stopping or not slot.pinned:
                self._cond.notify_all()

    def _prewarm(self) -> Worker | None:
        """A pinned component's first worker starts with the component."""
        try:
            return self._ensure_worker(None)
        except WorkerDied as died:
            log.warning(
                "component %s: worker failed to start: %s",
                self.manifest.name, died, extra={"component": self.manifest.name},
            )
            self._worker_failed(died.outcome, restart=False)
            return None

    def _new_worker(self) -> Worker:
        slot = self._memory_slot() if self._memory_slot is not None else None

        def output(line: str, request_id: str) -> None:
            if self._on_output is not None:
                self._on_output(self.manifest.name, request_id, line)
            else:
                log.info("%s", line, extra={"component": self.manifest.name,
                                            "request_id": request_id or None,
                                            "stream": "function"})

        return Worker(self.spec, on_output=output, memory_slot=slot)

    def _ensure_worker(self, worker: Worker | None) -> Worker:
        if worker is not None and worker.alive():
            return worker
        if self._restart_backoff:
            # A crash-looping handler must not spin the CPU; stopping cuts the wait short.
            self._stop_event.wait(self._restart_backoff)
        fresh = self._new_worker()
        fresh.start()
        return fresh

    def _worker_failed(self, outcome: Outcome, *, restart: bool = True) -> None:
        if restart:
            self.counters.worker_restarts += 1
        self._restart_backoff = min(MAX_RESTART_BACKOFF, max(0.1, self._restart_backoff * 2))
        if outcome.error_type == "Runtime.Timeout":
            return
        if outcome.error_type == "Runtime.OutOfMemory":
            self.counters.out_of_memory += 1
        self._failures_in_a_row += 1
        if self._failures_in_a_row >= BROKEN_AFTER:
            log.error(
                "component %s is BROKEN after %d worker failures in a row; last: %s",
                self.manifest.name, self._failures_in_a_row,
                (outcome.error or {}).get("errorMessage"),
                extra={"component": self.manifest.name},
            )
            self._set_state("BROKEN")
        else:
            self._set_state("ERRORED")

    def _run_one(self, worker: Worker | None, item: IntakeRecord) -> Worker | None:
        invocation = self._invocation(item)
        try:
            worker = self._ensure_worker(worker)
            self._send(worker, invocation)
        except WorkerDied as died:
            return self._conclude(None, invocation, died.outcome, died=True)
        return self._await(worker, invocation)

    def _invocation(self, item: IntakeRecord) -> _Invocation:
        return _Invocation(item, self._ids.request_id(item.seq), self._clock())

    def _send(self, worker: Worker, invocation: _Invocation) -> None:
        item = invocation.item
        # A payload that is not JSON on a ``json`` trigger is the runtime's to report
        # (Runtime.InvalidEvent): it parses the event anyway, so the agent does not.
        invocation.sent = worker.send_invoke(
            request_id=invocation.request_id,
            topic=item.topic,
            payload=item.payload,
            encoding=item.properties.get(PROP_ENCODING) or self.encoding_for(item.topic),
            timeout=self.manifest.limits.timeout,
        )

    def _await(self, worker: Worker | None, invocation: _Invocation) -> Worker | None:
        """Read the outcome of ``invocation`` and conclude it; while records are queued,
        the worker gets the next one *before* this one is concluded (published,
        handed to the store), so it runs during that bookkeeping instead of after
        it, and its result is often there by the time this thread asks for it (no
        sleep, no wake-up). Results are still concluded in the order they ran."""
        assert worker is not None
        while True:
            assert invocation.sent is not None
            try:
                outcome = worker.await_outcome(
                    invocation.sent, self._call_handler(invocation), invocation.first
                )
            except WorkerDied as died:
                return self._conclude(None, invocation, died.outcome, died=True)
            following = self._send_next(worker)
            kept = self._conclude(worker, invocation, outcome)
            if following is None:
                return kept
            invocation = following

    def _call_handler(self, invocation: _Invocation) -> CallHandler:
        item, discard = invocation.item, invocation.discard
        return lambda call, body: self._answer_call(item, call, body, discard)

    def _send_next(self, worker: Worker) -> _Invocation | None:
        """Send the next queued record to ``worker``, which just answered (None: there
        is none, or the worker ended, or the component is stopping or broken)."""
        if worker.reaped:
            return None
        with self._cond:
            if not self._queue or self._stopping or self.state == "BROKEN":
                return None
            item = self._queue.popleft()
        invocation = self._invocation(item)
        self._send(worker, invocation)  # a failed write is reported by await_outcome
        return invocation

    def _conclude(
        self,
        worker: Worker | None,
        invocation: _Invocation,
        outcome: Outcome,
        *,
        died: bool = False,
    ) -> Worker | None:
        """Account for one finished invocation and hand its result on (unless
        ``discard``: its record was never committed); the worker to keep (None:
        replace it)."""
        failure: Outcome | None = None  # the worker (not the handler) failed
        if died:
            worker = None
            if outcome.error_type == "Runtime.Timeout":
                self.counters.timeouts += 1
            failure = outcome
        elif worker is None or worker.reaped:  # a fatal outcome (out of memory)
            failure = outcome
            worker = None
        else:
            self._restart_backoff = 0.0
            self._failures_in_a_row = 0
        self.counters.invocations += 1
        self.counters.durations_ms.append(outcome.duration_ms)
        if not outcome.ok:
            self.counters.errors += 1
        if failure is not None:
            self._worker_failed(failure)
        elif self.state == "ERRORED" and self._failures_in_a_row == 0:
            self._set_state("RUNNING")
        item = invocation.item
        if invocation.discard:
            log.warning(
                "seq %d was not recorded (its commit failed) and its outcome is dropped;"
                " the broker delivers the message again", item.seq,
                extra={"component": self.manifest.name},
            )
        else:
            record = self._record_for(item, invocation.request_id, invocation.started, outcome)
            try:
                self._on_finished(self, Finished(item, record, outcome))
            except Exception:
                log.exception("finishing %s seq %d failed", self.manifest.name, item.seq)
        self._release(item)
        self._notify_watcher(item.seq, outcome)
        self._report_if_settled()
        return worker

    def _report_if_settled(self) -> None:
        """When the queue drains after errors, timeouts or drops, tell the status
        reporter (once per burst, not per invocation)."""
        c = self.counters
        if (c.errors, c.timeouts, c.out_of_memory, c.dropped) == self._reported:
            return  # nothing new to tell (every good invocation): no lock taken
        with self._cond:
            if self._queue or self._inflight:
                return
            now = (c.errors, c.timeouts, c.out_of_memory, c.dropped)
            if now == self._reported:
                return
            self._reported = now
        if self._on_state_change is not None:
            try:
                self._on_state_change(self, self.state)
            except Exception:
                log.exception("state change hook failed")

    def _release(self, item: IntakeRecord) -> None:
        """``item`` is finished (its completion is queued in the store): forget it and
        let the continuations it asked for run."""
        with self._cond:
            self._inflight.discard(item.seq)
            key = item.properties.get(PROP_CONTINUATION)
            if key and self._keys.get(key) is item:
                del self._keys[key]
            for child in self._held.pop(item.seq, []):
                if not self._stopping:
                    self._inflight.discard(child.seq)
                    self._enqueue_locked(child)

    # -- calls from the worker ----------------------------------------------------------
    def _answer_call(
        self, item: IntakeRecord, call: dict[str, Any], body: bytes, discard: bool = False
    ) -> tuple[dict[str, Any], bytes]:
        if call.get("op") != "invoke_self":
            return {"ok": False, "error": f"unknown call {call.get('op')!r}"}, b""
        if discard:  # the invocation's own record was never committed
            return {"ok": False, "error": "this invocation was not recorded"}, b""
        if self._continuations is None:
            return {"ok": False, "error": "continuations are not available here"}, b""
        index = int(call.get("index", 0))
        encoding = "binary" if call.get("encoding") == "binary" else "json"
        key = f"{item.seq}:{index}"
        with self._cond:
            earlier = self._keys.get(key)
        props = {PROP_PARENT: str(item.seq), PROP_CONTINUATION: key, PROP_ENCODING: encoding}
        row = self._continuations.record(self.manifest.name, item.topic, body, props, earlier)
        with self._cond:
            if earlier is not None:
                self._inflight.discard(earlier.seq)
                held = self._held.get(item.seq, [])
                if earlier in held:
                    held.remove(earlier)
            self.counters.continuations += 1
        self.submit(row)
        return {"ok": True, "seq": row.seq}, b""

    # -- results --------------------------------------------------------------------------
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
            result_id=self._ids.result_id(item.seq),
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

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.manifest.version,
            "state": self.state,
            "queue_depth": self.queue_depth,
            "workers": len(self._threads),
            **self.counters.snapshot(),
        }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True
