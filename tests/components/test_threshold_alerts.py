"""components/threshold-alerts: the Node.js sample, run in the Node.js worker runtime."""

from __future__ import annotations

import shutil

import pytest

from edge.testing import mqtt_event, run_handler
from tests.components.helpers import COMPONENTS, REPO

HERE = COMPONENTS / "threshold-alerts"
TOPIC = "aggregates/local/minute"

pytestmark = [
    pytest.mark.skipif(
        not (REPO / "edge" / "runtime" / "node").exists(),
        reason="the Node.js worker runtime (edge/runtime/node) is not in this tree yet",
    ),
    pytest.mark.skipif(shutil.which("node") is None, reason="no `node` binary on PATH"),
]


def test_a_hot_window_raises_an_alert() -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, HERE / "events" / "hot.json"), mode="worker")
    assert result.ok, result.error
    assert result.value["sensor"] == "t1"
    assert result.value["reasons"] == ["mean 30.2 > 25", "max 41.5 > 40"]
    assert result.value["request_id"] == result.request_id


def test_a_normal_window_publishes_nothing() -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, HERE / "events" / "normal.json"), mode="worker")
    assert result.ok, result.error
    assert result.value is None


def test_a_malformed_aggregate_is_a_lambda_style_error() -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, {"sensor": "t1"}), mode="worker")
    assert not result.ok
    assert result.error_type == "TypeError"
    assert "window_start: not a string" in result.error["errorMessage"]


def test_thresholds_come_from_the_environment() -> None:
    result = run_handler(
        HERE, mqtt_event(TOPIC, HERE / "events" / "normal.json"), mode="worker",
        environment={"MEAN_THRESHOLD": "20"},
    )
    assert result.value["reasons"] == ["mean 21.33 > 20"]
