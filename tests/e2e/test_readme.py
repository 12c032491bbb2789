"""The README's commands, run as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_readme_opens_with_the_two_setup_commands() -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["./tasks demo", "./tasks test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "./tasks test" in ci


def test_demo_runs_the_whole_path_and_stops_everything() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "demo", "--json", "--timeout", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    events = sorted((REPO / "components/hello/events").glob("*.json"))
    assert doc["published"] == len(events)
    assert len(doc["outputs"]) == len(events)
    assert len(doc["items"]) == len(events)
    assert len(doc["objects"]) == len(events)
    names = {json.loads(e.read_text())["name"] for e in events}
    assert {o["payload"]["greeting"] for o in doc["outputs"]} == {f"Hello, {n}!" for n in names}
    assert {i["request_id"] for i in doc["items"]} == {o["request-id"] for o in doc["outputs"]}
    assert "stopping device agent" in proc.stderr
    assert "stopping local MQTT broker" in proc.stderr


def test_readme_invoke_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "invoke", "components/hello",
         "--event", "components/hello/events/hello.json", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert doc["result"]["greeting"] == "Hello, Ada!"
    assert doc["result"]["request_id"] == doc["request_id"]
