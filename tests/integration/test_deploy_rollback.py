"""Broken versions are rolled back automatically while events keep flowing, none lost
and none run twice."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from tests.harness.agent import Probe
from tests.harness.deploy import Project, served

pytestmark = pytest.mark.integration

RAISES_ON_IMPORT = """
raise RuntimeError("broken at import")
def handler(event, context):
    return {}
"""
FAILS_SMOKE = """
def handler(event, context):
    if event.get("smoke"):
        raise ValueError("smoke says no")
    return {"version": VERSION, "echo": event}
"""
FAILS_ALWAYS = """
def handler(event, context):
    raise ValueError("every invocation fails")
"""


class Publisher:
    """Publishes numbered events until stopped (pacing only; nothing waits on it)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.probe.publish(f"in/echo/e{self.sent}", json.dumps({"n": self.sent}))
            self.sent += 1

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def outcomes(probe: Probe, sent: int) -> Counter[int]:
    """Wait until every event produced exactly one output or error record; count them."""

    def done(ms: list) -> bool:
        ok = {json.loads(m.payload)["echo"]["n"] for m in ms if m.topic == "out/echo"}
        errors = sum(1 for m in ms if m.topic.endswith("/echo/errors"))
        return len(ok) + errors >= sent

    probe.wait_for(done, 30)
    counts: Counter[int] = Counter(
        json.loads(m.payload)["echo"]["n"] for m in probe.on("out/echo")
    )
    return counts


@pytest.mark.parametrize(
    ("code", "manifest", "reason"),
    [
        (RAISES_ON_IMPORT, "", "worker did not start"),
        (FAILS_SMOKE, "health:\n  smoke_event: events/smoke.json\n", "smoke event failed"),
        (FAILS_ALWAYS, "", "failed invocation"),
    ],
    ids=["raises-on-import", "fails-smoke-event", "fails-in-health-window"],
)
def test_broken_version_is_rolled_back_while_events_flow(
    project: Project, probe: Probe, code: str, manifest: str, reason: str
) -> None:
    probe.follow("out/#", "edge/dev1/#")
    agent = project.agent("dev1").start()
    v1 = project.component("1.0.0")
    assert project.deploy(str(v1), "--device", "dev1", "--health-window", "0")["_code"] == 0
    (v1 / "events").mkdir()
    (v1 / "events" / "smoke.json").write_text('{"smoke": true}')
    v2 = project.component("2.0.0", code=code, manifest=manifest)
    with Publisher(probe) as pub:
        served(probe, "echo", 3)
        result = project.deploy(str(v2), "--device", "dev1", "--health-window", "3")
    assert result["_code"] == 1
    [device] = result["devices"]
    assert device["state"] == "ROLLED_BACK", device
    assert reason in device["reason"]
    counts = outcomes(probe, pub.sent)
    errors = len(probe.on("edge/dev1/echo/errors"))
    assert all(c == 1 for c in counts.values()), "an event ran twice"
    assert len(counts) + errors == pub.sent, "an event was lost"
    # The old version serves again.
    probe.publish("in/echo/after", json.dumps({"n": -1}))
    probe.wait_for(
        lambda ms: any(m.topic == "out/echo" and json.loads(m.payload)["echo"]["n"] == -1
                       for m in ms)
    )  # fmt: skip
    last = [json.loads(m.payload) for m in probe.on("out/echo")][-1]
    assert last["version"] == "1.0.0"
    report = json.loads(
        probe.on("edge/dev1/deployment")[-1].payload
    )
    assert report["running"]["echo"]["version"] == "1.0.0"
    assert agent.alive()
