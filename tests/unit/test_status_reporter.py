"""The status reporter's additions (heartbeat, recent window, will), the system sampler
on this very process, the Prometheus rendering and the log line format."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.agent.funclogs import FunctionLogs
from edge.agent.logserve import log_files, parse_line, read_lines
from edge.agent.metrics import render
from edge.agent.status import StatusReporter, offline_will
from edge.agent.sysinfo import SystemSampler
from edge.mqtt.bus import ConnectionHandler, Message, MessageHandler


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []
        self.expiries: list[int | None] = []

    def connect(self, timeout: float = 10.0) -> None: ...
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None,
                timeout: float | None = None, expiry: int | None = None) -> None:  # fmt: skip
        self.published.append((topic, payload, retain))
        self.expiries.append(expiry)

    def ack(self, message: Message) -> None: ...
    def on_connection_change(self, handler: ConnectionHandler) -> None: ...
    def close(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recent_counts_only_the_window() -> None:
    clock = Clock()
    counters = {"invocations": 0, "errors": 0}

    def build(state: str) -> dict[str, Any]:
        return {"state": state, "components": {"c": dict(counters)}}

    reporter = StatusReporter(RecordingBus(), "pi01", build, heartbeat=30, window=300,
                              clock=clock)  # fmt: skip
    counters.update(invocations=10, errors=2)
    clock.now += 30
    doc = reporter.document()
    assert doc["heartbeat_s"] == 30
    assert doc["components"]["c"]["recent"] == {
        "window_s": 300, "invocations": 10, "errors": 2, "timeouts": 0, "throttles": 0,
    }  # fmt: skip
    for _ in range(11):  # five and a half minutes of quiet heartbeats
        clock.now += 30
        reporter.document()
    counters.update(invocations=13)
    clock.now += 30
    recent = reporter.document()["components"]["c"]["recent"]
    assert (recent["invocations"], recent["errors"]) == (3, 0)


def test_an_online_document_carries_its_expiry_and_an_offline_one_does_not() -> None:
    # The reader's age of a document is its expiry_s minus what the broker left of the
    # message's expiry: the two must be the same number.
    from edge.model.status import STATUS_EXPIRY_S

    bus = RecordingBus()
    reporter = StatusReporter(bus, "pi01", lambda state: {"state": state}, heartbeat=30)
    assert reporter.publish("online") and reporter.publish("offline")
    online, offline = (json.loads(payload) for _, payload, _ in bus.published)
    assert online["expiry_s"] == STATUS_EXPIRY_S and bus.expiries[0] == STATUS_EXPIRY_S
    assert "expiry_s" not in offline and bus.expiries[1] is None  # kept until replaced
    assert all(retain for _, _, retain in bus.published)


def test_a_replaced_component_starts_its_window_over() -> None:
    clock = Clock()
    counters = {"errors": 5}

    def build(state: str) -> dict[str, Any]:
        return {"components": {"c": dict(counters)}}

    reporter = StatusReporter(RecordingBus(), "pi01", build, clock=clock)
    reporter.document()
    counters["errors"] = 1  # a new runner: its counters start from zero
    clock.now += 30
    assert reporter.document()["components"]["c"]["recent"]["errors"] == 1  # not -4


def test_publish_is_retained_on_the_status_topic_and_the_will_says_so() -> None:
    bus = RecordingBus()
    reporter = StatusReporter(bus, "pi01", lambda s: {"state": s, "components": {}})
    assert reporter.publish("online")
    topic, payload, retain = bus.published[0]
    assert (topic, retain) == ("edge/pi01/status", True)
    assert json.loads(payload)["state"] == "online"
    will = json.loads(offline_will("pi", "pi01"))
    assert will == {"schema": 1, "state": "offline", "device": "pi", "thing": "pi01",
                    "will": True}  # fmt: skip


def test_system_sampler_sees_this_process_and_its_children(tmp_path: Path) -> None:
    sampler = SystemSampler(tmp_path)
    first = sampler.snapshot()
    assert first["cpu_percent"] is None  # no interval yet
    assert first["memory_rss_bytes"] > 1_000_000
    assert first["disk_free_bytes"] > 0 and first["disk_total_bytes"] >= first["disk_free_bytes"]
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        second = sampler.snapshot()
        assert second["workers"]["count"] >= 1
        assert second["workers"]["memory_rss_bytes"] > 0
        assert second["cpu_percent"] is not None and second["cpu_percent"] >= 0
    finally:
        child.communicate(b"")


def test_prometheus_text_from_a_status_document() -> None:
    doc = {
        "thing": "pi01", "agent_version": "0.1.0", "uptime_s": 12.5,
        "components": {"com.example.Hello": {
            "version": "1.0.0", "state": "RUNNING", "invocations": 7, "errors": 1,
            "duration_ms_p50": 0.4, "duration_ms_p99": None, "queue_depth": 0, "workers": 1}},
        "outbox": {"s3": {"records": 3, "bytes": 10, "written": 2, "last_error": "x\"y"}},
        "system": {"cpu_seconds": 1.5, "memory_rss_bytes": 30_000_000,
                   "workers": {"count": 1, "memory_rss_bytes": 20_000_000}},
        "deployment": {"deployment_id": "d-1", "state": "SUCCEEDED"},
    }  # fmt: skip
    text = render(doc)
    labels = 'component="com.example.Hello",version="1.0.0"'
    assert f"edge_component_invocations_total{{{labels}}} 7" in text
    assert f"edge_component_throttles_total{{{labels}}} 0" in text
    assert f'edge_component_duration_milliseconds{{{labels},quantile="0.5"}} 0.4' in text
    assert 'quantile="0.99"' not in text  # no value, no sample
    assert 'edge_outbox_healthy{sink="s3"} 0' in text
    assert "edge_agent_cpu_seconds_total 1.5" in text
    assert 'edge_deployment_info{deployment_id="d-1",state="SUCCEEDED"} 1' in text
    assert text.count("# TYPE edge_component_invocations_total counter") == 1
    assert text.endswith("\n")


def test_log_lines_round_trip_through_the_runtime_writer(tmp_path: Path) -> None:
    logs = FunctionLogs(tmp_path, file_bytes=200, total_bytes=1000)
    for i in range(20):
        logs.write("com.example.Hello", f"r-{i}", f"line {i:02d}", now=1_800_000_000 + i + 0.25)
    files = log_files(tmp_path, "com.example.Hello")
    assert files[-1].name == "com.example.Hello.log" and len(files) > 2
    lines = read_lines(tmp_path, "com.example.Hello", since=1_800_000_015)
    assert [x.text for x in lines] == [f"line {i:02d}" for i in range(15, 20)]
    assert lines[0].ts == 1_800_000_015.25 and lines[0].request_id == "r-15"
    assert parse_line("c", "no tabs here") is None
    assert parse_line("c", "yesterday\tr\ttext") is None


class FakeHealth:
    def __init__(self) -> None:
        self.last_error: str | None = None


class FakeAgent:
    """What ``Observability`` touches on an agent, and nothing else."""

    def __init__(self) -> None:
        import threading
        from types import SimpleNamespace

        self.thing = "pi01"
        self.runners: dict[str, object] = {}
        self.status_extras: dict[str, Any] = {}
        self.syncer = SimpleNamespace(health={"s3": FakeHealth()})
        self.changes = threading.Semaphore(0)
        self.status = SimpleNamespace(changed=self.changes.release)


def test_a_sink_turning_unhealthy_is_published_without_waiting_for_the_heartbeat(
    tmp_path: Path,
) -> None:
    from edge.agent.observe import Observability

    agent = FakeAgent()
    observe = Observability(agent, RecordingBus(), data_dir=tmp_path, sink_watch=0.01)
    assert set(agent.status_extras) == {"system", "deployments"}
    observe.start()
    try:
        agent.syncer.health["s3"].last_error = "AccessDenied"
        assert agent.changes.acquire(timeout=5)
        agent.syncer.health["s3"].last_error = None
        assert agent.changes.acquire(timeout=5)
    finally:
        observe.stop()


def test_finished_deployments_are_kept_newest_first_across_restarts(tmp_path: Path) -> None:
    from edge.agent.observe import DeploymentHistory

    current: dict[str, Any] = {"deployment_id": "d-1", "sequence": 1, "state": "IN_PROGRESS"}
    path = tmp_path / "status" / "deployments.json"
    history = DeploymentHistory(path, lambda: current)
    assert history.snapshot() == []
    current.update(state="SUCCEEDED")
    assert [h["deployment_id"] for h in history.snapshot()] == ["d-1"]
    assert len(history.snapshot()) == 1  # the same report is recorded once
    current.update(deployment_id="d-2", sequence=2, state="ROLLED_BACK", reason="health")
    again = DeploymentHistory(path, lambda: current)  # a restart
    assert [(h["deployment_id"], h["state"]) for h in again.snapshot()] == [
        ("d-2", "ROLLED_BACK"), ("d-1", "SUCCEEDED"),
    ]  # fmt: skip
