"""A Prometheus text endpoint on the agent (off by default, loopback by default).

``edge-agent --metrics-port 9464 [--metrics-bind 127.0.0.1]`` serves
``GET /metrics`` in the Prometheus text exposition format (version 0.0.4),
built from the same status document the agent publishes, so the counters in
Grafana and in ``edgectl fleet status`` are the same numbers. Standard library
``http.server`` only: nothing to install on the device, one thread per scrape.
Binding beyond loopback is the operator's explicit choice (``--metrics-bind
0.0.0.0``); the endpoint has no authentication.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (document key, metric name, type, help)
_COMPONENT = (
    ("invocations", "edge_component_invocations_total", "counter", "Invocations finished."),
    ("errors", "edge_component_errors_total", "counter", "Invocations that failed."),
    ("timeouts", "edge_component_timeouts_total", "counter", "Invocations over the timeout."),
    ("throttles", "edge_component_throttles_total", "counter", "Messages refused: queue full."),
    ("worker_restarts", "edge_component_worker_restarts_total", "counter", "Workers restarted."),
    ("queue_depth", "edge_component_queue_depth", "gauge", "Records waiting for a worker."),
    ("workers", "edge_component_workers", "gauge", "Worker processes."),
)
_OUTBOX = (
    ("records", "edge_outbox_records", "gauge", "Result records waiting to sync."),
    ("bytes", "edge_outbox_bytes", "gauge", "Bytes waiting to sync."),
    ("oldest_age_s", "edge_outbox_oldest_age_seconds", "gauge", "Age of the oldest record."),
    ("written", "edge_outbox_written_total", "counter", "Records written to the sink."),
    ("dropped", "edge_outbox_dropped_total", "counter", "Records dropped by the full policy."),
    ("last_success", "edge_outbox_last_success_timestamp_seconds", "gauge",
     "Time of the last successful write."),
)  # fmt: skip
_SYSTEM = (
    ("cpu_seconds", "edge_agent_cpu_seconds_total", "counter", "Agent CPU time."),
    ("memory_rss_bytes", "edge_agent_resident_memory_bytes", "gauge", "Agent resident memory."),
    ("disk_free_bytes", "edge_data_dir_free_bytes", "gauge", "Free space in the data dir."),
    ("disk_total_bytes", "edge_data_dir_size_bytes", "gauge", "Size of the data dir's disk."),
)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[str] = []

    def add(self, value: object, **labels: object) -> None:
        number = _number(value)
        if number is not None:
            self.samples.append(f"{self.name}{_labels(labels)} {number:g}")

    def lines(self) -> Iterable[str]:
        if self.samples:
            yield f"# HELP {self.name} {self.help}"
            yield f"# TYPE {self.name} {self.kind}"
            yield from self.samples


def render(doc: Mapping[str, Any]) -> str:
    """The exposition text for one status document."""
    families: dict[str, _Family] = {}

    def fam(name: str, kind: str, help_text: str) -> _Family:
        if name not in families:
            families[name] = _Family(name, kind, help_text)
        return families[name]

    info = {"thing": doc.get("thing", ""), "version": doc.get("agent_version", "")}
    fam("edge_agent_info", "gauge", "The agent: thing and version.").add(1, **info)
    fam("edge_agent_uptime_seconds", "gauge", "Seconds since the agent started.").add(
        doc.get("uptime_s")
    )
    for name, body in sorted((doc.get("components") or {}).items()):
        if not isinstance(body, dict):
            continue
        labels = {"component": name, "version": body.get("version", "")}
        for key, metric, kind, help_text in _COMPONENT:
            fam(metric, kind, help_text).add(body.get(key, 0 if kind == "counter" else None),
                                             **labels)  # fmt: skip
        quantiles = fam("edge_component_duration_milliseconds", "gauge",
                        "Invocation duration over the recent window.")  # fmt: skip
        quantiles.add(body.get("duration_ms_p50"), **labels, quantile="0.5")
        quantiles.add(body.get("duration_ms_p99"), **labels, quantile="0.99")
        fam("edge_component_running", "gauge", "1 while the component is RUNNING.").add(
            1 if body.get("state") == "RUNNING" else 0, **labels
        )
    for sink, body in sorted((doc.get("outbox") or {}).items()):
        if isinstance(body, dict):
            for key, metric, kind, help_text in _OUTBOX:
                fam(metric, kind, help_text).add(body.get(key), sink=sink)
            fam("edge_outbox_healthy", "gauge", "0 while the sink's last write failed.").add(
                0 if body.get("last_error") else 1, sink=sink
            )
    system = doc.get("system") or {}
    for key, metric, kind, help_text in _SYSTEM:
        fam(metric, kind, help_text).add(system.get(key))
    workers = system.get("workers") or {}
    fam("edge_workers_resident_memory_bytes", "gauge", "Resident memory of all workers.").add(
        workers.get("memory_rss_bytes")
    )
    fam("edge_workers_count", "gauge", "Worker processes alive.").add(workers.get("count"))
    report = doc.get("deployment")
    if isinstance(report, dict):
        fam("edge_deployment_info", "gauge", "The last deployment and its state.").add(
            1, deployment_id=report.get("deployment_id", ""), state=report.get("state", "")
        )
    lines = [line for family in families.values() for line in family.lines()]
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, build: Callable[[], Mapping[str, Any]], *, bind: str, port: int) -> None:
        self._build = build
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = render(server._build()).encode()
                except Exception:
                    log.exception("metrics: building the document failed")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # one line per scrape would drown the agent's log

        self._http = ThreadingHTTPServer((bind, port), Handler)
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._http.serve_forever, name="metrics",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
