"""Every sample component runs in ``edgectl demo`` on one agent, with the default kept."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.components.helpers import REPO

pytestmark = pytest.mark.e2e

SAMPLES = ["thumbnailer", "table-mirror", "stream-aggregator", "threshold-alerts", "hello"]


def test_the_samples_run_together_in_the_demo() -> None:
    args = [a for name in SAMPLES for a in ("--component", f"components/{name}")]
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "demo", *args, "--json", "--timeout", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INFO" not in proc.stderr
    doc = json.loads(proc.stdout)
    by_name = {c["component"]: c for c in doc["components"]}
    assert list(by_name) == [
        "com.example.Thumbnailer", "com.example.TableMirror", "com.example.StreamAggregator",
        "com.example.ThresholdAlerts", "com.example.Hello",
    ]
    thumbs = by_name["com.example.Thumbnailer"]
    assert len(thumbs["outputs"]) == 2 and len(thumbs["objects"]) == 2
    assert len(thumbs["items"]) == 2
    assert all(o["key"].endswith(".bin") for o in thumbs["objects"])
    mirror = by_name["com.example.TableMirror"]
    assert [o["payload"]["applied"] for o in mirror["outputs"]] == [True, True, True]
    windows = by_name["com.example.StreamAggregator"]
    assert [o["payload"]["count"] for o in windows["outputs"]] == [3]
    assert len(windows["items"]) == 1
    alerts = by_name["com.example.ThresholdAlerts"]
    assert [o["payload"]["sensor"] for o in alerts["outputs"]] == ["t1"]  # the hot window
    assert all(not c["errors"] for c in doc["components"]), [c["errors"] for c in doc["components"]]
