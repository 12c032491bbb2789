"""components/stream-aggregator: minute windows, exactly once across re-runs and restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.testing import mqtt_event, run_handler
from tests.components.helpers import COMPONENTS, copy_component, wait_for
from tests.harness.agent import Probe
from tests.harness.moto import unique_name

HERE = COMPONENTS / "stream-aggregator"
TOPIC = "telemetry/site1/readings"
BASE = 1767225600  # 2026-01-01T00:00:00Z


def reading(sensor: str, ts: float, value: float) -> Any:
    return mqtt_event(TOPIC, {"sensor": sensor, "ts": ts, "value": value})


def run(state: Path, event: Any, request_id: str | None = None, mode: str = "process") -> Any:
    result = run_handler(HERE, event, state_dir=state, request_id=request_id, mode=mode)
    assert result.ok, result.error
    return result.value


@pytest.mark.parametrize("mode", ["process", "worker"])
def test_the_sample_events_close_one_window(tmp_path: Path, mode: str) -> None:
    events = sorted((HERE / "events").glob("*.json"))
    values = [run(tmp_path, mqtt_event(TOPIC, p), mode=mode) for p in events]
    assert values[:3] == [None, None, None]
    assert values[3] == {
        "sensor": "t1", "window_start": "2026-01-01T00:00:00Z", "window_seconds": 60,
        "count": 3, "min": 20.5, "max": 22.0, "mean": 21.333333,
    }


def test_a_rerun_after_a_crash_returns_the_same_window_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    run(tmp_path, reading("t1", BASE + 1, 1.0), "r1")
    first = run(tmp_path, reading("t1", BASE + 61, 5.0), "r2")  # closes minute 0
    again = run(tmp_path, reading("t1", BASE + 61, 5.0), "r2")  # the same record re-run
    assert first == again and first["count"] == 1
    closed = run(tmp_path, reading("t1", BASE + 121, 0.0), "r3")  # closes minute 1
    assert closed["count"] == 1 and closed["min"] == 5.0  # the re-run was not counted


def test_sensors_have_their_own_windows_and_late_readings_are_dropped(tmp_path: Path) -> None:
    run(tmp_path, reading("a", BASE + 1, 1.0))
    run(tmp_path, reading("b", BASE + 65, 7.0))
    assert run(tmp_path, reading("a", BASE + 2, 3.0)) is None  # a's minute 0 is still open
    closed = run(tmp_path, reading("a", BASE + 70, 9.0))
    assert (closed["sensor"], closed["count"], closed["mean"]) == ("a", 2, 2.0)
    assert run(tmp_path, reading("a", BASE + 3, 100.0)) is None  # late: minute 0 is closed
    state = json.loads((tmp_path / "windows.json").read_text())
    assert state["late"] == 1 and state["windows"]["a"]["count"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_readings_are_clear_errors(tmp_path: Path) -> None:
    result = run_handler(
        HERE, mqtt_event(TOPIC, {"sensor": "t1", "value": "hot"}), state_dir=tmp_path
    )
    assert result.error_type == "ValueError"
    assert result.error["errorMessage"] == "value: 'hot' is not a number"
    no_state = run_handler(HERE, mqtt_event(TOPIC, {"value": 1}))
    assert "EDGE_STATE_DIR is not set" in no_state.error["errorMessage"]


def test_every_window_reaches_dynamodb_exactly_once_across_a_sigkill_of_the_agent(
    tmp_path: Path, agent_factory: Any, probe: Probe, moto_server: Any, ddb_client: Any
) -> None:
    table = unique_name("agg")
    ddb_client.ensure_table(table)
    comp = copy_component(
        "stream-aggregator", tmp_path, {"table: edge-demo-aggregates": f"table: {table}"}
    )
    agent = agent_factory([comp], moto_url=moto_server.url).start()
    probe.follow("aggregates/#")
    readings = [
        (sensor, BASE + minute * 60 + i * 10, float(minute * 10 + i))
        for minute in range(10) for i in range(5) for sensor in ("t1", "t2")
    ]
    half = len(readings) // 2
    for sensor, ts, value in readings[:half]:
        probe.publish(TOPIC, json.dumps({"sensor": sensor, "ts": ts, "value": value}))
    probe.wait_count("aggregates/dev1/minute", 2)
    agent.kill()  # SIGKILL: whatever was in flight runs again after the restart
    for sensor, ts, value in readings[half:]:
        probe.publish(TOPIC, json.dumps({"sensor": sensor, "ts": ts, "value": value}))
    agent.start()
    expected = {
        (sensor, minute): (5, minute * 10.0, minute * 10.0 + 4, minute * 10.0 + 2)
        for sensor in ("t1", "t2") for minute in range(9)  # minute 9 is still open
    }
    items = wait_for(lambda: ddb_client.scan_all(table), lambda v: len(v) >= 18, timeout=40)
    got: dict[tuple[str, int], tuple[float, ...]] = {}
    for item in items:
        w = item["result"]
        key = (w["sensor"], (int(w["window_start"][14:16])))
        assert key not in got, f"window {key} stored twice"
        got[key] = (int(w["count"]), float(w["min"]), float(w["max"]), float(w["mean"]))
    assert got == expected
