"""Helpers for direct-deployment tests: a project folder (devices/, keys/, components),
agents that run only what is deployed to them, and the CLI run in-process."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.deploy.signing import init_keys
from tests.harness.agent import AgentRunner, Probe
from tests.harness.mosquitto import MosquittoBroker

HANDLER_OK = """
def handler(event, context):
    return {"version": VERSION, "echo": event}
"""


class Project:
    """``root/devices/<name>.yaml``, ``root/keys/fleet.{key,pub}``, ``root/components/``.

    Agents started by ``agent()`` live in ``root/agents/<name>/`` and read their own
    device file from ``root/devices``, so the default trusted key (``keys/fleet.pub``
    beside ``devices/``) is this project's.
    """

    def __init__(self, root: Path, broker: MosquittoBroker) -> None:
        self.root = root
        self.broker = broker
        (root / "devices").mkdir(parents=True, exist_ok=True)
        (root / "components").mkdir(exist_ok=True)
        init_keys(root / "keys")
        self.agents: list[AgentRunner] = []

    def device(self, name: str, *, groups: tuple[str, ...] = ("test",), extra: str = "") -> Path:
        path = self.root / "devices" / f"{name}.yaml"
        path.write_text(
            f"name: {name}\nclass: generic-linux\nplatform: {{os: linux, architecture: x86_64}}\n"
            f"thing_name: {name}\ngroups: [{', '.join(groups)}]\n"
            f"broker:\n  url: {self.broker.url}\ncloud:\n  region: us-east-1\n" + extra
        )
        return path

    def component(
        self, version: str, *, name: str = "echo", code: str = HANDLER_OK, manifest: str = ""
    ) -> Path:
        folder = self.root / "components" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "app.py").write_text(f"VERSION = {version!r}\n" + textwrap.dedent(code))
        (folder / "component.yaml").write_text(
            f"name: {name}\nversion: {version}\nruntime: python3.11\nhandler: app.handler\n"
            f"triggers:\n  - topic: in/{name}/+\noutputs:\n  - topic: out/{name}\n"
            + textwrap.dedent(manifest)
        )
        return folder

    def agent(self, name: str = "dev1", *, env: dict[str, str] | None = None) -> AgentRunner:
        if not (self.root / "devices" / f"{name}.yaml").exists():
            self.device(name)
        workdir = self.root / "agents" / name
        workdir.mkdir(parents=True, exist_ok=True)
        runner = AgentRunner(workdir, self.broker, [], device=name)
        # Run from the project's device file, not the harness's own copy.
        runner.config = self.root / "devices" / f"{name}.yaml"
        runner.args[1] = str(runner.config)
        runner.env["EDGE_ARTIFACT_TIMEOUT"] = "3"  # a stalled transfer fails fast in tests
        runner.env.update(env or {})
        self.agents.append(runner)
        return runner

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``edgectl`` in-process from the project folder's point of view."""
        import contextlib
        import io

        from edge.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        argv = [*args]
        if args and args[0] in ("deploy", "rollback", "remove"):
            argv += ["--devices-dir", str(self.root / "devices")]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        return code, out.getvalue(), err.getvalue()

    def deploy(self, *args: str) -> dict[str, Any]:
        code, out, err = self.cli("deploy", *args, "--json")
        data: dict[str, Any] = json.loads(out) if out.strip() else {}
        data["_code"] = code
        data["_err"] = err
        return data


def served(probe: Probe, name: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    msgs = probe.wait_count(f"out/{name}", n, timeout)
    return [json.loads(m.payload) for m in msgs]


Waiter = Callable[[Callable[[dict[str, Any]], bool]], dict[str, Any]]


def report_of(probe: Probe, thing: str) -> Waiter:
    def wait(pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        topic = f"edge/{thing}/deployment"
        found: list[dict[str, Any]] = []

        def check(ms: list[Any]) -> bool:
            for m in ms:
                if m.topic == topic and m.payload:
                    doc = json.loads(m.payload)
                    if pred(doc):
                        found.append(doc)
                        return True
            return False

        probe.wait_for(check, timeout)
        return found[0]

    return wait


@pytest.fixture
def project(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Project]:
    p = Project(tmp_path / "project", mosquitto)
    yield p
    for agent in p.agents:
        if agent.alive():
            agent.kill()
