"""Direct deployments through the real CLI, a real Mosquitto and real agent processes."""

from __future__ import annotations

import json

import pytest

from tests.harness.agent import Probe
from tests.harness.deploy import Project, served

pytestmark = pytest.mark.integration


def test_deploy_update_and_unchanged_redeploy(project: Project, probe: Probe) -> None:
    probe.follow("out/#", "edge/dev1/deployment")
    agent = project.agent("dev1").start()
    v1 = project.component("1.0.0")
    first = project.deploy(str(v1), "--device", "dev1", "--health-window", "0.5")
    assert first["_code"] == 0, first["_err"]
    assert [d["state"] for d in first["devices"]] == ["SUCCEEDED"]
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[0]["version"] == "1.0.0"

    again = project.deploy(str(v1), "--device", "dev1")
    assert again["_code"] == 0, again["_err"]
    assert [d["state"] for d in again["devices"]] == ["UNCHANGED"]

    v2 = project.component("1.0.1")
    second = project.deploy(str(v2), "--device", "dev1", "--health-window", "0.5")
    assert second["_code"] == 0, second["_err"]
    probe.publish("in/echo/a", json.dumps({"n": 2}))
    bodies = served(probe, "echo", 2)
    assert bodies[-1]["version"] == "1.0.1"
    assert agent.alive()
