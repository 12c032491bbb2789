"""What the agent adds for operators beside the status document's basics.

* ``system`` in the status document: CPU and memory of the agent and its
  workers, free space in the data dir (``edge.agent.sysinfo``);
* log requests over MQTT (``edge.agent.logserve``), serving the per-component
  log files under ``<data dir>/logs`` (``edge.agent.funclogs``);
* ``deployments`` in the status document: the last ``HISTORY`` finished
  deployment reports, newest first, kept in ``<data dir>/status/deployments.json``
  so ``edgectl device show`` has a history across restarts;
* a sink-health watch: the syncer has no change callback, so a sink turning
  unhealthy (or healthy again) is noticed within ``SINK_WATCH`` seconds and
  republished at once rather than at the next heartbeat;
* the Prometheus endpoint (``edge.agent.metrics``) when ``--metrics-port`` is set.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.agent.logserve import LogServer
from edge.agent.sysinfo import SystemSampler
from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

LOGS_DIRNAME = "logs"
HISTORY = 10
SINK_WATCH = 2.0
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "ROLLED_BACK"})
_HISTORY_KEYS = ("deployment_id", "sequence", "state", "reason", "started_at", "updated_at",
                 "rollout", "running")  # fmt: skip


class DeploymentHistory:
    """Appends each finished deployment report it sees (via ``current()``) to a small file."""

    def __init__(self, path: Path, current: Callable[[], Any]) -> None:
        self._path = path
        self._current = current
        self._lock = threading.Lock()
        try:
            loaded = json.loads(path.read_text())
            self._items: list[dict[str, Any]] = [i for i in loaded if isinstance(i, dict)]
        except (OSError, ValueError, TypeError):
            self._items = []

    def snapshot(self) -> list[dict[str, Any]]:
        report = self._current()
        with self._lock:
            if isinstance(report, dict) and report.get("state") in FINAL_STATES:
                key = (report.get("deployment_id"), report.get("sequence"), report.get("state"))
                head = self._items[0] if self._items else {}
                if key != (head.get("deployment_id"), head.get("sequence"), head.get("state")):
                    self._items.insert(0, {k: report.get(k) for k in _HISTORY_KEYS})
                    del self._items[HISTORY:]
                    self._save()
            return list(self._items)

    def _save(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._items))
            tmp.replace(self._path)
        except OSError as exc:
            log.info("deployment history not saved: %s", exc)


class Observability:
    def __init__(
        self,
        agent: Any,
        bus: Bus,
        *,
        data_dir: Path,
        metrics_port: int | None = None,
        metrics_bind: str = "127.0.0.1",
        sink_watch: float = SINK_WATCH,
    ) -> None:
        self._agent = agent
        self._sink_watch = sink_watch
        self._stopped = threading.Event()
        sampler = SystemSampler(data_dir)
        agent.status_extras["system"] = sampler.snapshot

        def current_report() -> Any:
            build = agent.status_extras.get("deployment")
            return build() if build is not None else None

        self.history = DeploymentHistory(data_dir / "status" / "deployments.json", current_report)
        agent.status_extras["deployments"] = self.history.snapshot
        # Where the runtime writes function logs (RuntimeServices.logs, --log-dir).
        logs = getattr(getattr(agent, "services", None), "logs", None)
        root = Path(getattr(logs, "root", data_dir / LOGS_DIRNAME))
        self.logs = LogServer(bus, agent.thing, root, lambda: sorted(agent.runners))
        self.metrics = None
        if metrics_port is not None:
            from edge.agent.metrics import MetricsServer

            # A sampler of its own, so scrapes do not shorten the status document's CPU window.
            scrape_sampler = SystemSampler(data_dir)

            def build() -> dict[str, Any]:
                doc: dict[str, Any] = agent.status_doc("online")
                doc["system"] = scrape_sampler.snapshot()
                return doc

            self.metrics = MetricsServer(build, bind=metrics_bind, port=metrics_port)

    def _sink_states(self) -> dict[str, bool]:
        health = getattr(getattr(self._agent, "syncer", None), "health", None) or {}
        return {name: bool(getattr(h, "last_error", None)) for name, h in dict(health).items()}

    def _watch_sinks(self) -> None:
        seen = self._sink_states()
        while not self._stopped.wait(self._sink_watch):
            now = self._sink_states()
            if now != seen:
                seen = now
                self._agent.status.changed()

    def start(self) -> None:
        threading.Thread(target=self._watch_sinks, name="sink-watch", daemon=True).start()
        self.logs.start()
        if self.metrics is not None:
            self.metrics.start()
            host, port = self.metrics.address
            log.info("metrics on http://%s:%d/metrics", host, port, extra={"stream": "agent"})

    def stop(self) -> None:
        self._stopped.set()
        self.logs.stop()
        if self.metrics is not None:
            self.metrics.stop()
