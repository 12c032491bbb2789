"""``edgectl logs`` through a real broker and a real agent serving its log files."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.agent.funclogs import FunctionLogs
from tests.harness.agent import REPO, AgentRunner, write_component
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

HELLO = """
def handler(event, context):
    return None
"""


def edgectl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args, "--devices-dir", "/nonexistent"],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
    )  # fmt: skip


@pytest.fixture
def running(
    tmp_path: Path, agent_factory: Callable[..., AgentRunner]
) -> tuple[AgentRunner, FunctionLogs]:
    hello = write_component(tmp_path / "components", "hello", HELLO)
    other = write_component(tmp_path / "components", "other", HELLO)
    agent = agent_factory([hello, other], device="pi01").start()
    # The files the runtime writes (edge.agent.funclogs), where the agent serves them from.
    return agent, FunctionLogs(agent.data_dir / "logs", file_bytes=400, total_bytes=4000)


def test_past_lines_oldest_first_with_since_and_component(
    mosquitto: MosquittoBroker, running: tuple[AgentRunner, FunctionLogs]
) -> None:
    _, logs = running
    now = time.time()
    logs.write("hello", "r-old", "from an hour ago", now=now - 3600)
    logs.write("hello", "r-1", "first", now=now - 5)
    logs.write("other", "r-2", "second", now=now - 4)
    logs.write("hello", "r-3", "third\twith a tab", now=now - 3)
    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url, "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["from an hour ago", "first", "second",
                                          "third\twith a tab"]  # fmt: skip
    assert lines[1]["component"] == "hello" and lines[1]["request_id"] == "r-1"

    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url, "--json",
                   "--since", "10m", "--component", "hello")  # fmt: skip
    assert [json.loads(x)["text"] for x in done.stdout.splitlines()] == [
        "first",
        "third\twith a tab",
    ]
    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url)
    assert done.stdout.splitlines()[1].endswith("hello  r-1  first")


def test_rotated_files_are_read_too(
    mosquitto: MosquittoBroker, running: tuple[AgentRunner, FunctionLogs]
) -> None:
    _, logs = running
    for i in range(40):
        logs.write("hello", f"r-{i}", f"line {i:02d}")
    assert len(logs.files("hello")) > 2
    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url, "--json")
    texts = [json.loads(x)["text"] for x in done.stdout.splitlines()]
    assert texts == sorted(texts)
    assert texts[-1] == "line 39"


def test_follow_prints_new_lines_as_they_are_written(
    mosquitto: MosquittoBroker, running: tuple[AgentRunner, FunctionLogs]
) -> None:
    _, logs = running
    logs.write("hello", "r-0", "before")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "logs", "--device", "pi01", "-f", "--json",
         "--broker", mosquitto.url, "--devices-dir", "/nonexistent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
    )  # fmt: skip
    got: list[tuple[float, dict[str, Any]]] = []
    cond = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with cond:
                got.append((time.monotonic(), json.loads(line)))
                cond.notify_all()

    threading.Thread(target=read, daemon=True).start()
    try:
        with cond:
            assert cond.wait_for(lambda: len(got) == 1, 15), proc.stderr
        assert got[0][1]["text"] == "before"
        for i in range(15):  # across a rotation (400-byte files)
            logs.write("hello" if i % 2 else "other", f"r-{i}", f"live {i:02d} " + "x" * 20)
        with cond:
            assert cond.wait_for(lambda: len(got) == 16, 10), [g[1]["text"] for g in got]
        texts = [g[1]["text"][:7] for g in got[1:]]
        # Lines of one poll are ordered by their millisecond stamps; per component, always.
        assert sorted(texts) == [f"live {i:02d}" for i in range(15)]
        for name in ("hello", "other"):
            mine = [g[1]["text"] for g in got[1:] if g[1]["component"] == name]
            assert mine == sorted(mine)
    finally:
        proc.send_signal(2)
        assert proc.wait(10) == 0


def test_errors(mosquitto: MosquittoBroker, running: tuple[AgentRunner, FunctionLogs]) -> None:
    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url, "--component", "nope")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "edgectl: error: pi01: no component 'nope' on this device (running: hello, other)"
    )
    done = edgectl("logs", "--device", "ghost", "--broker", mosquitto.url, "--timeout", "1")
    assert done.returncode == 1
    assert "no answer from ghost within 1s" in done.stderr
    done = edgectl("logs", "--device", "pi/#", "--broker", mosquitto.url)
    assert done.returncode == 2
    done = edgectl("logs", "--device", "pi01", "--broker", mosquitto.url, "--since", "lunch")
    assert done.returncode == 2
