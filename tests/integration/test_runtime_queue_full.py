"""A component queue full under ``reject``: intake holds new messages back
(unacknowledged, so the broker keeps them) and takes them once the queue drains.
Nothing is lost, nothing runs twice, and arrival order is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, user_props, write_component

pytestmark = pytest.mark.integration

SLOW = """
    import time
    def handler(event, context):
        time.sleep(0.05)  # the workload: slower than the burst arrives
        return {"n": event["n"]}
"""


def test_reject_holds_a_burst_back_and_runs_each_message_once_in_order(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "c", "slow", SLOW,
        manifest="""
            limits: {timeout: 5s, max_instances: 1, max_queue: 2, queue_full: reject}
        """,
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#")
    for n in range(12):
        probe.publish("in/slow/x", json.dumps({"n": n}))
    outputs = probe.wait_count("out/slow", 12, timeout=30)
    assert [json.loads(m.payload)["n"] for m in outputs] == list(range(12))
    seqs = [int(user_props(m)["seq"]) for m in outputs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 12
    assert "queue of slow is full: holding intake" in agent.log_text()
    assert agent.alive()
