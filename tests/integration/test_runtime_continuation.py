"""Work beyond the timeout: a handler that processes 10,000 items with a 1 s timeout
by invoking itself with what is left (``context.invoke_self``). Every item is
processed exactly once across the chain of invocations, even though the agent
is SIGKILLed in the middle and restarted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, write_component

pytestmark = pytest.mark.integration

N = 10_000

CHAIN = """
    import time

    def handler(event, context):
        start, n = event["start"], event["n"]
        i = start
        while i < n and context.get_remaining_time_in_millis() > 250:
            time.sleep(0.0004)  # one item's work
            i += 1
        if i < n:
            context.invoke_self({"start": i, "n": n})
        return {"start": start, "end": i}
"""


def ranges(results_dir: Path) -> list[tuple[int, int]]:
    out = []
    for path in sorted((results_dir / "chain").glob("*.json")):
        doc = json.loads(path.read_bytes())
        out.append((doc["start"], doc["end"]))
    return sorted(out)


def test_invoke_self_finishes_every_item_exactly_once_across_a_sigkill(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "c", "chain", CHAIN,
        manifest="limits: {timeout: 1s, max_instances: 2}\n",
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#", "edge/dev1/chain/errors")
    probe.publish("in/chain/x", json.dumps({"start": 0, "n": N}))
    probe.wait_count("out/chain", 2, timeout=20)
    agent.kill()  # mid-chain: a continuation is recorded, its parent maybe not finished
    agent.start()
    probe.wait_for(
        lambda ms: any(
            m.topic == "out/chain" and json.loads(m.payload)["end"] == N for m in ms
        ),
        timeout=40,
    )
    # The local results sink holds one file per invocation (named by its intake
    # sequence number); re-runs after the kill overwrote their own file.
    deadline = time.monotonic() + 20
    while True:
        got = ranges(agent.results_dir)
        if got and got[-1][1] == N or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the syncer drains the outbox on its own schedule
    assert got[0][0] == 0 and got[-1][1] == N
    for (_, end), (start, _) in zip(got, got[1:], strict=False):
        assert start == end, f"items {min(start, end)}..{max(start, end)} not exactly once"
    assert len(got) >= 3  # it really took several invocations
    assert probe.on("edge/dev1/chain/errors") == []
