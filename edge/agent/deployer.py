"""The deployment applier: converges the device to its signed desired state.

The desired state arrives retained on ``edge/<thing>/desired`` (see
``edge.model.deployment`` and docs/deploy.md). For each document the deployer:

1. verifies the signature against the trusted key and rejects replays (a
   sequence lower than one already accepted); a repeat is a no-op;
2. **download**: fetches the artifacts of the components that change (chunks
   through the broker, or an object store), resuming a partial transfer and
   checking the digest;
3. **unpack**: extracts each into its own release folder
   ``releases/<component>/<sha256>`` (temporary folder, then rename);
4. **switch**: starts a worker of each new version beside the old one (which
   keeps serving) and runs the manifest's smoke event through it; then, in one
   atomic write of ``deploy/state.json``, makes the new versions current and
   swaps the component runners (queued messages stay in the store and run
   once, on the new version);
5. **health**: watches the new versions for the health window; an error,
   timeout or worker crash switches back to the previous versions
   (``ROLLED_BACK``), otherwise the deployment ``SUCCEEDED``.

``state.json`` is written with write-fsync-rename, so after a power cut or a
SIGKILL it names either the old or the new set of components entirely; the
agent starts that set at boot and then resumes the deployment in flight: a
transfer continues, an unpack starts over, and a deployment that was already
switched goes through its health window again and succeeds or rolls back.

Tests pause the deployer at a phase with ``EDGE_TEST_PAUSE_AT=<phase>`` and
``EDGE_TEST_PAUSE_FILE=<path>`` (it blocks until the file exists), so they can
kill the agent exactly there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge.agent.artifacts import (
    ArtifactCache,
    ArtifactError,
    BrokerChunkFetcher,
    HttpFetcher,
    extract_zip,
    wait_for_file,
    write_atomic,
)
from edge.errors import EdgeError, ValidationError
from edge.model.component import ComponentManifest, load_component
from edge.model.deployment import (
    ComponentSpec,
    DeploymentReport,
    DesiredState,
    RunningComponent,
    SmokeEvent,
    deployment_topic,
    desired_topic,
    parse_desired,
    parse_signed,
    peek_identity,
)
from edge.mqtt.bus import Bus, Message

log = logging.getLogger(__name__)

PAUSE_ENV = "EDGE_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "EDGE_TEST_PAUSE_FILE"
STATE_VERSION = 1
HEALTH_POLL = 0.05
#: Raw documents held until the deployer thread reads them (a burst beyond this keeps
#: the newest; only the newest valid one is ever applied anyway).
INBOX_LIMIT = 16


@dataclass(frozen=True)
class Health:
    """A running component's failure counters, as the health gate reads them."""

    running: bool
    errors: int
    timeouts: int
    worker_restarts: int


class Host(Protocol):
    """What the deployer needs from the agent (``AgentHost`` adapts ``Agent``)."""

    def add_component(self, manifest: ComponentManifest) -> None: ...

    def remove_component(self, name: str) -> bool: ...

    def health(self, name: str) -> Health | None: ...

    def preflight(self, manifest: ComponentManifest, smoke: SmokeEvent | None) -> str | None:
        """Start a worker of ``manifest`` beside the running one and run ``smoke``;
        the reason it is unhealthy, or None."""

    def changed(self) -> None: ...


@dataclass(frozen=True)
class Installed:
    """A component release on disk."""

    name: str
    version: str
    sha256: str
    folder: Path

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "sha256": self.sha256, "folder": str(self.folder)}

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> Installed:
        return cls(name, str(data["version"]), str(data["sha256"]), Path(data["folder"]))


@dataclass
class DeployState:
    """``deploy/state.json``: what runs, what was accepted, what is in flight."""

    accepted_sequence: int = 0
    accepted_id: str | None = None
    applied: str | None = None
    current: dict[str, Installed] = field(default_factory=dict)
    previous: dict[str, Installed] = field(default_factory=dict)
    inflight: dict[str, Any] | None = None
    report: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "accepted_sequence": self.accepted_sequence,
                "accepted_id": self.accepted_id,
                "applied": self.applied,
                "current": {n: c.to_json() for n, c in sorted(self.current.items())},
                "previous": {n: c.to_json() for n, c in sorted(self.previous.items())},
                "inflight": self.inflight,
                "report": self.report,
            },
            indent=1,
        ).encode()

    @classmethod
    def load(cls, path: Path) -> DeployState:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except ValueError as exc:  # cannot happen with atomic writes; say so if it does
            raise ValidationError(
                f"unreadable deployment state ({exc})", source=str(path)
            ) from None
        return cls(
            accepted_sequence=int(data.get("accepted_sequence", 0)),
            accepted_id=data.get("accepted_id"),
            applied=data.get("applied"),
            current={n: Installed.from_json(n, c) for n, c in data.get("current", {}).items()},
            previous={n: Installed.from_json(n, c) for n, c in data.get("previous", {}).items()},
            inflight=data.get("inflight"),
            report=data.get("report"),
        )


class Superseded(Exception):
    def __init__(self, by: str) -> None:
        super().__init__(f"superseded by {by}")


def pause_from_env(
    env: Mapping[str, str] = os.environ, notify: Callable[[str], None] | None = None
) -> Callable[[str], None]:
    """The test hook: block at phase ``$EDGE_TEST_PAUSE_AT`` until ``$EDGE_TEST_PAUSE_FILE``
    exists, after calling ``notify(phase)`` (the agent publishes ``edge/<thing>/test/paused``)."""
    phase, path = env.get(PAUSE_ENV), env.get(PAUSE_FILE_ENV)
    if not phase or not path:
        return lambda _phase: None

    def pause(at: str) -> None:
        if at == phase:
            log.warning("test hook: paused at %s until %s exists", at, path)
            if notify is not None:
                notify(at)
            wait_for_file(Path(path))

    return pause


class Deployer:
    def __init__(
        self,
        *,
        thing: str,
        host: Host,
        bus: Bus,
        data_dir: Path,
        verify: Callable[[Any, str], None],
        connect_download: Callable[[], Bus],
        stall_timeout: float = 30.0,
        http: HttpFetcher | None = None,
        s3_url: Callable[[str, str], str] | None = None,
        pause: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.thing = thing
        self._host = host
        self._bus = bus
        self._root = data_dir / "deploy"
        self._root.mkdir(parents=True, exist_ok=True)
        self._releases = data_dir / "releases"
        self._state_path = self._root / "state.json"
        self._verify = verify
        self._chunks = BrokerChunkFetcher(connect_download, stall_timeout=stall_timeout)
        self._http = http or HttpFetcher(timeout=stall_timeout)
        self._s3_url = s3_url
        self._pause = pause or pause_from_env(notify=self._notify_paused)
        self._clock = clock
        self.cache = ArtifactCache(self._root / "artifacts")
        self.state = DeployState.load(self._state_path)
        #: Documents received, not yet verified (the MQTT thread only appends).
        self._inbox: deque[bytes] = deque(maxlen=INBOX_LIMIT)
        #: The one verified document waiting for the deployment in flight (never two).
        self._queued: tuple[DesiredState, bytes] | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._report_lock = threading.Lock()
        self._last_transfer_report = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def restore(self) -> list[ComponentManifest]:
        """The manifests the agent must run at boot: the current release set."""
        manifests = []
        for name, item in sorted(self.state.current.items()):
            try:
                manifests.append(load_component(item.folder))
            except EdgeError as exc:
                log.error("cannot restore %s %s: %s", name, item.version, exc)
        return manifests

    def start(self) -> None:
        self._bus.subscribe(desired_topic(self.thing), self._on_desired, qos=1)
        self._bus.on_connection_change(self._on_connection)
        self._thread = threading.Thread(target=self._run, name="deployer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()

    def report_json(self) -> dict[str, Any] | None:
        return self.state.report

    def _on_connection(self, up: bool) -> None:
        # The persistent session keeps our subscription, and a broker does not resend a
        # retained message to an existing subscription: subscribe afresh, so the current
        # desired state arrives on every connect (a repeat is a no-op).
        if up:
            self._bus.unsubscribe(desired_topic(self.thing))
            self._bus.subscribe(desired_topic(self.thing), self._on_desired, qos=1)

    def _on_desired(self, message: Message) -> None:
        self._bus.ack(message)  # retained: a crash before it is applied gets it again
        if not message.payload:
            return  # the retained document was cleared
        with self._wake:
            self._inbox.append(message.payload)
            self._wake.notify_all()

    def _run(self) -> None:
        try:
            if self.state.inflight is not None:
                self._resume()
            while True:
                with self._wake:
                    while not self._inbox and self._queued is None and not self._stopped:
                        self._wake.wait()
                    if self._stopped:
                        return
                self._intake(None)
                queued, self._queued = self._queued, None
                if queued is not None:
                    self._apply(*queued)
        except Exception:
            log.exception("deployer stopped by a bug")

    def _intake(self, inflight: DesiredState | None) -> None:
        """Verify what arrived. A valid newer document becomes the queued one (reported
        ``QUEUED`` while ``inflight`` runs); one already queued is dropped as superseded,
        so at most one document ever waits."""
        while True:
            with self._wake:
                if not self._inbox:
                    return
                payload = self._inbox.popleft()
            try:
                desired = self.check(payload)
            except EdgeError as exc:
                self._reject(payload, str(exc))
                continue
            if desired is None:
                continue  # a repeat of the accepted document
            waiting = self._queued[0] if self._queued is not None else None
            if waiting is not None:
                if (desired.sequence, desired.deployment_id) == (
                    waiting.sequence, waiting.deployment_id
                ):  # fmt: skip
                    continue  # a repeat of the queued document
                if desired.sequence < waiting.sequence:
                    self._reject(payload, f"replayed document: sequence {desired.sequence} "
                                          f"is not newer than the queued {waiting.sequence}")
                    continue
                self._report_waiting(waiting, "FAILED", f"superseded by {desired.deployment_id}")
            self._queued = (desired, payload)
            if inflight is not None:
                log.info("deployment %s queued behind %s", desired.deployment_id,
                         inflight.deployment_id)  # fmt: skip
                self._report_waiting(desired, "QUEUED", "")

    def _report_waiting(self, desired: DesiredState, state: str, reason: str) -> None:
        now = self._clock()
        self._publish(
            DeploymentReport(
                thing=self.thing, deployment_id=desired.deployment_id, sequence=desired.sequence,
                state=state, reason=reason, started_at=now, updated_at=now,
                running=self._running(), applied=self.state.applied, rollout=desired.rollout,
            ),
            persist=True,
        )  # fmt: skip

    # -- one document ----------------------------------------------------------------------
    def check(self, payload: bytes) -> DesiredState | None:
        """Verify and parse; None for a repeat of the accepted document; raise otherwise."""
        source = desired_topic(self.thing)
        signed = parse_signed(payload, source=source)
        self._verify(signed, source)
        desired = parse_desired(signed.document, source=source)
        if desired.thing != self.thing:
            raise ValidationError(
                f"addressed to {desired.thing!r}, this device is {self.thing!r}",
                source=source, field="document.thing",
            )  # fmt: skip
        accepted = self.state.accepted_sequence
        if desired.sequence == accepted and desired.deployment_id == self.state.accepted_id:
            return None
        if desired.sequence <= accepted:
            raise ValidationError(
                f"replayed document: sequence {desired.sequence} is not newer than the "
                f"accepted {accepted}",
                source=source, field="document.sequence",
            )  # fmt: skip
        return desired

    def handle(self, payload: bytes) -> None:
        try:
            desired = self.check(payload)
        except EdgeError as exc:
            self._reject(payload, str(exc))
            return
        if desired is None:
            return
        self._apply(desired, payload)

    def _reject(self, payload: bytes, reason: str) -> None:
        ident, seq = peek_identity(payload)
        log.warning("desired state rejected: %s", reason)
        now = self._clock()
        self._publish(
            DeploymentReport(
                thing=self.thing, deployment_id=ident, sequence=seq, state="FAILED",
                reason=reason, started_at=now, updated_at=now, running=self._running(),
                applied=self.state.applied,
            ),
            persist=True,
        )  # fmt: skip

    # -- applying ------------------------------------------------------------------------------
    def _resume(self) -> None:
        inflight = self.state.inflight or {}
        payload = str(inflight.get("payload", "")).encode()
        try:
            signed = parse_signed(payload, source="deploy/state.json")
            self._verify(signed, "deploy/state.json")
            desired = parse_desired(signed.document, source="deploy/state.json")
        except EdgeError as exc:
            log.error("dropping the deployment in flight: %s", exc)
            self.state.inflight = None
            self._save()
            return
        previous = {n: Installed.from_json(n, c) for n, c in inflight.get("previous", {}).items()}
        phase = str(inflight.get("phase", "download"))
        log.info("resuming deployment %s at %s", desired.deployment_id, phase)
        start = "health" if phase in ("switch", "health") else "download"
        self._apply(desired, payload, start=start, previous=previous,
                    started_at=float(inflight.get("started_at", self._clock())))  # fmt: skip

    def _apply(
        self,
        desired: DesiredState,
        payload: bytes,
        *,
        start: str = "download",
        previous: dict[str, Installed] | None = None,
        started_at: float | None = None,
    ) -> None:
        started = started_at or self._clock()
        report = DeploymentReport(
            thing=self.thing, deployment_id=desired.deployment_id, sequence=desired.sequence,
            state="IN_PROGRESS", started_at=started, updated_at=started, applied=self.state.applied,
            rollout=desired.rollout,
        )  # fmt: skip
        if previous is None:
            previous = dict(self.state.current)
        changed = {
            n: s for n, s in desired.components.items()
            if n not in previous or (previous[n].version, previous[n].sha256) != s.key
        }  # fmt: skip
        self.state.accepted_sequence = desired.sequence
        self.state.accepted_id = desired.deployment_id
        if start == "download":
            if not changed and set(previous) == set(desired.components):
                self._succeed(report, desired, reason="already running this state")
                return
            self.state.inflight = {
                "payload": payload.decode(), "phase": "download",
                "previous": {n: c.to_json() for n, c in previous.items()}, "started_at": started,
            }  # fmt: skip
            try:
                manifests = self._prepare(report, desired, changed)
                self._switch(report, desired, changed, manifests, previous)
            except Superseded as exc:
                self._fail(report, str(exc))
                return
            except (EdgeError, OSError) as exc:
                self._fail(report, str(exc))
                return
        self._health(report, desired, changed, previous)

    def _prepare(
        self, report: DeploymentReport, desired: DesiredState, changed: Mapping[str, ComponentSpec]
    ) -> dict[str, ComponentManifest]:
        self._phase(report, "download")
        for spec in changed.values():
            if not self._release(spec).is_dir() and not self.cache.has(spec.artifact.sha256):
                self._fetch(report, desired, spec)
            self._check_superseded(desired)
        self._phase(report, "unpack")
        manifests: dict[str, ComponentManifest] = {}
        for name, spec in changed.items():
            folder = self._release(spec)
            if not folder.is_dir():
                folder.parent.mkdir(parents=True, exist_ok=True)
                extract_zip(self.cache.path(spec.artifact.sha256), folder, pause=self._pause)
            manifest = load_component(folder)
            if manifest.name != name or manifest.version != spec.version:
                raise ArtifactError(
                    f"artifact {spec.artifact.sha256[:12]} holds {manifest.name} "
                    f"{manifest.version}, not {name} {spec.version}"
                )
            manifests[name] = manifest
        self._check_superseded(desired)
        return manifests

    def _fetch(self, report: DeploymentReport, desired: DesiredState, spec: ComponentSpec) -> None:
        ref = spec.artifact

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - self._last_transfer_report > 0.5:
                self._last_transfer_report = now
                self._publish(report.evolve(transfer=(done, total), updated_at=self._clock()))

        def cancelled() -> bool:
            self._intake(desired)  # a newer document is reported QUEUED while this runs
            return self._stopped

        if ref.s3 is not None:
            bucket, key, presign = ref.s3.bucket, ref.s3.key, self._s3_url

            def own_url() -> str:
                if presign is None:
                    raise ArtifactError(f"artifact {ref.sha256[:12]}: no S3 access configured")
                return presign(bucket, key)

            url = ref.s3.url or own_url()
            self._http.fetch(ref, self.cache, url, progress=progress, pause=self._pause,
                             cancelled=cancelled,
                             own_url=own_url if ref.s3.url and presign else None)  # fmt: skip
        else:
            self._chunks.fetch(ref, self.cache, progress=progress, pause=self._pause,
                               cancelled=cancelled)  # fmt: skip

    def _switch(
        self,
        report: DeploymentReport,
        desired: DesiredState,
        changed: Mapping[str, ComponentSpec],
        manifests: Mapping[str, ComponentManifest],
        previous: Mapping[str, Installed],
    ) -> None:
        self._phase(report, "switch")
        for name, manifest in manifests.items():
            problem = self._host.preflight(manifest, changed[name].smoke)
            if problem is not None:
                raise _Unhealthy(f"health gate: {name} {manifest.version}: {problem}")
        self._check_superseded(desired)
        current = {n: c for n, c in previous.items() if n in desired.components}
        for name, spec in changed.items():
            current[name] = Installed(name, spec.version, spec.artifact.sha256, self._release(spec))
        self.state.current = current
        assert self.state.inflight is not None
        self.state.inflight["phase"] = "switch"
        self._save()  # the atomic switch: from here on, a restart runs the new set
        self._pause("switch")
        for name in sorted(set(previous) - set(desired.components)):
            self._host.remove_component(name)
        for name in sorted(manifests):
            self._host.add_component(manifests[name])

    def _health(
        self,
        report: DeploymentReport,
        desired: DesiredState,
        changed: Mapping[str, ComponentSpec],
        previous: Mapping[str, Installed],
    ) -> None:
        self._phase(report, "health")
        self._pause("health")
        deadline = time.monotonic() + desired.health_window
        problem: str | None = None
        while problem is None:
            for name in sorted(changed):
                health = self._host.health(name)
                if health is None or not health.running:
                    problem = f"{name} is not running"
                elif health.errors or health.timeouts or health.worker_restarts:
                    problem = (
                        f"{name} {changed[name].version}: {health.errors} failed invocation(s), "
                        f"{health.timeouts} timeout(s), {health.worker_restarts} worker "
                        f"restart(s) in the health window"
                    )
                if problem:
                    break
            if problem or time.monotonic() >= deadline:
                break
            with self._wake:
                if self._stopped:
                    return
                if not self._inbox:
                    self._wake.wait(HEALTH_POLL)
            # A newer document waits for the window (QUEUED), then the main loop applies it.
            self._intake(desired)
        if problem is None:
            self.state.previous = dict(previous)
            self._succeed(report, desired)
            return
        self._rollback(report, previous, f"health gate: {problem}")

    def _rollback(
        self, report: DeploymentReport, previous: Mapping[str, Installed], reason: str
    ) -> None:
        log.warning("rolling back: %s", reason)
        new = self.state.current
        self.state.current = dict(previous)
        self.state.inflight = None
        self._save()
        for name in sorted(set(new) - set(previous)):
            self._host.remove_component(name)
        for name, item in sorted(previous.items()):
            if name not in new or new[name] != item:
                try:
                    self._host.add_component(load_component(item.folder))
                except EdgeError as exc:
                    log.error("cannot restore %s %s: %s", name, item.version, exc)
        self._finish(report, "ROLLED_BACK", reason)

    def _succeed(self, report: DeploymentReport, desired: DesiredState, reason: str = "") -> None:
        self.state.applied = desired.deployment_id
        self.state.inflight = None
        self._finish(report.evolve(applied=desired.deployment_id), "SUCCEEDED", reason)
        self._collect_garbage()

    def _fail(self, report: DeploymentReport, reason: str) -> None:
        log.warning("deployment %s failed: %s", report.deployment_id, reason)
        state = "ROLLED_BACK" if reason.startswith("health gate:") else "FAILED"
        self.state.inflight = None
        self._finish(report, state, reason)

    def _finish(self, report: DeploymentReport, state: str, reason: str) -> None:
        final = report.evolve(
            state=state, reason=reason, phase=None, updated_at=self._clock(),
            running=self._running(), applied=self.state.applied, transfer=None,
        )  # fmt: skip
        self._publish(final, persist=True)

    def _phase(self, report: DeploymentReport, phase: str) -> None:
        if self.state.inflight is not None:
            self.state.inflight["phase"] = phase
        self._publish(
            report.evolve(phase=phase, updated_at=self._clock(), running=self._running()),
            persist=True,
        )

    def _check_superseded(self, desired: DesiredState) -> None:
        """At a phase boundary before the switch: give way to a newer document (the main
        loop applies the queued one next)."""
        self._intake(desired)
        if self._queued is not None:
            raise Superseded(self._queued[0].deployment_id)

    # -- helpers ----------------------------------------------------------------------------
    def _notify_paused(self, phase: str) -> None:
        self._bus.publish(f"edge/{self.thing}/test/paused", phase.encode(), qos=1, timeout=5)

    def _release(self, spec: ComponentSpec) -> Path:
        return self._releases / spec.name / spec.artifact.sha256

    def _running(self) -> dict[str, RunningComponent]:
        return {n: RunningComponent(c.version, c.sha256) for n, c in self.state.current.items()}

    def _save(self) -> None:
        write_atomic(self._state_path, self.state.to_bytes())

    def _publish(self, report: DeploymentReport, *, persist: bool = False) -> None:
        with self._report_lock:
            self.state.report = report.to_json()
            if persist:
                self._save()
            try:
                self._bus.publish(deployment_topic(self.thing), report.to_bytes(), qos=1,
                                  retain=True)  # fmt: skip
            except EdgeError as exc:
                log.info("deployment report not published: %s", exc)
        self._host.changed()

    def _collect_garbage(self) -> None:
        keep = {(n, c.sha256) for n, c in self.state.current.items()}
        keep |= {(n, c.sha256) for n, c in self.state.previous.items()}
        if self._releases.is_dir():
            for component in self._releases.iterdir():
                for release in component.iterdir():
                    if (component.name, release.name) not in keep:
                        shutil.rmtree(release, ignore_errors=True)
        self.cache.prune({sha for _, sha in keep})


class _Unhealthy(EdgeError):
    pass
