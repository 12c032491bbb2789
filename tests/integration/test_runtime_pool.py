"""The worker pool's Greengrass Lambda parameters, driven through the real agent and
a real broker: timeouts, out-of-memory, crashes, BROKEN after three worker
failures, drop-oldest on a full queue, on-demand scale-up and idle exit, and the
per-component function log files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, user_props, write_component

pytestmark = pytest.mark.integration

FAULTS = """
    import os, signal, threading
    def handler(event, context):
        do = event.get("do")
        print("doing", do)
        if do == "hang":
            threading.Event().wait(30)
        if do == "eat":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if do == "exit":
            os._exit(9)
        if do == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        return {"pid": os.getpid(), "n": event.get("n")}
"""


def latest_status(probe: Probe, component: str, predicate: Any, timeout: float = 15) -> dict:
    """Wait for a status document whose entry for ``component`` satisfies ``predicate``."""
    found: dict[str, Any] = {}

    def check(msgs: list[Any]) -> bool:
        for m in reversed(msgs):
            if m.topic == "edge/dev1/status" and m.payload:
                entry = json.loads(m.payload).get("components", {}).get(component)
                if entry is not None and predicate(entry):
                    found.update(entry)
                    return True
        return False

    probe.wait_for(check, timeout)
    return found


def errors_of(probe: Probe, component: str, n: int) -> list[dict[str, Any]]:
    msgs = probe.wait_count(f"edge/dev1/{component}/errors", n)
    msgs.sort(key=lambda m: int(user_props(m)["seq"]))
    return [json.loads(m.payload) for m in msgs]


def test_timeout_oom_and_crash_cost_one_worker_each(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "c", "faults", FAULTS,
        manifest="limits: {timeout: 0.5s, memory_mb: 48, max_instances: 1}\n",
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#", "edge/dev1/faults/errors", "edge/dev1/status")
    for do in ("hang", "ok", "eat", "ok", "segv", "ok"):
        probe.publish("in/faults/x", json.dumps({"do": do}))
    errors = errors_of(probe, "faults", 3)
    assert [e["errorType"] for e in errors] == [
        "Runtime.Timeout", "Runtime.OutOfMemory", "Runtime.ExitError",
    ]
    assert "0.50 seconds" in errors[0]["errorMessage"]
    assert "48 MB" in errors[1]["errorMessage"]
    assert "SIGSEGV" in errors[2]["errorMessage"]
    outs = probe.wait_count("out/faults", 3)
    # Every failure replaced the worker: three good answers from three processes.
    assert len({json.loads(m.payload)["pid"] for m in outs}) == 3
    entry = latest_status(probe, "faults", lambda e: e["invocations"] >= 6)
    assert entry["timeouts"] == 1 and entry["out_of_memory"] == 1
    assert entry["state"] == "RUNNING"
    assert agent.alive()

    # Lambda-like log lines: each carries its request id, in the component's own file.
    request_ids = {user_props(m)["request-id"] for m in outs}
    log_file = agent.data_dir / "logs" / "faults.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the log pump is a separate thread
        lines = log_file.read_text().splitlines() if log_file.exists() else []
        if sum("doing ok" in line for line in lines) >= 3:
            break
        time.sleep(0.05)
    tagged = {line.split("\t")[1] for line in lines if line.endswith("doing ok")}
    assert tagged == request_ids


def test_three_worker_failures_in_a_row_make_the_component_broken(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "c", "crashy", FAULTS, manifest="limits: {max_instances: 1}\n",
    )
    other = write_component(tmp_path / "c", "fine", FAULTS)
    agent = agent_factory([comp, other]).start()
    probe.follow("out/#", "edge/dev1/crashy/errors", "edge/dev1/status")
    for _ in range(4):
        probe.publish("in/crashy/x", json.dumps({"do": "exit"}))
    errors = errors_of(probe, "crashy", 3)
    assert all(e["errorType"] == "Runtime.ExitError" for e in errors)
    entry = latest_status(probe, "crashy", lambda e: e["state"] == "BROKEN")
    assert entry["errors"] == 3
    # The fourth record waits in the store (for a redeploy); other components go on.
    probe.publish("in/fine/x", json.dumps({"n": 1}))
    probe.wait_count("out/fine", 1)
    assert len(probe.on("edge/dev1/crashy/errors")) == 3
    assert agent.alive()


def test_drop_oldest_counts_and_completes_what_it_drops(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    slow = """
        import time
        def handler(event, context):
            time.sleep(0.3)
            return event
    """
    comp = write_component(
        tmp_path / "c", "lossy", slow,
        manifest="limits: {max_instances: 1, max_queue: 2, queue_full: drop-oldest}\n",
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#", "edge/dev1/status")
    for n in range(8):
        probe.publish("in/lossy/x", json.dumps({"n": n}))
    entry = latest_status(
        probe, "lossy",
        lambda e: e["dropped"] > 0 and e["dropped"] + e["invocations"] == 8
        and e["queue_depth"] == 0,
    )
    outs = probe.wait_count("out/lossy", entry["invocations"])
    ran = [json.loads(m.payload)["n"] for m in outs]
    assert ran[-1] == 7  # the newest always survives
    assert len(ran) == 8 - entry["dropped"]
    # Nothing is left pending: a restart runs nothing again.
    assert agent.terminate() == 0
    agent.start()
    probe.publish("in/lossy/x", json.dumps({"n": 99}))
    after = probe.wait_count("out/lossy", len(ran) + 1)
    assert [json.loads(m.payload)["n"] for m in after[len(ran):]] == [99]


def test_unpinned_workers_scale_up_on_demand_and_exit_when_idle(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    code = """
        import os, time
        def handler(event, context):
            time.sleep(0.4)
            return {"pid": os.getpid()}
    """
    comp = write_component(
        tmp_path / "c", "burst", code,
        manifest="limits: {pinned: false, max_instances: 3, idle_timeout: 0.5s}\n",
    )
    agent_factory([comp]).start()
    probe.follow("out/#")
    for n in range(3):
        probe.publish("in/burst/x", json.dumps({"n": n}))
    pids = {json.loads(m.payload)["pid"] for m in probe.wait_count("out/burst", 3)}
    assert len(pids) == 3  # three at once, not one after another
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "idle workers did not exit"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
