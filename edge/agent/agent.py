"""The device agent: broker -> intake -> function -> results -> outbox -> cloud.

This module wires the rooms together and owns the order of operations that
the delivery guarantees rest on:

1. a trigger message is recorded in the store (one row per matching component);
2. only after that commit is it acknowledged to the broker and queued to its
   component;
3. the result is published on the output topics, then, in one transaction,
   the intake row is deleted and the result enters the outbox;
4. the syncer drains the outbox into S3 and DynamoDB with idempotent writes.

A crash between any two steps either re-runs the invocation (same
deterministic request id and result id) or has nothing left to do.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge import __version__
from edge.agent.component import ComponentRunner, Finished
from edge.agent.store import IntakeRecord, OutboxEntry, Store
from edge.agent.syncer import Syncer
from edge.model.component import ComponentManifest
from edge.model.device import DeviceConfig
from edge.model.topics import matches, minimal_filters
from edge.mqtt.bus import Bus, Message
from edge.sync.sinks import Sink

log = logging.getLogger(__name__)

SinkFactory = Callable[[ComponentManifest], Mapping[str, Sink]]


def status_topic(thing: str) -> str:
    return f"edge/{thing}/status"


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
        stop_timeout: float | None = None,
    ) -> None:
        self.device = device
        self.thing = device.thing_name
        self.bus = bus
        self.data_dir = data_dir
        self._heartbeat = heartbeat
        self._started_at = time.time()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(data_dir / "agent.db", fsync=fsync)
        self.epoch = _epoch(data_dir)
        self._accepting = threading.Event()
        self._stopped = threading.Event()
        self.runners: dict[str, ComponentRunner] = {}
        sinks: dict[str, dict[str, Sink]] = {}
        for manifest in components:
            self.runners[manifest.name] = ComponentRunner(
                manifest,
                device=device.name,
                thing=self.thing,
                epoch=self.epoch,
                on_finished=self._finished,
                environment={"AWS_REGION": device.cloud.region,
                             "AWS_DEFAULT_REGION": device.cloud.region},
            )
            for sink_name, sink in sink_factory(manifest).items():
                sinks.setdefault(sink_name, {})[manifest.name] = sink
        self._stop_timeout = stop_timeout if stop_timeout is not None else max(
            [r.manifest.limits.timeout for r in self.runners.values()] + [1.0]
        ) + 2.0
        self._sink_names = {
            name: tuple(sorted(s for s, by_comp in sinks.items() if name in by_comp))
            for name in self.runners
        }
        self.syncer = Syncer(self.store, sinks)
        self._filters: list[tuple[str, str]] = []  # (rendered filter, component)
        for runner in self.runners.values():
            for topic_filter, _ in runner.trigger_encodings:
                self._filters.append((topic_filter, runner.manifest.name))
        self._status_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.store.start()
        self.syncer.start()
        for runner in self.runners.values():
            runner.start()
        # Whatever a crash left recorded but unfinished runs again first, in order.
        for record in self.store.pending():
            self._dispatch(record)
        self._accepting.set()
        self.bus.on_connection_change(self._on_connection)
        for topic_filter in minimal_filters(f for f, _ in self._filters):
            self.bus.subscribe(topic_filter, self._on_trigger, qos=1)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()

    def stop(self) -> None:
        """Graceful stop: no new intake; in-flight invocations finish; queued ones stay
        pending in the store and run at the next start."""
        self._accepting.clear()
        for runner in self.runners.values():
            runner.stop(self._stop_timeout)
        self.store.close()
        self.syncer.stop()
        self._stopped.set()
        try:
            self.bus.publish(
                status_topic(self.thing), self._status_doc("offline"), retain=True, timeout=2
            )
        except Exception as exc:  # the broker may be gone; the last will covers it
            log.info("could not publish offline status: %s", exc)

    # -- intake ------------------------------------------------------------------------
    def _on_trigger(self, message: Message) -> None:
        if not self._accepting.is_set():
            return  # not acknowledged: the broker redelivers it after restart
        targets = sorted({c for f, c in self._filters if matches(f, message.topic)})
        if not targets:
            self.bus.ack(message)
            return

        def recorded(rows: list[IntakeRecord]) -> None:
            self.bus.ack(message)
            for row in rows:
                self._dispatch(row)

        self.store.record(targets, message.topic, message.payload, message.properties, recorded)

    def _dispatch(self, record: IntakeRecord) -> None:
        runner = self.runners.get(record.component)
        if runner is None:
            log.warning(
                "dropping pending seq %d for component %s, no longer deployed",
                record.seq, record.component,
            )
            self.store.complete(record.seq, [])
            return
        if not runner.submit(record):
            # Stays pending in the store; it runs at the next start.
            log.warning("queue of %s is full; seq %d deferred", record.component, record.seq)

    # -- results -----------------------------------------------------------------------
    def _finished(self, runner: ComponentRunner, done: Finished) -> None:
        record = done.record
        entries: list[OutboxEntry] = []
        if record is not None:
            props = {
                "request-id": record.request_id,
                "component": record.component,
                "seq": str(record.seq),
                "thing": self.thing,
            }
            if record.kind == "result":
                for topic in runner.output_topics:
                    self._publish(topic, record.body, props)
                line = record.to_json()
                entries = [
                    OutboxEntry(sink, record.component, record.result_id, line)
                    for sink in self._sink_names.get(record.component, ())
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
        self.store.complete(done.intake.seq, entries)

    def _publish(self, topic: str, payload: bytes, props: Mapping[str, str]) -> None:
        try:
            self.bus.publish(topic, payload, qos=1, properties=props)
        except Exception as exc:
            log.warning("publish to %s failed: %s", topic, exc)

    # -- status ------------------------------------------------------------------------
    def _on_connection(self, connected: bool) -> None:
        if connected:
            threading.Thread(target=self.publish_status, daemon=True).start()

    def publish_status(self) -> None:
        if self._stopped.is_set():
            return
        try:
            self.bus.publish(status_topic(self.thing), self._status_doc("online"), retain=True)
        except Exception as exc:
            log.info("status not published: %s", exc)

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self._heartbeat):
            self.publish_status()

    def status(self, state: str = "online") -> dict[str, Any]:
        return {
            "schema": 1,
            "state": state,
            "device": self.device.name,
            "thing": self.thing,
            "class": self.device.device_class,
            "groups": list(self.device.groups),
            "agent_version": __version__,
            "uptime_s": round(time.time() - self._started_at, 1),
            "timestamp": time.time(),
            "components": {name: r.snapshot() for name, r in self.runners.items()},
            "outbox": self.syncer.snapshot() if state == "online" else {},
        }

    def _status_doc(self, state: str) -> bytes:
        with self._status_lock:
            return json.dumps(self.status(state), separators=(",", ":")).encode()


def offline_will(device: DeviceConfig) -> bytes:
    """The last will: what the broker publishes on the status topic if we vanish."""
    return json.dumps(
        {"schema": 1, "state": "offline", "device": device.name, "thing": device.thing_name}
    ).encode()


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
