"""Every command in docs/getting-started.md, cli-develop.md and cli-graph.md, run as written
(``.venv/bin/`` becomes this interpreter) in a fresh copy of the project."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.devproc import REPO, DevProcess

pytestmark = pytest.mark.e2e

DOCS = ["docs/getting-started.md", "docs/cli-develop.md", "docs/cli-graph.md"]


def doc_commands() -> list[str]:
    found: list[str] = []
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", (REPO / doc).read_text(), re.S):
            for line in block.splitlines():
                command = re.split(r"\s#\s", line)[0].strip()
                if command:
                    found.append(command.removeprefix(".venv/bin/"))
    return found


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ran: set[str] = set()

    def argv(self, command: str) -> list[str]:
        words = shlex.split(command)
        if words[0] == "edgectl":
            return [sys.executable, "-m", "edge.cli.main", *words[1:]]
        if words[0] == "pytest":
            return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[1:]]
        raise AssertionError(f"no way to run {command!r}")

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        self.ran.add(command)
        proc = subprocess.run(
            self.argv(command), cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    def dev(self, command: str, *extra: str) -> DevProcess:
        self.ran.add(command)
        args = self.argv(command)[4:]  # after "-m edge.cli.main dev"
        return DevProcess(self.root, *args, *[a for a in extra if a not in args])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copytree(REPO / "devices", root / "devices")
    shutil.copytree(REPO / "components", root / "components",
                    ignore=shutil.ignore_patterns("__pycache__", ".edge"))
    shutil.rmtree(root / "components" / "hello")  # the new user's own greeter instead
    return root


def test_every_documented_command_runs(project: Path) -> None:
    commands = doc_commands()
    run = Runner(project)

    # 1. Set up: what CI runs before the tests (./tasks test starts with it).
    assert commands[0] == "./tasks setup"
    assert "setup) setup ;;" in (REPO / "tasks").read_text()
    run.ran.add("./tasks setup")

    # 2-3. Scaffold, invoke, test, generate events.
    run.run("edgectl init greeter")
    run.run("edgectl init alerts --runtime nodejs20.x --trigger 'plant/+/alarms'")
    out = run.run("edgectl invoke components/greeter --event components/greeter/events/sample.json"
                  " --topic sensors/s1/greeter")
    assert '"message": "hello from greeter"' in out.stdout
    assert "2 passed" in run.run("pytest -q components/greeter/tests").stdout
    run.run("edgectl generate-event mqtt --topic sensors/s2/greeter --payload "
            "'{\"message\": \"hi\"}' --out components/greeter/events/hi.json")
    run.run("edgectl generate-event mqtt --topic sensors/s1/greeter --payload "
            "'{\"message\": \"hi\"}' --out events/hi.json")
    out = run.run("edgectl invoke components/greeter --event components/greeter/events/hi.json"
                  " --topic sensors/s2/greeter")
    assert '"topic": "sensors/s2/greeter"' in out.stdout

    # 4. A local device with real MQTT triggers; publish from "another terminal".
    dev = run.dev("edgectl dev components/greeter", "--json")
    try:
        ready = dev.wait_kind("ready")
        run.run("edgectl publish sensors/s1/greeter '{\"message\": \"hello device\"}'")
        hit = dev.wait_kind("invocation", component="greeter")
        assert hit["result"]["received"] == {"message": "hello device"}
        # The device's reported state, read from its broker: point local.yaml at dev's.
        device_file = project / "devices" / "local.yaml"
        device_file.write_text(
            device_file.read_text().replace("mqtt://127.0.0.1:1883", ready["broker"])
        )
        graph = json.loads(run.run("edgectl graph --device local --json").stdout)
        assert [c["name"] for c in graph["components"]] == ["greeter"]
    finally:
        assert dev.stop() == 0

    for command in ("edgectl dev", "edgectl dev components/greeter --json"):
        dev = run.dev(command, "--json")
        try:
            dev.wait_kind("ready")
            if command == "edgectl dev":
                run.run("edgectl publish cameras/cam1/frames "
                        "@components/thumbnailer/events/frame-640x480.jpg")
                thumb = dev.wait_kind("invocation", component="com.example.Thumbnailer")
                assert thumb["ok"] and thumb["result"].endswith("bytes>")
        finally:
            assert dev.stop() == 0

    # 5. The graph.
    text = run.run("edgectl graph").stdout
    assert "greeter\n  <- sensors/+/greeter  (from outside)" in text
    why = run.run("edgectl graph --why com.example.ThresholdAlerts").stdout
    assert why.startswith("telemetry/+/readings -> com.example.StreamAggregator")
    run.run("edgectl graph --format mermaid --out graph.mmd")
    assert (project / "graph.mmd").read_text().startswith("flowchart LR")

    # 6. The demo with the new component and a sample.
    run.run("edgectl demo --component components/greeter --component "
            "components/stream-aggregator")

    assert set(commands) == run.ran, sorted(set(commands) ^ run.ran)
