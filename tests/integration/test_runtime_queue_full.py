"""A component queue full under ``reject``: intake holds new messages back
(unacknowledged, so the broker keeps them) and takes them once the queue drains.
Nothing is lost, nothing runs twice, and arrival order is kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, user_props, write_component

pytestmark = pytest.mark.integration

GATED = """
    import os, time
    def handler(event, context):
        # Hold the only worker until the test opens the gate, so the queue fills.
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        return {"n": event["n"]}
"""


def test_reject_holds_a_burst_back_and_runs_each_message_once_in_order(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    gate = tmp_path / "gate"
    comp = write_component(
        tmp_path / "c", "slow", GATED,
        manifest=f"""
            limits: {{timeout: 60s, max_instances: 1, max_queue: 2, queue_full: reject}}
            environment: {{GATE: "{gate}"}}
        """,
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#", "edge/dev1/status")
    for n in range(12):
        probe.publish("in/slow/x", json.dumps({"n": n}))
    # One running, two queued: the rest must be held back. The log is a file with no
    # event to wait on, so it is polled with a deadline.
    deadline = time.monotonic() + 30
    while "queue of slow is full: holding intake" not in agent.log_text():
        assert time.monotonic() < deadline, agent.log_text()[-2000:]
        time.sleep(0.05)
    assert not probe.on("out/slow")
    # Each message held back is a throttle of the component in its status document:
    # one running and two queued, or two queued before the worker took the first.
    def throttles(messages: list[Any]) -> int:
        docs = [json.loads(m.payload) for m in messages if m.topic == "edge/dev1/status"]
        return max((d.get("components", {}).get("slow", {}).get("throttles", 0)
                    for d in docs if d.get("state") == "online"), default=0)

    probe.wait_for(lambda ms: throttles(ms) >= 9, timeout=15)
    assert throttles(probe.on("edge/dev1/status")) in (9, 10)
    gate.touch()
    outputs = probe.wait_count("out/slow", 12, timeout=30)
    assert [json.loads(m.payload)["n"] for m in outputs] == list(range(12))
    seqs = [int(user_props(m)["seq"]) for m in outputs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 12
    assert agent.alive()
