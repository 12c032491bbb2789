"""``edgectl dev``: a local device on the developer's machine, reloading on save.

One process holds the embedded broker (unless ``broker_url`` names one), the
local S3/DynamoDB endpoint (unless ``cloud="device"``), and an in-process
``Agent`` with the components loaded. A watcher notices changed files and
swaps the component with ``Agent.add_component``: the old version finishes
what it is running, records queued for it stay pending in the agent's store
and run on the new version, so a reload loses no message. A component that
fails validation is reported and watched until it is fixed.

Every invocation is reported through ``on_event`` as a ``DevEvent``; the CLI
renders them. The broker URL of the running session is written to
``<root>/.edge/dev.json`` so ``edgectl publish TOPIC PAYLOAD`` from another
terminal finds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.agent.agent import Agent
from edge.agent.component import ComponentRunner, Finished
from edge.errors import EdgeError, UsageError, ValidationError
from edge.model.component import MANIFEST_NAMES, ComponentManifest, load_component
from edge.model.device import DeviceConfig, load_device

log = logging.getLogger(__name__)

DEV_FILE = Path(".edge") / "dev.json"
# Folders whose changes never need a reload (tests, sample events, build output).
IGNORED_DIRS = frozenset(
    {"__pycache__", ".edge", "node_modules", "events", "tests", "test", ".git", ".venv",
     "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
)


@dataclass(frozen=True)
class DevEvent:
    """Something the developer should see: ``kind`` and its fields."""

    kind: str  # ready | loaded | reloaded | invalid | removed | invocation | log | stopped
    fields: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "at": round(self.at, 3), **self.fields}


EventSink = Callable[[DevEvent], None]


# -- the watcher --------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file that can change a component's behaviour."""
    found: dict[str, tuple[int, int]] = {}
    if not folder.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith((".pyc", ".swp", "~")) or name.startswith(".#"):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # removed while we walked; the next scan sees it gone
            found[path.relative_to(folder).as_posix()] = (st.st_mtime_ns, st.st_size)
    return found


def changed_files(old: dict[str, tuple[int, int]], new: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


# -- the agent, reporting each invocation ---------------------------------------------------


class _DevAgent(Agent):
    """The device agent, plus one report per finished invocation."""

    on_invocation: Callable[[ComponentRunner, Finished], None] | None = None

    def _finished(self, runner: ComponentRunner, done: Finished) -> None:
        super()._finished(runner, done)
        if self.on_invocation is not None:
            self.on_invocation(runner, done)


class _FunctionLogs(logging.Handler):
    """Turns the handlers' own output (logged by the runner) into ``log`` events."""

    def __init__(self, emit_event: EventSink) -> None:
        super().__init__(logging.INFO)
        self._emit_event = emit_event

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "stream", None) != "function":
            return
        self._emit_event(
            DevEvent("log", {"component": getattr(record, "component", ""),
                             "line": record.getMessage()})
        )


@dataclass
class _Watched:
    folder: Path
    files: dict[str, tuple[int, int]]
    name: str | None = None  # the component name it runs as, once valid
    version: str | None = None
    error: str | None = None


class DevSession:
    """Start with ``start()``, call ``poll()`` to check for changes, ``stop()`` at the end."""

    def __init__(
        self,
        root: Path,
        components: Sequence[Path],
        *,
        device_file: Path | None = None,
        broker_url: str | None = None,
        cloud: str = "local",
        data_dir: Path | None = None,
        on_event: EventSink = lambda _e: None,
        durability: str = "process",
    ) -> None:
        if cloud not in ("local", "device"):
            raise UsageError(f"--cloud: {cloud!r} is not 'local' or 'device'")
        self.root = root.resolve()
        self.folders = [Path(c).resolve() for c in components]
        if not self.folders:
            raise UsageError("no component folders to run (give COMPONENT_DIR ...)")
        self.device_file = device_file or self.root / "devices" / "local.yaml"
        self.broker_url = broker_url
        self.cloud_mode = cloud
        self.data_dir = data_dir or self.root / ".edge" / "dev"
        self.on_event = on_event
        self.fsync = durability == "power"
        self.device: DeviceConfig | None = None
        self.agent: _DevAgent | None = None
        self._broker: Any = None
        self._cloud: Any = None
        self._bus: Any = None
        self._clients: tuple[Any, Any] | None = None
        self._watched: dict[Path, _Watched] = {}
        self._saved_env: dict[str, str | None] = {}
        self._log_handler: _FunctionLogs | None = None
        self._saved_level = logging.NOTSET
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        from edge.mqtt.paho_bus import BrokerAddress, PahoBus

        device = load_device(self.device_file)
        if self.broker_url is None:
            from edge.local.broker import LocalBroker

            self._broker = LocalBroker()
            self._broker.start()
            self.broker_url = self._broker.url
        device = replace(device, broker=replace(device.broker, url=self.broker_url))
        if self.cloud_mode == "local":
            from edge.local.cloud import LocalCloud

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
            self._cloud = LocalCloud(region=device.cloud.region)
            self._cloud.start()
            # Workers inherit this process's environment: their boto3 clients (a
            # handler writing to DynamoDB itself) reach the local endpoint too.
            self._set_env(self._cloud.environment())
            device = replace(
                device,
                cloud=replace(
                    device.cloud, s3_endpoint=self._cloud.url, dynamodb_endpoint=self._cloud.url
                ),
            )
        self.device = device
        self._log_handler = _FunctionLogs(self._emit)
        # The agent logs each line a handler prints at INFO, tagged stream=function.
        agent_log = logging.getLogger("edge.agent")
        self._saved_level = agent_log.level
        agent_log.addHandler(self._log_handler)
        agent_log.setLevel(logging.INFO)
        bus = PahoBus(
            BrokerAddress.parse(self.broker_url),
            client_id=f"edge-dev-{device.thing_name}",
            persistent=True,
            manual_ack=True,
        )
        self._bus = bus
        manifests = []
        for folder in self.folders:
            watched = _Watched(folder, snapshot(folder))
            self._watched[folder] = watched
            manifest = self._validate(watched, initial=True)
            if manifest is not None:
                manifests.append(manifest)
                self._prepare_cloud(manifest)
        agent = _DevAgent(
            device, manifests, bus=bus, data_dir=self.data_dir,
            sink_factory=_sink_factory(device), fsync=self.fsync, heartbeat=30.0,
        )
        agent.on_invocation = self._invocation
        self.agent = agent
        agent.start()
        bus.connect(timeout=10)
        for manifest in manifests:
            self._emit(DevEvent("loaded", _describe(manifest, device.thing_name)))
        self._write_dev_file()
        self._emit(DevEvent("ready", {
            "broker": self.broker_url,
            "broker_kind": getattr(self._broker, "kind", "external"),
            "cloud": self._cloud.url if self._cloud else "device",
            "thing": device.thing_name,
            "dev_file": str(self.root / DEV_FILE),
        }))

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / DEV_FILE).unlink()
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        if self._log_handler is not None:
            agent_log = logging.getLogger("edge.agent")
            agent_log.removeHandler(self._log_handler)
            agent_log.setLevel(self._saved_level)
            self._log_handler = None
        if self._cloud is not None:
            self._cloud.stop()
            self._cloud = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        self._emit(DevEvent("stopped"))

    def __enter__(self) -> DevSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- watching ----------------------------------------------------------------------------
    def poll(self) -> list[str]:
        """Scan the component folders once; reload what changed. Returns the names reloaded.

        Scanning mtimes is how changes are noticed: inotify would need a new
        dependency (or ctypes), the folders hold a handful of files, and a scan
        every 100 ms costs well under a millisecond and keeps a reload far
        inside the one-second target.
        """
        reloaded: list[str] = []
        with self._lock:
            for folder, watched in self._watched.items():
                now = snapshot(folder)
                changes = changed_files(watched.files, now)
                if not changes:
                    continue
                watched.files = now
                name = self._reload(watched, changes)
                if name:
                    reloaded.append(name)
        return reloaded

    def watch(self, stop: threading.Event, interval: float = 0.1) -> None:
        """Poll until ``stop`` is set (``stop.wait`` is the pause, so a stop is immediate)."""
        while not stop.wait(interval):
            try:
                self.poll()
            except EdgeError as exc:  # a reload must never end the session
                self._emit(DevEvent("invalid", {"error": str(exc)}))

    def _reload(self, watched: _Watched, changes: list[str]) -> str | None:
        assert self.agent is not None and self.device is not None
        began = time.monotonic()
        if not any((watched.folder / n).is_file() for n in MANIFEST_NAMES):
            if watched.name is not None:
                self.agent.remove_component(watched.name)
                self._emit(DevEvent("removed", {"component": watched.name,
                                                "folder": str(watched.folder)}))
                watched.name = None
            return None
        manifest = self._validate(watched, initial=False)
        if manifest is None:
            return None
        if watched.name is not None and watched.name != manifest.name:
            self.agent.remove_component(watched.name)
        self._prepare_cloud(manifest)
        self.agent.add_component(manifest)
        watched.name, watched.version = manifest.name, manifest.version
        self._emit(DevEvent("reloaded", {
            **_describe(manifest, self.device.thing_name),
            "changed": changes[:10],
            "reload_ms": round((time.monotonic() - began) * 1000, 1),
        }))
        return manifest.name

    def _validate(self, watched: _Watched, *, initial: bool) -> ComponentManifest | None:
        try:
            manifest = load_component(watched.folder)
        except ValidationError as exc:
            watched.error = str(exc)
            running = watched.name is not None and not initial
            self._emit(DevEvent("invalid", {
                "folder": str(watched.folder),
                "error": str(exc),
                "running": f"{watched.name} {watched.version}" if running else None,
            }))
            return None
        clash = [
            w.folder for w in self._watched.values()
            if w is not watched and w.name == manifest.name
        ]
        if clash:
            self._emit(DevEvent("invalid", {
                "folder": str(watched.folder),
                "error": f"{manifest.source}: name: {manifest.name!r} is already run from "
                f"{clash[0]}",
                "running": None,
            }))
            return None
        watched.error = None
        if initial:
            watched.name, watched.version = manifest.name, manifest.version
        return manifest

    # -- cloud ------------------------------------------------------------------------------
    def _prepare_cloud(self, manifest: ComponentManifest) -> None:
        """Create the buckets and tables a component's results go to (local endpoint only)."""
        if self._cloud is None:
            return
        if self._clients is None:
            from edge.local.demo import _cloud_clients

            self._clients = _cloud_clients(self._cloud)
        s3, ddb = self._clients
        if manifest.results.s3:
            s3.ensure_bucket(manifest.results.s3.bucket, self._cloud.region)
        if manifest.results.dynamodb:
            d = manifest.results.dynamodb
            ddb.ensure_table(d.table, d.partition_key, d.sort_key)

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    # -- reports ----------------------------------------------------------------------------
    def _invocation(self, runner: ComponentRunner, done: Finished) -> None:
        outcome = done.outcome
        fields: dict[str, Any] = {
            "component": runner.manifest.name,
            "version": runner.manifest.version,
            "topic": done.intake.topic,
            "seq": done.intake.seq,
            "request_id": done.record.request_id if done.record else None,
            "duration_ms": round(outcome.duration_ms, 2),
            "ok": outcome.ok,
        }
        if outcome.ok:
            fields["result"] = _result_value(outcome.content_type, outcome.body)
        else:
            err = dict(outcome.error or {})
            fields["error"] = {"errorType": err.get("errorType"),
                               "errorMessage": err.get("errorMessage")}
        self._emit(DevEvent("invocation", fields))

    def _emit(self, event: DevEvent) -> None:
        try:
            self.on_event(event)
        except Exception:  # a broken renderer must not stop the agent
            log.exception("dev event sink failed")

    def _write_dev_file(self) -> None:
        path = self.root / DEV_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "broker": self.broker_url,
            "pid": os.getpid(),
            "cloud": self._cloud.url if self._cloud else None,
            "thing": self.device.thing_name if self.device else None,
            "components": [str(f) for f in self.folders],
        }, indent=2) + "\n")
        tmp.replace(path)


def _sink_factory(device: DeviceConfig) -> Any:
    from edge.agent.main import _sink_factory as agent_sinks

    return agent_sinks(device, None)


def _describe(manifest: ComponentManifest, thing: str) -> dict[str, Any]:
    from edge.local.scaffold import example_topic
    from edge.model.topics import render

    triggers = [render(t.topic, thing=thing, component=manifest.name) for t in manifest.triggers]
    return {
        "component": manifest.name,
        "version": manifest.version,
        "folder": str(manifest.path),
        "triggers": triggers,
        "example_topic": example_topic(triggers[0], thing) if triggers else None,
    }


def _result_value(content_type: str, body: bytes) -> Any:
    if content_type == "none":
        return None
    if content_type == "application/json":
        try:
            return json.loads(body)
        except ValueError:
            pass
    return f"<{len(body)} bytes>"


def default_components(root: Path) -> list[Path]:
    """Every component folder in ``<root>/components``."""
    folder = root / "components"
    if not folder.is_dir():
        raise UsageError(f"{folder}: no components folder; name COMPONENT_DIR ...")
    found = sorted(
        p for p in folder.iterdir()
        if p.is_dir() and any((p / n).is_file() for n in MANIFEST_NAMES)
    )
    if not found:
        raise UsageError(f"{folder}: no component folders in it")
    return found


def running_session(root: Path) -> dict[str, Any] | None:
    """The ``.edge/dev.json`` of a live ``edgectl dev`` in ``root`` (None if none or stale)."""
    path = root / DEV_FILE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = doc.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a session that was killed
    except PermissionError:
        pass  # alive, someone else's
    return doc if isinstance(doc.get("broker"), str) else None


@contextlib.contextmanager
def session(root: Path, components: Sequence[Path], **kwargs: Any) -> Iterator[DevSession]:
    dev = DevSession(root, components, **kwargs)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
