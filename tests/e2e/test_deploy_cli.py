"""The deploy commands as a user runs them: `edgectl` processes against a real agent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.agent import Probe
from tests.harness.deploy import Project, served

pytestmark = pytest.mark.e2e


def edgectl(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True,
        cwd=project.root, timeout=120, check=False,
    )  # fmt: skip


def test_keys_deploy_rollback_remove(project: Project, probe: Probe) -> None:
    probe.follow("out/#")
    (project.root / "keys" / "fleet.key").unlink()
    (project.root / "keys" / "fleet.pub").unlink()
    assert edgectl(project, "keys", "init").returncode == 0
    project.agent("dev1").start()
    v1 = project.component("1.0.0")
    dry = edgectl(project, "deploy", str(v1), "--device", "dev1", "--dry-run")
    assert dry.returncode == 0 and "+ echo 1.0.0" in dry.stdout
    done = edgectl(project, "deploy", str(v1), "--device", "dev1", "--health-window", "0")
    assert done.returncode == 0, done.stderr
    assert "SUCCEEDED" in done.stdout
    v2 = project.component("2.0.0")
    assert edgectl(project, "deploy", str(v2), "--device", "dev1", "--health-window",
                   "0").returncode == 0  # fmt: skip
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[-1]["version"] == "2.0.0"

    back = edgectl(project, "rollback", "--device", "dev1", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["devices"][0]["state"] == "SUCCEEDED"
    probe.publish("in/echo/b", json.dumps({"n": 2}))
    assert served(probe, "echo", 2)[-1]["version"] == "1.0.0"

    gone = edgectl(project, "remove", "--device", "dev1", "--component", "echo")
    assert gone.returncode == 0, gone.stderr
    bad = edgectl(project, "remove", "--device", "dev1", "--component", "echo")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "edgectl: error: --component echo: not deployed on dev1 (deployed: none)"
    )
