"""What the agent gives each component's runtime beyond the channel to its workers.

- bounded per-component function log files (``edge.agent.funclogs``);
- memory slots for workers (cgroup v2 where possible, ``edge.agent.cgroup``);
- durable continuations for ``context.invoke_self``;
- the Greengrass v1 daemon contract (``edge.agent.ggv1``) with its local shadows.

``Agent`` builds one ``RuntimeServices`` and asks it for each runner's hooks
(``runner_hooks``) and environment (``environment``), so the agent module only
wires, and this room owns the runtime's side of the device.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.agent.cgroup import CgroupPool
from edge.agent.component import (
    PROP_ENCODING,
    ComponentRunner,
    ContinuationRecorder,
    is_json,
)
from edge.agent.funclogs import DEFAULT_FILE_BYTES, DEFAULT_TOTAL_BYTES, FunctionLogs
from edge.agent.ggv1 import GGv1Daemon
from edge.agent.shadow import ShadowStore
from edge.agent.store import IntakeRecord, Store
from edge.agent.worker import MemorySlot, Outcome, function_arn
from edge.model.component import ComponentManifest

if TYPE_CHECKING:
    from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)
# Function output is logged where it always was (``edge.local.dev`` listens there).
function_log = logging.getLogger("edge.agent.component")

# How long a worker waits for its continuation to be committed before failing it.
RECORD_TIMEOUT = 30.0


@dataclass(frozen=True)
class RuntimeOptions:
    log_dir: Path | None = None  # default: <data dir>/logs
    log_file_bytes: int = DEFAULT_FILE_BYTES
    log_total_bytes: int = DEFAULT_TOTAL_BYTES
    ggv1_port: int = 0  # 0: any free loopback port
    cgroups: bool = True  # try cgroup v2 memory slots before rlimits


class RecordFailed(Exception):
    pass


class RuntimeServices(ContinuationRecorder):
    def __init__(
        self,
        *,
        data_dir: Path,
        store: Store,
        bus: Bus,
        dispatch: Callable[[IntakeRecord], None],
        runner_for: Callable[[str], ComponentRunner | None],
        options: RuntimeOptions | None = None,
    ) -> None:
        opts = options or RuntimeOptions()
        self._store = store
        self._bus = bus
        self._dispatch = dispatch
        self._runner_for = runner_for
        self.logs = FunctionLogs(
            opts.log_dir or data_dir / "logs",
            file_bytes=opts.log_file_bytes,
            total_bytes=opts.log_total_bytes,
        )
        self.cgroups = CgroupPool.detect() if opts.cgroups else None
        self.ggv1 = GGv1Daemon(
            publish=self._publish,
            invoke=self._invoke,
            shadows=ShadowStore(data_dir / "shadows"),
            port=opts.ggv1_port,
        )

    def start(self) -> None:
        self.ggv1.start()

    def stop(self) -> None:
        self.ggv1.stop()
        self.logs.close()

    # -- per component ----------------------------------------------------------------
    def environment(self, manifest: ComponentManifest) -> dict[str, str]:
        if manifest.language != "python":
            return {}
        return self.ggv1.worker_environment(manifest.name, function_arn(manifest.name))

    def runner_hooks(self, manifest: ComponentManifest) -> dict[str, Any]:
        """Keyword arguments for ``ComponentRunner`` (see its docstring)."""
        pool = self.cgroups
        memory_mb = manifest.limits.memory_mb

        def slot() -> MemorySlot | None:
            return pool.slot(manifest.name, memory_mb) if pool is not None else None

        return {
            "on_dropped": self._dropped,
            "on_output": self._output,
            "continuations": self,
            "memory_slot": slot,
            "python_path": self.ggv1.python_path() if manifest.language == "python" else (),
        }

    def _dropped(self, runner: ComponentRunner, record: IntakeRecord) -> None:
        # drop-oldest: the record leaves the store unrun (counted by the runner).
        self._store.complete(record.seq, [])

    def _output(self, component: str, request_id: str, line: str) -> None:
        self.logs.write(component, request_id, line)
        function_log.info(
            "%s", line,
            extra={"component": component, "request_id": request_id or None,
                   "stream": "function"},
        )

    # -- continuations (ContinuationRecorder) -----------------------------------------
    def record(
        self,
        component: str,
        topic: str,
        payload: bytes,
        properties: dict[str, str],
        replaces: IntakeRecord | None,
    ) -> IntakeRecord:
        if replaces is not None:
            # Same ordered write stream: the old row goes before (or with) the new one.
            self._store.complete(replaces.seq, [])
        return self._record_row(component, topic, payload, properties)

    def _record_row(
        self, component: str, topic: str, payload: bytes, properties: dict[str, str]
    ) -> IntakeRecord:
        done = threading.Event()
        rows: list[IntakeRecord] = []

        def recorded(committed: list[IntakeRecord]) -> None:
            rows.extend(committed)
            done.set()

        self._store.record([component], topic, payload, properties, recorded)
        if not done.wait(RECORD_TIMEOUT) or not rows:
            raise RecordFailed(f"{component}: intake record on {topic!r} was not committed")
        return rows[0]

    # -- the v1 daemon's needs --------------------------------------------------------
    def _publish(self, topic: str, payload: bytes) -> None:
        self._bus.publish(topic, payload, qos=1)

    def _invoke(
        self, target: str, subject: str, payload: bytes, wait: float | None
    ) -> Future[Outcome] | None:
        runner = self._runner_for(target)
        if runner is None:
            raise KeyError(target)
        encoding = "json" if is_json(payload) else "binary"
        row = self._record_row(target, subject, payload, {PROP_ENCODING: encoding})
        future = runner.watch(row.seq) if wait is not None else None
        self._dispatch(row)
        return future
