"""``edgectl graph --device``: the deployed set, read from the device's retained status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, write_device

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def graph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "graph", *args], cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )


def test_only_the_deployed_components_with_the_things_name(
    tmp_path: Path, mosquitto: Any, probe: Probe
) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    write_device(devices / "pi07.yaml", mosquitto.url, name="pi07")
    status = {"state": "online", "components": {
        "com.example.StreamAggregator": {"version": "1.0.0"},
        "com.example.ThresholdAlerts": {"version": "1.0.0"},
        "com.example.Gone": {"version": "0.1.0"},
    }}
    info = probe._client.publish("edge/pi07/status", json.dumps(status), qos=1, retain=True)
    info.wait_for_publish(5)
    proc = graph("--device", "pi07", "--devices-dir", str(devices), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [c["name"] for c in doc["components"]] == [
        "com.example.StreamAggregator", "com.example.ThresholdAlerts"
    ]
    assert doc["links"][0]["topic"] == "aggregates/pi07/minute"
    assert doc["missing"] == ["com.example.Gone"]
    assert "deployed but not found in the components folder: com.example.Gone" in doc["warnings"]


def test_no_status_is_a_one_line_error(tmp_path: Path, mosquitto: Any) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    write_device(devices / "pi08.yaml", mosquitto.url, name="pi08")
    proc = graph("--device", "pi08", "--devices-dir", str(devices), "--timeout", "0.5")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"edgectl: error: no status from device 'pi08' on {mosquitto.url} within 0.5s "
        "(topic edge/pi08/status)"
    )
    unknown = graph("--device", "pi9", "--devices-dir", str(devices))
    assert unknown.returncode == 2 and "unknown device 'pi9'" in unknown.stderr
