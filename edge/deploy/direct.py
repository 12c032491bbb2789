"""The direct backend: deployments over the devices' own MQTT broker.

``plan_*`` functions read (the inventory, a build, the retained desired
states) and return a ``RolloutPlan``: plain data, which ``--dry-run`` prints.
``execute`` applies a plan: it makes the artifacts available (retained chunks
on the broker, or S3), publishes each batch's signed desired states, waits for
the devices' reports, and halts and rolls back by ``max_failures``.

The control connection is a ``Bus``; the clock and the progress callbacks are
injected, so the same code runs the CLI, the benchmarks and the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.deploy.s3_artifacts import PRESIGN_EXPIRY, ArtifactStore, Endpoint
from edge.deploy.signing import PrivateKey, sign
from edge.errors import BrokerError, DeployError, UsageError, ValidationError
from edge.model.deployment import (
    DEFAULT_CHUNK_SIZE,
    ArtifactManifest,
    ArtifactRef,
    ComponentSpec,
    DeploymentReport,
    DesiredState,
    S3Source,
    SmokeEvent,
    artifact_chunk_topic,
    artifact_manifest_topic,
    deployment_topic,
    desired_topic,
    parse_artifact_manifest,
    parse_desired,
    parse_report,
    parse_signed,
)
from edge.model.device import DeviceConfig
from edge.mqtt.bus import Bus, Message

log = logging.getLogger(__name__)

STRATEGIES = ("all-at-once", "rolling", "canary")
#: A device's own terminal states, plus the two the CLI decides on its side.
FAILED_STATES = frozenset({"FAILED", "ROLLED_BACK", "TIMED_OUT"})

#: Report states of a newer document that mean the device moved past ours.
_STARTED = frozenset({"IN_PROGRESS", "SUCCEEDED", "ROLLED_BACK"})

Progress = Callable[[str, int, int], None]
DeviceEvent = Callable[[str, str, str], None]  # (device, state, detail)


def _quiet_progress(step: str, done: int, total: int) -> None:
    return None


def _quiet_event(device: str, state: str, detail: str) -> None:
    return None


# -- what a deployment is made of ------------------------------------------------------------
@dataclass(frozen=True)
class LocalArtifact:
    """A built zip on this machine and where it goes: retained chunks on the broker, or
    ``ref.s3`` on the object store at ``endpoint`` (the device's ``cloud``)."""

    path: Path
    ref: ArtifactRef
    endpoint: Endpoint | None = None

    @property
    def destination(self) -> tuple[str, ...]:
        """What makes two uploads the same: the digest and where it goes."""
        if self.ref.s3 is None or self.endpoint is None:
            return (self.ref.sha256, "broker")
        return (self.ref.sha256, self.ref.s3.bucket, self.ref.s3.key, str(self.endpoint))


@dataclass(frozen=True)
class NewComponent:
    """One component to deploy: its artifact per device platform label, its smoke event."""

    name: str
    version: str
    artifacts: Mapping[str, LocalArtifact]  # platform label -> artifact
    smoke: SmokeEvent | None = None


@dataclass(frozen=True)
class DevicePlan:
    device: str
    thing: str
    desired: DesiredState
    current: DesiredState | None
    changes: tuple[str, ...]  # human-readable lines
    send: bool  # False: the device already runs this state
    artifacts: tuple[LocalArtifact, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "thing": self.thing,
            "deployment_id": self.desired.deployment_id,
            "send": self.send,
            "changes": list(self.changes),
            "components": {n: c.version for n, c in sorted(self.desired.components.items())},
        }


@dataclass(frozen=True)
class RolloutPlan:
    rollout_id: str
    strategy: str
    max_failures: int
    batches: tuple[tuple[str, ...], ...]
    devices: Mapping[str, DevicePlan]
    uploads: tuple[LocalArtifact, ...]
    timeout: float

    def lines(self) -> list[str]:
        out = [
            f"rollout {self.rollout_id}: strategy {self.strategy}, {len(self.devices)} device(s), "
            f"halt after {self.max_failures} failure(s), timeout {self.timeout:g}s per batch"
        ]
        for art in self.uploads:
            where = f"s3://{art.ref.s3.bucket}/{art.ref.s3.key}" if art.ref.s3 else "broker chunks"
            out.append(f"  upload {art.path.name} sha256:{art.ref.sha256[:12]} "
                       f"({art.ref.size} bytes) -> {where}")  # fmt: skip
        for index, batch in enumerate(self.batches, start=1):
            out.append(f"  batch {index}: {', '.join(batch)}")
            for name in batch:
                plan = self.devices[name]
                if not plan.send:
                    out.append(f"    {name}: up to date, nothing sent")
                    continue
                out.append(f"    {name}: publish {desired_topic(plan.thing)} "
                           f"({plan.desired.deployment_id})")  # fmt: skip
                out.extend(f"      {change}" for change in plan.changes)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout_id,
            "strategy": self.strategy,
            "max_failures": self.max_failures,
            "batches": [list(b) for b in self.batches],
            "uploads": [{"file": str(a.path), **a.ref.to_json()} for a in self.uploads],
            "devices": [self.devices[n].to_json() for b in self.batches for n in b],
        }


@dataclass(frozen=True)
class DeviceOutcome:
    device: str
    state: str  # SUCCEEDED | FAILED | ROLLED_BACK | TIMED_OUT | UNCHANGED | SKIPPED | REVERTED
    reason: str = ""
    seconds: float = 0.0
    deployment_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "state": self.state, "reason": self.reason,
                "seconds": round(self.seconds, 3), "deployment_id": self.deployment_id}  # fmt: skip


@dataclass(frozen=True)
class RolloutResult:
    rollout_id: str
    outcomes: tuple[DeviceOutcome, ...]
    halted: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.halted and all(o.state in ("SUCCEEDED", "UNCHANGED") for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout_id, "ok": self.ok, "halted": self.halted,
                "seconds": round(self.seconds, 3),
                "devices": [o.to_json() for o in self.outcomes]}  # fmt: skip


# -- reading the broker -----------------------------------------------------------------------
class ControlChannel:
    """Reads retained documents and follows deployment reports over one ``Bus``."""

    def __init__(self, bus: Bus, client_id: str) -> None:
        self.bus = bus
        self._sync_topic = f"edgectl/sync/{client_id}"
        self._cond = threading.Condition()
        self._retained: dict[str, bytes] = {}
        self._synced: set[str] = set()
        self.reports: dict[str, DeploymentReport] = {}  # thing -> newest report
        # (thing, deployment id) -> its final report: a newer deployment's report can
        # replace it as the newest before the waiting thread looks.
        self._finals: dict[tuple[str, str], DeploymentReport] = {}
        self._report_handlers: list[Callable[[DeploymentReport], None]] = []

    def read_retained(self, topics: Iterable[str], timeout: float = 10.0) -> dict[str, bytes]:
        """The retained message on each topic (absent: none), after one broker round trip."""
        wanted = list(topics)
        for topic in wanted:
            self.bus.subscribe(topic, self._on_retained, qos=1)
        token = secrets.token_hex(6)
        self.bus.subscribe(self._sync_topic, self._on_sync, qos=1)
        self.bus.publish(self._sync_topic, token.encode(), qos=1)
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._synced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError("the broker did not answer within "
                                      f"{timeout:g}s while reading retained documents")  # fmt: skip
                self._cond.wait(remaining)
            found = {t: self._retained[t] for t in wanted if self._retained.get(t)}
        for topic in wanted:
            self.bus.unsubscribe(topic)
        return found

    def _on_retained(self, message: Message) -> None:
        with self._cond:
            self._retained[message.topic] = message.payload
            self._cond.notify_all()

    def _on_sync(self, message: Message) -> None:
        with self._cond:
            self._synced.add(message.payload.decode(errors="replace"))
            self._cond.notify_all()

    def follow_reports(self, things: Iterable[str]) -> None:
        for thing in things:
            self.bus.subscribe(deployment_topic(thing), self._on_report, qos=1)

    def _on_report(self, message: Message) -> None:
        try:
            report = parse_report(json.loads(message.payload), source=message.topic)
        except (ValueError, ValidationError) as exc:
            log.warning("ignoring report on %s: %s", message.topic, exc)
            return
        with self._cond:
            self.reports[report.thing] = report
            if report.final:
                self._finals[(report.thing, report.deployment_id)] = report
            self._cond.notify_all()
        for handler in self._report_handlers:
            handler(report)

    def on_report(self, handler: Callable[[DeploymentReport], None]) -> None:
        self._report_handlers.append(handler)

    def wait_final(
        self, waiting: Mapping[str, DesiredState], deadline: float
    ) -> dict[str, DeploymentReport | None]:
        """Wait until each thing reports a final state for its document (or a newer one)."""
        results: dict[str, DeploymentReport | None] = {}
        with self._cond:
            while True:
                for thing, desired in waiting.items():
                    if thing in results:
                        continue
                    final = self._finals.get((thing, desired.deployment_id))
                    report = self.reports.get(thing)
                    if final is not None:
                        results[thing] = final
                    elif report is None:
                        continue
                    elif report.sequence > desired.sequence and report.state in _STARTED:
                        # A newer document started, so ours is over (its final report
                        # never came: a rejected document, or one the broker lost).
                        # One that is QUEUED waits for ours; a FAILED one was rejected or
                        # dropped while queued: neither ends ours.
                        results[thing] = report.evolve(
                            state="FAILED", reason=f"superseded by {report.deployment_id}"
                        )
                if len(results) == len(waiting):
                    return results
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    for thing in waiting:
                        results.setdefault(thing, None)
                    return results
                self._cond.wait(remaining)


# -- planning -----------------------------------------------------------------------------------
def new_deployment_id(clock: Callable[[], float] = time.time) -> str:
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%S")
    return f"d-{stamp}-{secrets.token_hex(3)}"


def next_sequence(current: DesiredState | None, clock: Callable[[], float] = time.time) -> int:
    now = int(clock() * 1000)
    return max(now, (current.sequence + 1) if current else 1)


def current_states(
    channel: ControlChannel, devices: Sequence[DeviceConfig], timeout: float = 10.0
) -> tuple[dict[str, DesiredState], dict[str, DeploymentReport]]:
    """The retained desired state and newest report of each device (by thing name)."""
    topics = [desired_topic(d.thing_name) for d in devices]
    topics += [deployment_topic(d.thing_name) for d in devices]
    found = channel.read_retained(topics, timeout)
    desired: dict[str, DesiredState] = {}
    reports: dict[str, DeploymentReport] = {}
    for device in devices:
        thing = device.thing_name
        raw = found.get(desired_topic(thing))
        if raw is not None:
            try:
                signed = parse_signed(raw, source=desired_topic(thing))
                desired[thing] = parse_desired(signed.document, source=desired_topic(thing))
            except ValidationError as exc:
                log.warning("ignoring the retained desired state of %s: %s", thing, exc)
        raw = found.get(deployment_topic(thing))
        if raw is not None:
            with contextlib.suppress(ValueError, ValidationError):
                reports[thing] = parse_report(json.loads(raw), source=deployment_topic(thing))
    return desired, reports


def batches_for(
    names: Sequence[str], strategy: str, *, batch: int | None, canary: int | None
) -> tuple[tuple[str, ...], ...]:
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    ordered = list(names)
    if not ordered:
        return ()
    if strategy == "all-at-once":
        return (tuple(ordered),)
    if strategy == "rolling":
        size = batch or 1
        return tuple(tuple(ordered[i : i + size]) for i in range(0, len(ordered), size))
    size = canary or 1
    head, rest = ordered[:size], ordered[size:]
    out: list[tuple[str, ...]] = [tuple(head)]
    step = batch or len(rest) or 1
    out += [tuple(rest[i : i + step]) for i in range(0, len(rest), step)]
    return tuple(out)


def plan_rollout(
    devices: Sequence[DeviceConfig],
    *,
    components: Sequence[NewComponent] = (),
    remove: Sequence[str] = (),
    restore_previous: bool = False,
    current: Mapping[str, DesiredState],
    reports: Mapping[str, DeploymentReport],
    strategy: str = "all-at-once",
    batch: int | None = None,
    canary: int | None = None,
    max_failures: int = 1,
    health_window: float | None = None,
    timeout: float = 60.0,
    uploaded: Callable[[LocalArtifact], bool] = lambda a: False,
    presign: Callable[[LocalArtifact], LocalArtifact] | None = None,
    clock: Callable[[], float] = time.time,
) -> RolloutPlan:
    """What to send to each device: merge ``components`` into its current desired state,
    drop ``remove``, or (``restore_previous``) go back to the state that one replaced.
    ``presign`` adds a presigned GET to artifacts that live in an object store."""
    rollout_id = "r-" + new_deployment_id(clock)[2:]
    plans: dict[str, DevicePlan] = {}
    uploads: dict[tuple[str, ...], LocalArtifact] = {}
    signed_urls: dict[tuple[str, ...], LocalArtifact] = {}

    def artifact_for(comp: NewComponent, device: DeviceConfig) -> LocalArtifact:
        art = _artifact_for(comp, device)
        if presign is None or art.ref.s3 is None:
            return art
        if art.destination not in signed_urls:
            signed_urls[art.destination] = presign(art)
        return signed_urls[art.destination]

    for device in devices:
        thing = device.thing_name
        now = current.get(thing)
        base = dict(now.components) if now else {}
        if restore_previous:
            if now is None or not now.previous:
                raise DeployError(f"{device.name}: nothing to roll back to (no previous state)")
            wanted = dict(now.previous)
        else:
            wanted = dict(base)
            for name in remove:
                if name not in wanted:
                    known = ", ".join(sorted(wanted)) or "none"
                    raise UsageError(f"--component {name}: not deployed on {device.name} "
                                     f"(deployed: {known})")  # fmt: skip
                del wanted[name]
            for comp in components:
                artifact = artifact_for(comp, device)
                wanted[comp.name] = ComponentSpec(comp.name, comp.version, artifact.ref, comp.smoke)
        window = health_window if health_window is not None else (
            now.health_window if now else 10.0)  # fmt: skip
        desired = DesiredState(
            thing=thing, deployment_id=new_deployment_id(clock),
            sequence=next_sequence(now, clock), created_at=round(clock(), 3),
            components=wanted, health_window=window, previous=base, rollout=rollout_id,
        )  # fmt: skip
        report = reports.get(thing)
        unchanged = (
            not restore_previous
            and desired.same_components(now)
            and report is not None
            and now is not None
            and report.deployment_id == now.deployment_id
            and report.state == "SUCCEEDED"
        )
        if now is None and not wanted:
            unchanged = True
        changes = tuple(_changes(base, wanted))
        needed = []
        if not unchanged:
            for comp in components:
                art = artifact_for(comp, device)
                if comp.name in wanted and (
                    comp.name not in base or base[comp.name].key != wanted[comp.name].key
                ):
                    needed.append(art)
                    if not uploaded(art):
                        uploads.setdefault(art.destination, art)
        plans[device.name] = DevicePlan(
            device=device.name, thing=thing, desired=desired, current=now,
            changes=changes or ("no component changes",), send=not unchanged,
            artifacts=tuple(needed),
        )  # fmt: skip
    names = [d.name for d in devices if plans[d.name].send]
    idle = [d.name for d in devices if not plans[d.name].send]
    batches = batches_for(names, strategy, batch=batch, canary=canary)
    if idle:
        batches = (*batches, tuple(idle)) if batches else (tuple(idle),)
    return RolloutPlan(
        rollout_id=rollout_id, strategy=strategy, max_failures=max_failures,
        batches=batches, devices=plans, uploads=tuple(uploads.values()), timeout=timeout,
    )  # fmt: skip


def _artifact_for(comp: NewComponent, device: DeviceConfig) -> LocalArtifact:
    from edge.build.platforms import platform_for_device

    label = platform_for_device(device.platform.os, device.platform.architecture).label
    artifact = comp.artifacts.get(label)
    if artifact is None:
        raise DeployError(f"{comp.name}: no artifact built for {device.name}'s platform {label}")
    if device.artifacts is not None:
        key = f"{device.artifacts.prefix}{artifact.ref.sha256}.zip"
        artifact = replace(
            artifact, ref=replace(artifact.ref, s3=S3Source(device.artifacts.bucket, key)),
            endpoint=Endpoint.of(device.cloud),
        )  # fmt: skip
    return artifact


def _changes(base: Mapping[str, ComponentSpec], wanted: Mapping[str, ComponentSpec]) -> list[str]:
    lines = []
    for name in sorted(set(base) | set(wanted)):
        old, new = base.get(name), wanted.get(name)
        if old is None and new is not None:
            lines.append(f"+ {name} {new.version}")
        elif new is None and old is not None:
            lines.append(f"- {name} {old.version}")
        elif old is not None and new is not None and old.key != new.key:
            same = old.version == new.version
            detail = f" (sha256 {new.artifact.sha256[:12]})" if same else ""
            lines.append(f"~ {name} {old.version} -> {new.version}{detail}")
    return lines


# -- executing -----------------------------------------------------------------------
@dataclass
class Executor:
    """Applies a ``RolloutPlan`` over ``channel`` and signs with ``key``."""

    channel: ControlChannel
    key: PrivateKey
    store: ArtifactStore | None = None
    progress: Progress = _quiet_progress
    on_device: DeviceEvent = _quiet_event
    chunk_size: int = DEFAULT_CHUNK_SIZE
    _sent: dict[str, DesiredState] = field(default_factory=dict)

    def run(self, plan: RolloutPlan) -> RolloutResult:
        started = time.monotonic()
        for artifact in plan.uploads:
            self.upload(artifact)
        things = {p.thing: p for p in plan.devices.values()}
        self.channel.follow_reports(things)
        self.channel.on_report(self._forward)
        outcomes: dict[str, DeviceOutcome] = {}
        failures = 0
        halted = False
        for batch in plan.batches:
            if halted:
                for name in batch:
                    outcomes[name] = DeviceOutcome(name, "SKIPPED", "rollout halted")
                    self.on_device(name, "SKIPPED", "rollout halted")
                continue
            sending = [plan.devices[n] for n in batch if plan.devices[n].send]
            for name in batch:
                if not plan.devices[name].send:
                    outcomes[name] = DeviceOutcome(name, "UNCHANGED", "already running this state")
                    self.on_device(name, "UNCHANGED", "")
            batch_started = time.monotonic()
            for device_plan in sending:
                self.publish_desired(device_plan.desired)
                self.on_device(device_plan.device, "QUEUED", "sent")
            finals = self.channel.wait_final(
                {p.thing: p.desired for p in sending}, batch_started + plan.timeout
            )
            for device_plan in sending:
                report = finals.get(device_plan.thing)
                seconds = time.monotonic() - batch_started
                if report is None:
                    outcome = DeviceOutcome(device_plan.device, "TIMED_OUT",
                                            f"no final report within {plan.timeout:g}s",
                                            seconds, device_plan.desired.deployment_id)  # fmt: skip
                else:
                    outcome = DeviceOutcome(device_plan.device, report.state, report.reason,
                                            seconds, device_plan.desired.deployment_id)  # fmt: skip
                outcomes[device_plan.device] = outcome
                self.on_device(outcome.device, outcome.state, outcome.reason)
                if outcome.state in FAILED_STATES:
                    failures += 1
            if failures >= plan.max_failures:
                halted = True
        if failures:
            reverted = self._restore(plan, outcomes, revert_succeeded=halted)
            for name, ok in reverted.items():
                outcomes[name] = replace(
                    outcomes[name], state="REVERTED" if ok else "REVERT_FAILED",
                    reason="rollout halted; previous state restored" if ok
                    else "rollout halted; restoring the previous state failed",
                )  # fmt: skip
        ordered = tuple(outcomes[n] for b in plan.batches for n in b)
        return RolloutResult(plan.rollout_id, ordered, halted, time.monotonic() - started)

    def _forward(self, report: DeploymentReport) -> None:
        sent = self._sent.get(report.thing)
        if sent is None or report.deployment_id != sent.deployment_id or report.final:
            return
        detail = report.phase or ""
        if report.transfer:
            detail += f" {report.transfer[0]}/{report.transfer[1]} bytes"
        self.on_device(report.thing, report.state, detail)

    def publish_desired(self, desired: DesiredState) -> None:
        signed = sign(desired.to_json(), self.key)
        self._sent[desired.thing] = desired
        self.channel.bus.publish(desired_topic(desired.thing), signed.to_bytes(), qos=1,
                                 retain=True, timeout=10)  # fmt: skip

    def _restore(
        self, plan: RolloutPlan, outcomes: Mapping[str, DeviceOutcome], *, revert_succeeded: bool
    ) -> dict[str, bool]:
        """Keep desired == running: a device that failed (or, when the rollout halts, every
        device already sent this rollout) gets its previous state back as desired."""
        waiting: dict[str, DesiredState] = {}
        for name, outcome in outcomes.items():
            device_plan = plan.devices[name]
            if not device_plan.send:
                continue
            failed = outcome.state in FAILED_STATES
            if not (failed or (revert_succeeded and outcome.state == "SUCCEEDED")):
                continue
            sent = device_plan.desired
            back = replace(
                sent, deployment_id=new_deployment_id(), sequence=next_sequence(sent),
                components=sent.previous, previous=sent.components,
            )  # fmt: skip
            self.publish_desired(back)
            if outcome.state == "SUCCEEDED":
                waiting[device_plan.thing] = back
                self.on_device(name, "REVERTING", "rollout halted")
        reverted: dict[str, bool] = {}
        if waiting:
            finals = self.channel.wait_final(waiting, time.monotonic() + plan.timeout)
            for thing, report in finals.items():
                name = next(n for n, p in plan.devices.items() if p.thing == thing)
                reverted[name] = report is not None and report.state == "SUCCEEDED"
                state = "REVERTED" if reverted[name] else "REVERT_FAILED"
                self.on_device(name, state, report.reason if report else "no answer")
        return reverted

    # -- artifacts --------------------------------------------------------------------------
    def upload(self, artifact: LocalArtifact) -> None:
        if artifact.ref.s3 is not None and artifact.endpoint is not None:
            if self.store is None:
                raise DeployError(f"{artifact.path.name}: no S3 client to upload with")
            self.store.upload(artifact.path, artifact.ref, artifact.endpoint)
            return
        publish_chunks(self.channel.bus, artifact.path, artifact.ref, self.chunk_size,
                       self.progress)  # fmt: skip


def artifact_on_broker(channel: ControlChannel, ref: ArtifactRef) -> bool:
    topic = artifact_manifest_topic(ref.sha256)
    raw = channel.read_retained([topic]).get(topic)
    if raw is None:
        return False
    try:
        manifest = parse_artifact_manifest(raw, source=topic)
    except ValidationError:
        return False
    return manifest.size == ref.size


def publish_chunks(
    bus: Bus, path: Path, ref: ArtifactRef, chunk_size: int, progress: Progress
) -> ArtifactManifest:
    """Retain ``path`` on the broker in chunks, then its manifest (which devices wait for)."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise DeployError(f"{path}: changed since it was built (digest differs); build again")
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    manifest = ArtifactManifest(
        ref.sha256, len(data), chunk_size, tuple(hashlib.sha256(c).hexdigest() for c in chunks)
    )
    progress("upload", 0, len(chunks))
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        bus.publish(artifact_chunk_topic(ref.sha256, index), chunk, qos=1, retain=True,
                    timeout=30 if last or index % 64 == 63 else None)  # fmt: skip
        progress("upload", index + 1, len(chunks))
    payload = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
    bus.publish(artifact_manifest_topic(ref.sha256), payload, qos=1, retain=True, timeout=30)
    return manifest


# -- the whole command, for the CLI ---------------------------------------------------
@dataclass(frozen=True)
class BrokerAccess:
    """How ``edgectl`` reaches the broker: the URL and, for ``mqtts://``, its identity."""

    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: The MQTT client library: "paho", or "awsiot" (awsiotsdk's MQTT 5 client).
    client: str = "paho"


@dataclass(frozen=True)
class DirectRequest:
    devices: tuple[DeviceConfig, ...]
    component_dirs: tuple[Path, ...] = ()
    remove: tuple[str, ...] = ()
    rollback: bool = False
    strategy: str = "all-at-once"
    batch: int | None = None
    canary: int | None = None
    max_failures: int = 1
    health_window: float | None = None
    timeout: float = 60.0
    key_path: Path = Path("keys/fleet.key")
    broker: BrokerAccess | None = None
    dry_run: bool = False
    #: Seconds the presigned GET of an artifact in S3 stays valid.
    presign_expiry: int = PRESIGN_EXPIRY


def broker_access(
    device: DeviceConfig | None, project: Path, override: str | None
) -> BrokerAccess:
    """The device file's broker (without one: ``override``, which is then required),
    with the operator's certificate from ``certs/`` for TLS."""
    if device is None and not override:
        raise UsageError("no broker: pass --broker mqtt://HOST:PORT (or add devices/*.yaml)")
    url = override or (device.broker.url if device is not None else "")
    certs = project / "certs"
    cert, key = certs / "edgectl.crt", certs / "edgectl.key"
    ca = device.broker.ca if device is not None else None
    ca = ca or (certs / "ca.crt" if (certs / "ca.crt").is_file() else None)
    client = device.broker.client if device is not None else "paho"
    if cert.is_file() and key.is_file():
        return BrokerAccess(url, ca, cert, key, client=client)
    return BrokerAccess(url, ca, client=client)


def connect(access: BrokerAccess, timeout: float = 10.0) -> tuple[Bus, ControlChannel]:
    client_id = f"edgectl-{secrets.token_hex(6)}"
    bus: Bus
    if access.client == "awsiot":
        from edge.mqtt.iotcore_bus import BrokerAddress, IotCoreBus

        endpoint = BrokerAddress.parse(access.url, ca=access.ca, cert=access.cert, key=access.key)
        bus = IotCoreBus(endpoint, client_id=client_id)
    else:
        from edge.mqtt.paho_bus import BrokerAddress, PahoBus

        address = BrokerAddress.parse(access.url, ca=access.ca, cert=access.cert, key=access.key)
        bus = PahoBus(address, client_id=client_id)
    bus.connect(timeout=timeout)
    return bus, ControlChannel(bus, client_id)


def build_components(
    dirs: Sequence[Path], devices: Sequence[DeviceConfig], progress: Progress
) -> list[NewComponent]:
    from edge.build.builder import BuildOptions, build_component
    from edge.build.platforms import platform_for_device
    from edge.model.component import load_component

    platforms = tuple(
        sorted({platform_for_device(d.platform.os, d.platform.architecture) for d in devices})
    )
    built: list[NewComponent] = []
    for folder in dirs:
        manifest = load_component(folder)  # a folder that fails validation stops here
        if manifest.version == "NEXT_PATCH":
            raise UsageError(f"{manifest.source}: version: the direct backend needs a version, "
                             "not NEXT_PATCH")  # fmt: skip
        result = build_component(folder, BuildOptions(platforms=platforms), progress)
        artifacts: dict[str, LocalArtifact] = {}
        for art in result.artifacts:
            local = LocalArtifact(art.path, ArtifactRef(art.sha256, art.size))
            for platform in art.platforms:
                artifacts[platform.label] = local
        built.append(NewComponent(manifest.name, manifest.version, artifacts, _smoke(manifest)))
    return built


def _smoke(manifest: Any) -> SmokeEvent | None:
    from edge.model.topics import render

    health = manifest.health
    if health.smoke_event is None:
        return None
    topic = health.smoke_topic
    if topic is None:
        if not manifest.triggers:
            raise ValidationError("needs health.smoke_topic (the component has no triggers)",
                                  source=manifest.source, field="health.smoke_event")  # fmt: skip
        levels = manifest.triggers[0].topic.split("/")
        topic = "/".join("smoke" if level in ("+", "#") else level for level in levels)
    topic = render(topic, thing="smoke", component=manifest.name)
    try:
        payload = Path(health.smoke_event).read_bytes()
    except OSError as exc:
        raise ValidationError(f"{health.smoke_event}: {exc.strerror}", source=manifest.source,
                              field="health.smoke_event") from None  # fmt: skip
    return SmokeEvent(topic, payload)


def window_from(components: Sequence[Path], given: float | None) -> float | None:
    if given is not None:
        return given
    from edge.model.component import load_component

    windows = [w for w in (load_component(c).health.window for c in components) if w is not None]
    return max(windows) if windows else None


def run_direct(
    request: DirectRequest,
    *,
    progress: Progress = _quiet_progress,
    on_device: DeviceEvent = _quiet_event,
    store: ArtifactStore | None = None,
) -> tuple[RolloutPlan, RolloutResult | None]:
    """Build, plan, and (unless ``dry_run``) execute; see the module docstring.

    Devices with ``artifacts.s3`` get their artifacts through ``store`` (default: one
    built from the usual AWS credential chain), presigned unless this is a dry run."""
    if not request.devices:
        raise UsageError("no devices to deploy to")
    from edge.deploy.signing import load_private_key

    key = None if request.dry_run else load_private_key(request.key_path)
    if store is None and any(d.artifacts is not None for d in request.devices):
        store = ArtifactStore(expiry=request.presign_expiry, progress=progress)
    components = build_components(request.component_dirs, request.devices, progress)
    window = window_from(request.component_dirs, request.health_window)
    access = request.broker or BrokerAccess(request.devices[0].broker.url)
    bus, channel = connect(access)
    try:
        current, reports = current_states(channel, request.devices)
        known: dict[str, bool] = {}

        def uploaded(art: LocalArtifact) -> bool:
            if art.ref.s3 is not None:
                return False
            if art.ref.sha256 not in known:
                known[art.ref.sha256] = artifact_on_broker(channel, art.ref)
            return known[art.ref.sha256]

        plan = plan_rollout(
            request.devices, components=components, remove=request.remove,
            restore_previous=request.rollback, current=current, reports=reports,
            strategy=request.strategy, batch=request.batch, canary=request.canary,
            max_failures=request.max_failures, health_window=window,
            timeout=request.timeout + (window if window is not None else 10.0),
            uploaded=uploaded,
            presign=None if request.dry_run or store is None
            else lambda art: _presigned(store, art),
        )  # fmt: skip
        if request.dry_run:
            return plan, None
        assert key is not None
        executor = Executor(channel, key, store=store, progress=progress,
                            on_device=on_device)  # fmt: skip
        return plan, executor.run(plan)
    finally:
        bus.close()


def _presigned(store: ArtifactStore, artifact: LocalArtifact) -> LocalArtifact:
    assert artifact.ref.s3 is not None and artifact.endpoint is not None
    source = store.presign(artifact.ref.s3, artifact.endpoint)
    return replace(artifact, ref=replace(artifact.ref, s3=source))
