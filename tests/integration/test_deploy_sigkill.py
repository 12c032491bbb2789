"""SIGKILL the agent at each phase of a deployment: it comes back running the old or the
new version entirely, and finishes (or rolls back) the deployment."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.deploy.direct import BrokerAccess, DirectRequest, run_direct
from edge.model.device import load_inventory
from tests.harness.agent import Probe
from tests.harness.deploy import Project, served

pytestmark = pytest.mark.integration

FAILS_ALWAYS = """
def handler(event, context):
    raise ValueError("every invocation fails")
"""


def deploy_in_background(project: Project, folder: Path, window: float) -> dict[str, Any]:
    """Run the direct deployment in a thread (the CLI would block while we kill agents)."""
    outcome: dict[str, Any] = {}
    devices = tuple(load_inventory(project.root / "devices").values())

    def run() -> None:
        try:
            _plan, result = run_direct(
                DirectRequest(
                    devices=devices, component_dirs=(folder,), health_window=window,
                    timeout=60, key_path=project.root / "keys" / "fleet.key",
                    broker=BrokerAccess(project.broker.url),
                )
            )  # fmt: skip
            outcome["result"] = result
        except Exception as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def first_status_versions(probe: Probe, since: int) -> dict[str, str]:
    def online(ms: list[Any]) -> bool:
        return any(m.topic == "edge/dev1/status" and json.loads(m.payload).get("state") == "online"
                   for m in ms[since:])  # fmt: skip

    msgs = probe.wait_for(online)
    doc = next(json.loads(m.payload) for m in msgs[since:] if m.topic == "edge/dev1/status"
               and json.loads(m.payload).get("state") == "online")  # fmt: skip
    return {n: c["version"] for n, c in doc["components"].items()}


@pytest.mark.parametrize("phase", ["download", "unpack", "switch", "health"])
def test_sigkill_at_each_phase_then_converge(project: Project, probe: Probe, phase: str) -> None:
    probe.follow("out/#", "edge/dev1/#")
    agent = project.agent("dev1").start()
    v1 = project.component("1.0.0")
    assert project.deploy(str(v1), "--device", "dev1", "--health-window", "0")["_code"] == 0
    agent.terminate()

    v2 = project.component("2.0.0")
    (v2 / "blob.bin").write_bytes(os.urandom(600 * 1024))  # five chunks: a real transfer
    agent.env.update(EDGE_TEST_PAUSE_AT=phase, EDGE_TEST_PAUSE_FILE=str(project.root / "never"))
    agent.start()
    job = deploy_in_background(project, v2, window=1.0)
    probe.wait_for(lambda ms: any(m.topic == "edge/dev1/test/paused" and m.payload.decode() == phase
                                  for m in ms), 30)  # fmt: skip
    agent.kill()  # SIGKILL, exactly there

    data = agent.data_dir
    if phase == "download":
        have = list((data / "deploy" / "artifacts").glob("*.have"))
        assert have and json.loads(have[0].read_text())["have"] == [0]
    if phase == "unpack":
        assert list((data / "releases" / "echo").glob("*.unpack"))

    # What the agent will boot: the state file names one set entirely.
    expected_at_boot = "2.0.0" if phase in ("switch", "health") else "1.0.0"
    at_kill = json.loads((data / "deploy" / "state.json").read_text())
    assert {n: c["version"] for n, c in at_kill["current"].items()} == {"echo": expected_at_boot}
    assert at_kill["inflight"]["phase"] == phase

    for key in ("EDGE_TEST_PAUSE_AT", "EDGE_TEST_PAUSE_FILE"):
        agent.env.pop(key)
    since = len(probe.messages)
    agent.start()
    # The first status after the restart: the boot set, or already the finished deployment
    # (a resumed unpack can complete before the first status is published).
    versions = first_status_versions(probe, since)
    assert versions in ({"echo": expected_at_boot}, {"echo": "2.0.0"})

    job["thread"].join(60)
    assert "error" not in job, job.get("error")
    [outcome] = job["result"].outcomes
    assert outcome.state == "SUCCEEDED", outcome
    probe.publish("in/echo/x", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[-1]["version"] == "2.0.0"
    state = json.loads((data / "deploy" / "state.json").read_text())
    assert state["inflight"] is None and state["current"]["echo"]["version"] == "2.0.0"
    if phase == "download":
        assert "resuming deployment" in agent.log_text()


def test_sigkill_in_health_window_of_a_broken_version_rolls_back(
    project: Project, probe: Probe
) -> None:
    probe.follow("out/#", "edge/dev1/#")
    agent = project.agent("dev1").start()
    v1 = project.component("1.0.0")
    assert project.deploy(str(v1), "--device", "dev1", "--health-window", "0")["_code"] == 0
    agent.terminate()
    agent.env.update(EDGE_TEST_PAUSE_AT="health", EDGE_TEST_PAUSE_FILE=str(project.root / "x"))
    agent.start()
    v2 = project.component("2.0.0", code=FAILS_ALWAYS)
    job = deploy_in_background(project, v2, window=5.0)
    probe.wait_for(lambda ms: any(m.topic == "edge/dev1/test/paused" for m in ms), 30)
    agent.kill()
    for key in ("EDGE_TEST_PAUSE_AT", "EDGE_TEST_PAUSE_FILE"):
        agent.env.pop(key)
    agent.start()
    probe.publish("in/echo/x", json.dumps({"n": 1}))  # fails on 2.0.0: the gate trips
    job["thread"].join(60)
    [outcome] = job["result"].outcomes
    assert outcome.state == "ROLLED_BACK" and "failed invocation" in outcome.reason
    probe.publish("in/echo/y", json.dumps({"n": 2}))
    assert served(probe, "echo", 1)[-1]["version"] == "1.0.0"
