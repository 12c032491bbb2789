"""The device agent: broker -> intake -> function -> results -> outbox -> cloud.

This module wires the rooms together and owns the order of operations that
the delivery guarantees rest on:

1. a trigger message is recorded in the store (one row per matching component);
2. only after that commit is it acknowledged to the broker and queued to its
   component (a lone message's function may start during the commit, and its
   fsync may finish after it: ``Store.durable`` comes before the acknowledgement,
   and before a result that the sinks will keep is published, see ``_finished``);
3. the result is published on the output topics, then, in one transaction,
   the intake row is deleted and the result enters the outbox;
4. the syncer drains the outbox into S3 and DynamoDB with idempotent writes.

A crash between any two steps either re-runs the invocation (same
deterministic request id and result id) or has nothing left to do.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.agent.component import ComponentRunner, Finished, Started
from edge.agent.intake import Intake
from edge.agent.services import RuntimeOptions, RuntimeServices
from edge.agent.status import SCHEMA_VERSION, StatusReporter
from edge.agent.store import IntakeRecord, OutboxEntry, Store
from edge.agent.syncer import Syncer
from edge.model.component import ComponentManifest
from edge.model.device import DeviceConfig
from edge.model.topics import TopicMemo, matches, minimal_filters
from edge.mqtt.bus import AckBatching, Bus, Interruptible, Message
from edge.sync.sinks import Sink

log = logging.getLogger(__name__)

SinkFactory = Callable[[ComponentManifest], Mapping[str, Sink]]


def _targets_memo(filters: list[tuple[str, str]]) -> TopicMemo[list[str]]:
    """Topic -> the components whose trigger filters (``(filter, component)``) match it."""
    return TopicMemo(lambda topic: sorted({c for f, c in filters if matches(f, topic)}))


@dataclass
class _Receiving:
    """What the receiving thread keeps while intake records a message it may run
    itself (``Agent._on_trigger``)."""

    held: list[IntakeRecord] = field(default_factory=list)  # committed here: run or queue
    started: dict[int, tuple[ComponentRunner, Started]] = field(default_factory=dict)
    acks: list[Message] = field(default_factory=list)  # sent after the results


class Agent:
    def __init__(
        self,
        device: DeviceConfig,
        components: Sequence[ComponentManifest],
        *,
        bus: Bus,
        data_dir: Path,
        sink_factory: SinkFactory,
        fsync: bool = True,
        heartbeat: float = 30.0,
        sync_retry_max: float = 30.0,
        runtime: RuntimeOptions | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        # Called once, from whichever thread found it, when the agent cannot go on
        # keeping its promises (the store's sync failed): ``edge-agent`` stops and
        # exits non-zero, for its supervisor to start it again.
        self._on_fatal = on_fatal
        self.fatal: str | None = None
        self._fatal_lock = threading.Lock()  # not ``_lock``: a stop may hold that
        self.thing = device.thing_name
        self.bus = bus
        self.data_dir = data_dir
        self._sink_factory = sink_factory
        self._started_at = time.time()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(
            data_dir / "agent.db",
            fsync=fsync,
            max_bytes=device.outbox.max_bytes,
            when_full=device.outbox.when_full,
        )
        # Records committed on the bus's receiving thread, kept there to be run by that
        # thread itself once intake has let go of its locks (``_on_trigger``).
        self._interrupts = bus.interrupts if isinstance(bus, Interruptible) else None
        self._work_waits = bus.work_waits if isinstance(bus, Interruptible) else None
        self._here = threading.local()
        self.intake = Intake(
            self.store, bus, self._dispatch, room=self._room_for,
            early=self._start_early if self._interrupts is not None else None,
            ack=self._ack,
            throttled=self._throttled,
        )
        self.store.on_space(self.intake.resume)
        self.store.on_failure(
            lambda why: self._fail(f"store commit failed: {why}; holding results and "
                                   "acknowledgements")  # fmt: skip
        )
        if isinstance(bus, AckBatching):  # a group commit's acknowledgements in one write
            self.store.callback_scope = bus.acks_held
        bus.on_connection_change(self.intake.on_connection)
        self.epoch = _epoch(data_dir)
        self._accepting = threading.Event()
        self._lock = threading.RLock()  # guards runners, filters and subscriptions
        self.runners: dict[str, ComponentRunner] = {}
        self._sink_names: dict[str, tuple[str, ...]] = {}
        self._filters: list[tuple[str, str]] = []  # (rendered filter, component)
        self._targets = _targets_memo(self._filters)  # topic -> components it triggers
        # Replacing a runner re-submits the component's pending records; a record
        # committed before that scan must not also be dispatched by its commit callback.
        self._dispatch_lock = threading.Lock()
        self._dispatch_floor: dict[str, int] = {}
        #: More sections of the status document (the deployer adds ``deployment``).
        self.status_extras: dict[str, Callable[[], Any]] = {}
        self._subscribed: set[str] = set()
        self.syncer = Syncer(self.store, {}, retry_max=sync_retry_max)
        self.status = StatusReporter(bus, self.thing, self.status_doc, heartbeat=heartbeat)
        # Function logs, memory slots, continuations, the Greengrass v1 daemon.
        self.services = RuntimeServices(
            data_dir=data_dir, store=self.store, bus=bus, dispatch=self._dispatch,
            runner_for=self.runners.get, options=runtime,
        )
        for manifest in components:
            self._install(manifest)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.store.start()
        self.syncer.start()
        self.services.start()
        with self._lock:
            # Whatever a crash left recorded but unfinished runs again first, in order
            # (queued before the runners start, so a continuation is known before the
            # re-run of the invocation that asked for it can ask again).
            for record in self.store.pending():
                self._dispatch(record)
            for runner in self.runners.values():
                runner.start()
            self._accepting.set()
            self._resubscribe()
        self.status.start()

    def stop_budget(self) -> float:
        """Seconds a graceful ``stop`` may take: the longest component timeout, its
        grace, and the store's last commit and the offline status."""
        with self._lock:
            longest = max((r.manifest.limits.timeout for r in self.runners.values()), default=0)
        return longest + 2.0 + 10.0

    def stop(self) -> None:
        """Graceful stop: no new intake; in-flight invocations finish; queued ones stay
        pending in the store and run at the next start."""
        self._accepting.clear()
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.request_stop()
        for runner in runners:  # in parallel: the slowest bounds the whole stop
            runner.stop(runner.manifest.limits.timeout + 2.0)
        self.services.stop()
        self.store.close()
        self.syncer.stop()
        self.status.stop()

    # -- components ----------------------------------------------------------------------
    def _install(self, manifest: ComponentManifest) -> ComponentRunner:
        runner = ComponentRunner(
            manifest,
            device=self.device.name,
            thing=self.thing,
            epoch=self.epoch,
            on_finished=self._finished,
            environment={
                "AWS_REGION": self.device.cloud.region,
                "AWS_DEFAULT_REGION": self.device.cloud.region,
                # A folder that survives restarts and redeployments, for handlers that
                # keep state (window aggregates, cursors).
                "EDGE_STATE_DIR": str(self._state_dir(manifest.name)),
                **self.services.environment(manifest),
            },
            on_state_change=lambda _runner, _state: self.status.changed(),
            **self.services.runner_hooks(manifest),
        )
        sinks = dict(self._sink_factory(manifest))
        self.syncer.set_sinks(manifest.name, sinks)
        self._sink_names[manifest.name] = tuple(sorted(sinks))
        self.runners[manifest.name] = runner
        self._set_filters([(f, c) for f, c in self._filters if c != manifest.name] + [
            (topic_filter, manifest.name) for topic_filter, _ in runner.trigger_encodings
        ])
        return runner

    def _set_filters(self, filters: list[tuple[str, str]]) -> None:
        self._filters = filters
        self._targets = _targets_memo(filters)

    def _state_dir(self, component: str) -> Path:
        path = self.data_dir / "state" / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_component(self, manifest: ComponentManifest) -> None:
        """Run ``manifest`` (replacing a running version of it) and subscribe its triggers.

        Records already pending for the component (from before a restart or a
        replacement) run on the new version.
        """
        with self._lock:
            old = self.runners.get(manifest.name)
            if old is not None:
                old.stop(old.manifest.limits.timeout + 2.0)
                # Its last completions may still be on their way to the store: read as
                # pending below, they would run a second time on the new version.
                if not self.store.flush(timeout=10.0):
                    log.warning("store writer busy; %s may re-run its last records",
                                manifest.name)
            with self._dispatch_lock:
                runner = self._install(manifest)
                if self._accepting.is_set():
                    for record in self.store.pending():
                        if record.component == manifest.name:
                            runner.submit(record)
                            self._dispatch_floor[manifest.name] = record.seq
                    runner.start()
            if self._accepting.is_set():
                self._resubscribe()
        self.status.changed()

    def remove_component(self, name: str) -> bool:
        """Stop running ``name``; its queued results still sync, its triggers stop."""
        with self._lock:
            runner = self.runners.pop(name, None)
            if runner is None:
                return False
            self._set_filters([(f, c) for f, c in self._filters if c != name])
            self._resubscribe()
            runner.stop(runner.manifest.limits.timeout + 2.0)
        self.status.changed()
        return True

    def _resubscribe(self) -> None:
        wanted = set(minimal_filters(f for f, _ in self._filters))
        for topic_filter in sorted(wanted - self._subscribed):
            self.bus.subscribe(topic_filter, self._on_trigger, qos=1)
        for topic_filter in sorted(self._subscribed - wanted):
            self.bus.unsubscribe(topic_filter)
        self._subscribed = wanted

    # -- intake ------------------------------------------------------------------------
    def _on_trigger(self, message: Message) -> None:
        if not self._accepting.is_set():
            return  # not acknowledged: the broker redelivers it after restart
        targets = self._targets(message.topic)
        if not targets:
            self.bus.ack(message)
            return
        # Recorded (or parked, unacknowledged, while the store or a ``reject`` queue is
        # full), acknowledged after the commit.
        fds = self._interrupts() if self._interrupts is not None else None
        if fds is None:
            self.intake.accept(message, targets)
            return
        here = self._here.receiving = _Receiving()
        try:
            try:
                self.intake.accept(message, targets)
            finally:
                self._here.receiving = None
            self._here.running = fds  # see _finished
            for record in here.held:
                entry = here.started.pop(record.seq, None)
                if entry is not None:
                    entry[0].finish_now(entry[1], fds, recorded=True)
                else:
                    self._run_here(record, fds)
            for runner, begun in here.started.values():  # started, then its commit failed
                runner.finish_now(begun, fds, recorded=False)
        finally:
            self._here.running = ()
            # The acknowledgement of a message run here goes out after its result: the
            # broker needs it no sooner, and the result no later. (No reconnect can
            # come in between: that happens on this thread.) And only once it is on
            # disk: its commit may have left the fsync to ``durable`` (``Store.record``).
            if here.acks and self._durable():
                for acked in here.acks:
                    self.bus.ack(acked)

    def _receiving(self) -> _Receiving | None:
        return getattr(self._here, "receiving", None)

    def _ack(self, message: Message) -> None:
        here = self._receiving()
        if here is not None:
            here.acks.append(message)
        elif self._durable():
            self.bus.ack(message)

    def _durable(self) -> bool:
        """The store's ``durable``: False if the sync failed. Then nothing may leave for
        what it recorded: unacknowledged, the message comes back from the broker
        (recognised as a redelivery if the record survived); uncompleted, the record
        stays pending and runs again at the next start. A failed sync fails for
        good (``Store.durable``), so the agent stops (``on_fatal``): started
        again, it finds in its store what did reach the disk."""
        try:
            self.store.durable()
        except OSError as exc:
            self._fail(f"store sync failed: {exc}; holding results and acknowledgements")
            return False
        return True

    def _fail(self, reason: str) -> None:
        with self._fatal_lock:
            first = self.fatal is None
            if first:
                self.fatal = reason
        if not first:
            return
        # Nothing new is taken meanwhile: unacknowledged, it comes back after the restart.
        self._accepting.clear()
        log.error("%s; stopping", reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    def _start_early(self, rows: list[IntakeRecord]) -> None:
        """Intake's ``early``: a lone message is about to be committed on the receiving
        thread; start its function now, so it runs during the commit (an fsync) and
        the acknowledgement that follows. ``_on_trigger`` finishes it."""
        here = self._receiving()
        if here is None:
            return
        for row in rows:
            runner = self.runners.get(row.component)
            begun = runner.start_now(row) if runner is not None else None
            if runner is not None and begun is not None:
                here.started[row.seq] = (runner, begun)

    def _run_here(self, record: IntakeRecord, fds: tuple[int, ...]) -> None:
        """Run a record committed on the receiving thread on that thread, when its
        component has a worker idle and the thread nothing else to do; else queue it."""
        with self._dispatch_lock:
            if record.seq <= self._dispatch_floor.get(record.component, 0):
                return  # re-submitted with the pending records of a replacement
            runner = self.runners.get(record.component)
        if runner is None or not runner.run_now(record, fds):
            self._dispatch(record)

    def _room_for(self, targets: Sequence[str], admitted: Mapping[str, int]) -> bool:
        runners = self.runners
        return all(runners[c].accepting(admitted[c]) for c in targets if c in runners)

    def _throttled(self, targets: Sequence[str], admitted: Mapping[str, int]) -> None:
        """Intake held a new message back: one throttle for each target whose queue is
        full under ``reject`` (the status document's ``throttles``)."""
        runners = self.runners
        full = [runners[c] for c in targets if c in runners and not runners[c].accepting(
            admitted.get(c, 0))]
        for runner in full:
            runner.counters.throttles += 1  # only this thread counts them
        if full:
            self.status.changed()

    def _dispatch(self, record: IntakeRecord) -> None:
        with self._dispatch_lock:
            if record.seq > self._dispatch_floor.get(record.component, 0):
                self._dispatch_locked(record)

    def _dispatch_locked(self, record: IntakeRecord) -> None:
        here = self._receiving()
        if here is not None:  # committed inline by the receiving thread: see _on_trigger
            here.held.append(record)
            return
        runner = self.runners.get(record.component)
        if runner is None:
            # Not deployed (yet): the record stays pending and runs when it is.
            log.warning(
                "seq %d waits for component %s, which is not running",
                record.seq, record.component,
            )
            return
        if not runner.submit(record):
            # Stays pending in the store; it runs at the next start.
            log.warning("queue of %s is full; seq %d deferred", record.component, record.seq)

    # -- results -----------------------------------------------------------------------
    def _finished(self, runner: ComponentRunner, done: Finished) -> None:
        record = done.record
        result = record is not None and record.kind == "result"
        sinks = self._sink_names.get(done.intake.component, ()) if result else ()
        # A result bound for the sinks leaves once its trigger is on disk: what a
        # subscriber saw then also reaches the sinks, however the power goes. One that
        # nothing on the device keeps (no sinks; an error record) leaves at once and
        # the disk is waited for after it, while it travels: only the acknowledgement
        # must wait (``_on_trigger``). A power cut in between loses nothing the device
        # had accepted: the broker still holds the unacknowledged message.
        if sinks and not self._durable():
            return  # neither published nor completed (see ``_durable``)
        entries: list[OutboxEntry] = []
        if record is not None:
            props = {
                "request-id": record.request_id,
                "component": record.component,
                "seq": str(record.seq),
                "thing": self.thing,
            }
            if result:
                for topic in runner.output_topics:
                    self._publish(topic, record.body, props)
                if sinks:
                    line = record.to_json()
                    entries = [
                        OutboxEntry(sink, record.component, record.result_id, line)
                        for sink in sinks
                    ]
            else:
                self._publish(runner.errors_topic, record.body, props)
                err = done.outcome.error or {}
                log.warning(
                    "invocation failed: %s: %s",
                    err.get("errorType"), err.get("errorMessage"),
                    extra={"component": record.component, "request_id": record.request_id,
                           "topic": record.topic},
                )
        if not sinks and not self._durable():
            return  # published, not completed: it runs again at the next start
        # Committed on this thread if the store's writer is idle (``Store.complete``),
        # except on the receiving thread (one that ran a lone message itself) while a
        # message waits for it: reading that comes first. Not for the PUBACK of the
        # result just published, which is there by now: for it, waking the writer
        # would cost more than the commit, and the next message would find it busy.
        on_receiving = bool(getattr(self._here, "running", ()))
        here = not (on_receiving and self._work_waits is not None and self._work_waits())
        self.store.complete(done.intake.seq, entries, here=here)

    def _publish(self, topic: str, payload: bytes, props: Mapping[str, str]) -> None:
        try:
            self.bus.publish(topic, payload, qos=1, properties=props)
        except Exception as exc:
            log.warning("publish to %s failed: %s", topic, exc)

    # -- status ------------------------------------------------------------------------
    def status_doc(self, state: str = "online") -> dict[str, Any]:
        with self._lock:
            components = {name: r.snapshot() for name, r in self.runners.items()}
        doc: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "state": state,
            "device": self.device.name,
            "thing": self.thing,
            "class": self.device.device_class,
            "platform": {
                "os": self.device.platform.os,
                "architecture": self.device.platform.architecture,
            },
            "groups": list(self.device.groups),
            "agent_version": __version__,
            "uptime_s": round(time.time() - self._started_at, 1),
            "timestamp": time.time(),
            "components": components,
        }
        if self.fatal is not None:
            doc["fatal"] = self.fatal
        for key, build in self.status_extras.items():
            doc[key] = build()
        if state == "online":
            doc["outbox"] = self.syncer.snapshot()
            doc["intake"] = {**self.store.intake_stats(), "parked": self.intake.parked}
        return doc


def _epoch(data_dir: Path) -> str:
    """A random id minted once per data dir, mixed into result ids: a device whose
    disk was wiped restarts its sequence numbers but never overwrites old results."""
    path = data_dir / "epoch"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_hex(8)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return value
