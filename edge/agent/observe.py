"""What the agent adds for operators beside the status document's basics.

* ``system`` in the status document: CPU and memory of the agent and its
  workers, free space in the data dir (``edge.agent.sysinfo``);
* log requests over MQTT (``edge.agent.logserve``), serving the per-component
  log files under ``<data dir>/logs`` (``edge.agent.funclogs``);
* the Prometheus endpoint (``edge.agent.metrics``) when ``--metrics-port`` is set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge.agent.logserve import LogServer
from edge.agent.sysinfo import SystemSampler
from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

LOGS_DIRNAME = "logs"


class Observability:
    def __init__(
        self,
        agent: Any,
        bus: Bus,
        *,
        data_dir: Path,
        metrics_port: int | None = None,
        metrics_bind: str = "127.0.0.1",
    ) -> None:
        self._agent = agent
        sampler = SystemSampler(data_dir)
        agent.status_extras["system"] = sampler.snapshot
        root = Path(getattr(getattr(agent, "function_logs", None), "root", data_dir / LOGS_DIRNAME))
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

    def start(self) -> None:
        self.logs.start()
        if self.metrics is not None:
            self.metrics.start()
            host, port = self.metrics.address
            log.info("metrics on http://%s:%d/metrics", host, port, extra={"stream": "agent"})

    def stop(self) -> None:
        self.logs.stop()
        if self.metrics is not None:
            self.metrics.stop()
