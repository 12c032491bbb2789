"""``edgectl fleet simulate``: N lightweight devices in one process.

Each simulated device is what the broker, ``fleet status`` and a rollout see
of a real agent, and nothing more:

* its own MQTT connection (client id ``edge-agent-<thing>``) with the same
  last will as a real agent (``state: offline`` retained on its status topic);
* a retained status document (docs/status.md) on connect, on every change and
  on a heartbeat, with synthetic counters, durations and system figures;
* the direct deployment protocol (docs/deploy.md, ``edge.model.deployment``):
  it subscribes to ``edge/<thing>/desired``, verifies the signature when it has
  a key, rejects replays, treats a repeat as a no-op, walks
  ``download -> unpack -> switch -> health`` with a short pause per phase, and
  reports each transition on ``edge/<thing>/deployment`` (retained) and in its
  status document. It downloads nothing: a simulated device trusts the
  artifact reference. With ``fail_rate`` R, each deployment fails its health
  gate with probability R and is ``ROLLED_BACK`` to what ran before.

No worker processes, no store: all devices share one network thread
(``NetLoop``) and all their timers run there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge import __version__
from edge.errors import BrokerError, EdgeError, ValidationError
from edge.fleet.document import status_topic
from edge.fleet.netloop import NetLoop, Timer
from edge.model.deployment import (
    DeploymentReport,
    DesiredState,
    RunningComponent,
    deployment_topic,
    desired_topic,
    parse_desired,
    parse_signed,
    peek_identity,
)
from edge.model.status import STATUS_EXPIRY_S

log = logging.getLogger(__name__)

# An online document goes out as the agent's does, with its expiry (one object for all).
_STATUS_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
_STATUS_PROPERTIES.MessageExpiryInterval = STATUS_EXPIRY_S

SIM_COMPONENT = "com.example.Hello"
RECENT_WINDOW = 300.0
CONNECT_BATCH = 50  # connects per loop turn, so CONNACKs are read while others connect


def fake_sha(name: str, version: str) -> str:
    return hashlib.sha256(f"sim:{name}:{version}".encode()).hexdigest()


@dataclass(frozen=True)
class SimOptions:
    devices: int
    prefix: str = "sim"
    heartbeat: float = 30.0
    fail_rate: float = 0.0
    seed: int = 0
    groups: tuple[str, ...] = ("simulated",)
    #: Seconds each deployment phase takes (download, unpack, switch).
    step: float = 0.2
    #: Multiplies a document's health window (1.0: as the document says).
    health_scale: float = 1.0
    keepalive: int = 30
    components: Mapping[str, str] = field(default_factory=lambda: {SIM_COMPONENT: "1.0.0"})

    def thing(self, index: int) -> str:
        width = max(4, len(str(self.devices)))
        return f"{self.prefix}-{index:0{width}d}"


Verifier = Callable[[Any, str], None]  # (SignedDesired, source) -> None or raise


class SimDevice:
    """One simulated agent; every method runs on the loop thread."""

    def __init__(self, sim: Simulator, index: int) -> None:
        opts = sim.options
        self.sim = sim
        self.thing = opts.thing(index)
        self.rng = random.Random(f"{opts.seed}:{index}")
        self.started = sim.clock()
        self.connected = False
        self.dead = False
        self.running: dict[str, RunningComponent] = {
            name: RunningComponent(version, fake_sha(name, version))
            for name, version in opts.components.items()
        }
        self.counters: dict[str, dict[str, int]] = {}
        self.states: dict[str, str] = {}  # component -> lifecycle state, RUNNING when absent
        self.history: dict[str, list[tuple[float, int, int]]] = {}  # (t, invocations, errors)
        self.report: DeploymentReport | None = None
        self.finished: list[dict[str, Any]] = []  # finished reports, newest first
        self.applied: str | None = None
        self.accepted: tuple[int, str] = (0, "")
        self._flight: list[Timer] = []
        self._heartbeat: Timer | None = None
        self.published = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-agent-{self.thing}",
            protocol=mqtt.MQTTv5,
        )
        self.client.will_set(status_topic(self.thing), self.will(), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._first_mid: int | None = None
        self.client.max_inflight_messages_set(100)
        sim.loop.attach(self.client)

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> None:
        if self.dead:
            return
        try:
            self.client.connect(self.sim.host, self.sim.port, keepalive=self.sim.options.keepalive)
        except OSError as exc:
            log.debug("%s: connect failed: %s", self.thing, exc)
            self.sim.loop.call_later(1.0 + self.rng.random(), self.reconnect)

    def reconnect(self) -> None:
        if self.dead or self.sim.stopping:
            return
        try:
            self.client.reconnect()
        except OSError:
            self.sim.loop.call_later(2.0 + self.rng.random() * 2, self.reconnect)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused: %s", self.thing, reason)
            return
        self.connected = True
        client.subscribe(desired_topic(self.thing), qos=1)
        self.publish_status()
        if self._heartbeat is None:
            first = self.rng.uniform(0, self.sim.options.heartbeat)
            self._heartbeat = self.sim.loop.call_later(first, self._beat)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self.connected
        self.connected = False
        if was and not self.dead and not self.sim.stopping:
            self.sim.loop.call_later(1.0 + self.rng.random(), self.reconnect)

    def set_state(self, component: str, state: str) -> None:
        """A lifecycle change (``ERRORED``, ``RUNNING``): reported at once, as agents do."""
        self.states[component] = state
        self.publish_status()

    def drop(self) -> None:
        """Vanish without a DISCONNECT (a crash or a power cut): the broker fires the will."""
        self.dead = True
        self.connected = False
        for timer in (*self._flight, self._heartbeat):
            if timer is not None:
                timer.cancel()
        self.sim.loop.detach(self.client)
        sock = self.client.socket()
        if sock is not None:
            try:
                self.sim.loop._closed(self.client, None, sock)
                sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        """A clean stop, as the agent does on SIGTERM: retained ``offline``, then DISCONNECT."""
        if self.connected:
            self.client.publish(
                status_topic(self.thing), self.document("offline"), qos=1, retain=True
            )
            self.client.disconnect()

    # -- status ----------------------------------------------------------------------------
    def will(self) -> bytes:
        return json.dumps(
            {
                "schema": 1,
                "state": "offline",
                "device": self.thing,
                "thing": self.thing,
                "will": True,
            }
        ).encode()

    def _beat(self) -> None:
        if self.dead:
            return
        self._tick()
        if self.connected:
            self.publish_status()
        self._heartbeat = self.sim.loop.call_later(self.sim.options.heartbeat, self._beat)

    def _tick(self, errors: int = 0, name: str | None = None) -> None:
        """Synthetic traffic since the last heartbeat (and ``errors`` failed invocations)."""
        now = self.sim.clock()
        for cname in self.running:
            c = self.counters.setdefault(cname, {"invocations": 0, "errors": 0, "timeouts": 0})
            c["invocations"] += self.rng.randint(0, 20) + (errors if cname == name else 0)
            if cname == name:
                c["errors"] += errors
            hist = self.history.setdefault(cname, [])
            hist.append((now, c["invocations"], c["errors"]))
            while len(hist) > 2 and hist[1][0] <= now - RECENT_WINDOW:
                hist.pop(0)

    def _recent(self, name: str) -> dict[str, Any]:
        c = self.counters.get(name, {"invocations": 0, "errors": 0})
        hist = self.history.get(name) or [(self.sim.clock(), 0, 0)]
        base = hist[0]
        return {
            "window_s": RECENT_WINDOW,
            "invocations": c["invocations"] - base[1],
            "errors": c["errors"] - base[2],
            "timeouts": 0,
            "throttles": 0,
        }

    def document(self, state: str = "online") -> bytes:
        now = self.sim.clock()
        opts = self.sim.options
        components: dict[str, Any] = {}
        for name, running in sorted(self.running.items()):
            c = self.counters.get(name, {"invocations": 0, "errors": 0, "timeouts": 0})
            p50 = round(self.rng.uniform(0.5, 5.0), 3)
            components[name] = {
                "version": running.version,
                "sha256": running.sha256,
                "state": self.states.get(name, "RUNNING"),
                "queue_depth": 0,
                "workers": 1,
                "invocations": c["invocations"],
                "errors": c["errors"],
                "timeouts": c.get("timeouts", 0),
                "throttles": 0,
                "worker_restarts": 0,
                "duration_ms_p50": p50,
                "duration_ms_p99": round(p50 * self.rng.uniform(2, 4), 3),
                "recent": self._recent(name),
            }
        doc: dict[str, Any] = {
            "schema": 1,
            "state": state,
            "device": self.thing,
            "thing": self.thing,
            "class": "generic-linux",
            "platform": {"os": "linux", "architecture": "x86_64"},
            "groups": list(opts.groups),
            "agent_version": f"{__version__}+sim",
            "uptime_s": round(now - self.started, 1),
            "timestamp": now,
            "heartbeat_s": opts.heartbeat,
            **({"expiry_s": STATUS_EXPIRY_S} if state == "online" else {}),
            "simulated": True,
            "components": components,
            "deployment": self.report.to_json() if self.report else None,
            "deployments": self.finished,
        }
        if state == "online":
            doc["outbox"] = {
                "s3": {
                    "records": self.rng.randint(0, 3),
                    "bytes": 0,
                    "oldest_age_s": 0.0,
                    "written": 0,
                    "dropped": 0,
                    "last_success": now,
                    "last_error": None,
                }
            }
            doc["system"] = {
                "cpu_percent": round(self.rng.uniform(0.2, 3.0), 2),
                "memory_rss_bytes": self.rng.randint(28, 40) * 1_000_000,
                "workers": {
                    "count": len(self.running),
                    "memory_rss_bytes": 18_000_000 * len(self.running),
                    "cpu_percent": round(self.rng.uniform(0, 5.0), 2),
                },
                "disk_free_bytes": 12_000_000_000,
                "disk_total_bytes": 32_000_000_000,
            }
        return json.dumps(doc, separators=(",", ":")).encode()

    def publish_status(self) -> None:
        if self.connected:
            info = self.client.publish(status_topic(self.thing), self.document(), qos=1,
                                       retain=True, properties=_STATUS_PROPERTIES)  # fmt: skip
            if self._first_mid is None:
                self._first_mid = info.mid
            self.published += 1
            self.sim.published += 1

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if mid == self._first_mid:
            # The broker holds our first status document: the device is visible.
            self.sim.on_connected(self)

    # -- deployments -------------------------------------------------------------------------
    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == desired_topic(self.thing) and msg.payload:
            self.on_desired(bytes(msg.payload))

    def on_desired(self, payload: bytes) -> None:
        source = desired_topic(self.thing)
        try:
            signed = parse_signed(payload, source=source)
            if self.sim.verify is not None:
                self.sim.verify(signed, source)
            desired = parse_desired(signed.document, source=source)
            if desired.thing != self.thing:
                raise ValidationError(
                    f"addressed to {desired.thing!r}, this device is {self.thing!r}",
                    source=source,
                    field="document.thing",
                )
        except EdgeError as exc:
            self._reject(payload, str(exc))
            return
        seq, ident = self.accepted
        if desired.sequence == seq and desired.deployment_id == ident:
            return  # a repeat: nothing to do
        if desired.sequence <= seq:
            self._reject(
                payload,
                f"replayed document: sequence {desired.sequence} is not newer "
                f"than the accepted {seq}",
            )
            return
        self.accepted = (desired.sequence, desired.deployment_id)
        if self._flight and self.report is not None and not self.report.final:
            for timer in self._flight:
                timer.cancel()
            self._publish_report(
                self.report.evolve(
                    state="FAILED",
                    phase=None,
                    reason=f"superseded by {desired.deployment_id}",
                    updated_at=self.sim.clock(),
                )
            )
        self._flight = []
        self._apply(desired)

    def _reject(self, payload: bytes, reason: str) -> None:
        ident, seq = peek_identity(payload)
        now = self.sim.clock()
        self._publish_report(
            DeploymentReport(
                thing=self.thing,
                deployment_id=ident,
                sequence=seq,
                state="FAILED",
                reason=reason,
                started_at=now,
                updated_at=now,
                running=dict(self.running),
                applied=self.applied,
            )
        )

    def _apply(self, desired: DesiredState) -> None:
        now = self.sim.clock()
        report = DeploymentReport(
            thing=self.thing,
            deployment_id=desired.deployment_id,
            sequence=desired.sequence,
            state="IN_PROGRESS",
            phase="download",
            started_at=now,
            updated_at=now,
            running=dict(self.running),
            applied=self.applied,
            rollout=desired.rollout,
        )
        wanted = {
            n: RunningComponent(c.version, c.artifact.sha256) for n, c in desired.components.items()
        }
        if wanted == self.running:
            self.applied = desired.deployment_id
            self._publish_report(
                report.evolve(
                    state="SUCCEEDED", phase=None, applied=self.applied, reason="already running"
                )
            )
            return
        changed = sorted(n for n, c in wanted.items() if self.running.get(n) != c)
        total = sum(desired.components[n].artifact.size for n in changed)
        fails = self.rng.random() < self.sim.options.fail_rate
        step = self.sim.options.step
        previous = dict(self.running)
        self._publish_report(report.evolve(transfer=(0, total)))

        def phase(name: str, **extra: Any) -> Callable[[], None]:
            def go() -> None:
                assert self.report is not None
                self._publish_report(
                    self.report.evolve(phase=name, updated_at=self.sim.clock(), **extra)
                )

            return go

        def switch() -> None:
            self.running = wanted
            phase("health", running=dict(wanted), transfer=None)()

        def finish() -> None:
            assert self.report is not None
            now = self.sim.clock()
            if fails:
                name = changed[0] if changed else next(iter(wanted), SIM_COMPONENT)
                version = wanted[name].version if name in wanted else ""
                self._tick(errors=3, name=name)
                self.running = previous
                self._publish_report(
                    self.report.evolve(
                        state="ROLLED_BACK",
                        phase=None,
                        updated_at=now,
                        running=dict(previous),
                        reason=f"health gate: {name} {version}: 3 failed invocations "
                        "in the health window (simulated)",
                    )
                )
            else:
                self.applied = desired.deployment_id
                self._publish_report(
                    self.report.evolve(
                        state="SUCCEEDED", phase=None, updated_at=now, applied=self.applied
                    )
                )
            self._flight = []

        window = desired.health_window * self.sim.options.health_scale
        loop = self.sim.loop
        self._flight = [
            loop.call_later(step, phase("download", transfer=(total, total))),
            loop.call_later(2 * step, phase("unpack", transfer=None)),
            loop.call_later(3 * step, phase("switch")),
            loop.call_later(3 * step + step / 2, switch),
            loop.call_later(3 * step + step / 2 + window, finish),
        ]

    def _publish_report(self, report: DeploymentReport) -> None:
        self.report = report
        if report.final:
            self.finished = [report.to_json(), *self.finished][:10]
        if self.connected:
            self.client.publish(deployment_topic(self.thing), report.to_bytes(), qos=1, retain=True)
        self.publish_status()


class Simulator:
    def __init__(
        self,
        host: str,
        port: int,
        options: SimOptions,
        *,
        verify: Verifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if options.devices < 1:
            raise ValidationError(f"--devices: {options.devices} is not a positive number")
        if not 0.0 <= options.fail_rate <= 1.0:
            raise ValidationError(f"--fail-rate: {options.fail_rate} is not between 0 and 1")
        self.host = host
        self.port = port
        self.options = options
        self.verify = verify
        self.clock = clock
        self.loop = NetLoop()
        self.stopping = False
        self.published = 0
        self._up: set[str] = set()
        self._cond = threading.Condition()
        self.devices = [SimDevice(self, i) for i in range(1, options.devices + 1)]
        self.by_thing = {d.thing: d for d in self.devices}

    def on_connected(self, device: SimDevice) -> None:
        with self._cond:
            self._up.add(device.thing)
            self._cond.notify_all()

    @property
    def connected(self) -> int:
        with self._cond:
            return len(self._up)

    def start(self, timeout: float = 60.0) -> None:
        """Connect every device and wait until the broker acknowledged (and so retains)
        each device's first status document."""
        self.loop.start()
        pending = list(self.devices)

        def connect_batch() -> None:
            batch = [pending.pop() for _ in range(min(CONNECT_BATCH, len(pending)))]
            for device in batch:
                device.connect()
            if pending:
                self.loop.call_later(0.0, connect_batch)

        pending.reverse()
        self.loop.call_soon(connect_batch)
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._up) >= len(self.devices), timeout)
        if not ok:
            raise BrokerError(
                f"only {len(self._up)} of {len(self.devices)} simulated devices connected to "
                f"mqtt://{self.host}:{self.port} within {timeout:g}s"
            )

    def call(self, fn: Callable[[], None], timeout: float = 10.0) -> None:
        """Run ``fn`` on the loop thread and wait for it."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self.loop.call_soon(run)
        done.wait(timeout)

    def drop(self, thing: str) -> None:
        """Kill one device the hard way (no DISCONNECT): its last will fires."""
        self.call(self.by_thing[thing].drop)

    def stop(self, *, graceful: bool = True) -> None:
        def stop_all() -> None:
            self.stopping = True
            for device in self.devices:
                if graceful:
                    device.stop()
                else:
                    device.drop()

        self.call(stop_all)
        if graceful:
            # Let the offline documents and DISCONNECTs reach the sockets.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(d.client.want_write() for d in self.devices):
                time.sleep(0.05)
        self.loop.stop()
        self.loop.close()


def load_verifier(path: Path) -> Verifier:
    from edge.deploy.signing import load_public_key, verify

    key = load_public_key(path)

    def check(signed: Any, source: str) -> None:
        verify(signed, key, source=source)

    return check
