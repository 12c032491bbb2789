"""Fixtures: the real ``edge-agent`` as a subprocess, and an MQTT probe client.

The agent runs exactly as on a device (``python -m edge.agent.main``), against
the test's own Mosquitto and the session's moto server, so signals, crashes
and restarts are real. Readiness is awaited on the agent's own retained
status message, not on a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.harness.mosquitto import MosquittoBroker, tcp_nodelay

REPO = Path(__file__).resolve().parents[2]


def write_component(
    root: Path,
    name: str,
    code: str,
    *,
    manifest: str = "",
    triggers: str = "  - topic: in/{component}/+\n",
    outputs: str = "  - topic: out/{component}\n",
) -> Path:
    """Write a component folder (component.yaml + app.py) and return it."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(textwrap.dedent(code))
    (folder / "component.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\nruntime: python3.11\nhandler: app.handler\n"
        f"triggers:\n{triggers}outputs:\n{outputs}" + textwrap.dedent(manifest)
    )
    return folder


def write_device(path: Path, broker_url: str, *, name: str = "dev1") -> Path:
    path.write_text(
        f"name: {name}\nclass: generic-linux\nplatform: {{os: linux, architecture: x86_64}}\n"
        f"thing_name: {name}\ngroups: [test]\nbroker:\n  url: {broker_url}\n"
        "cloud:\n  region: us-east-1\n"
    )
    return path


class Probe:
    """A test-side MQTT client that records every message on the topics it follows."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"probe-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        tcp_nodelay(self._client)
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def follow(self, *filters: str) -> None:
        for topic_filter in filters:
            result, mid = self._client.subscribe(topic_filter, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS
        # A round trip through the broker guarantees the subscriptions are active.
        self.publish("probe/sync", b"")

    def publish(
        self, topic: str, payload: bytes | str, *, user: dict[str, str] | None = None
    ) -> None:
        props = None
        if user:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = list(user.items())
        info = self._client.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(10)
        assert info.is_published()

    def on(self, prefix: str) -> list[mqtt.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def wait_for(
        self, predicate: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 15.0
    ) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [m.topic for m in self.messages][-20:]
                    raise AssertionError(f"timed out; last topics seen: {topics}")
                self._cond.wait(remaining)
            return list(self.messages)

    def wait_count(self, prefix: str, n: int, timeout: float = 15.0) -> list[mqtt.MQTTMessage]:
        self.wait_for(lambda ms: sum(m.topic.startswith(prefix) for m in ms) >= n, timeout)
        return self.on(prefix)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def user_props(msg: mqtt.MQTTMessage) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", []) or [])


class AgentRunner:
    """One agent process; ``start()`` waits for its retained ``online`` status."""

    def __init__(
        self,
        workdir: Path,
        broker: MosquittoBroker,
        components: list[Path],
        *,
        moto_url: str | None = None,
        device: str = "dev1",
        extra_args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.broker = broker
        self.device = device
        self.config = write_device(workdir / f"{device}.yaml", broker.url, name=device)
        self.data_dir = workdir / "data"
        self.results_dir = workdir / "results"
        self.log_path = workdir / "agent.log"
        self.args = [
            "--config", str(self.config), "--data-dir", str(self.data_dir),
            "--results-dir", str(self.results_dir), "--heartbeat", "60",
            *[a for c in components for a in ("--component", str(c))],
            *(extra_args or []),
        ]
        self.env = dict(os.environ)
        self.env.update(
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(workdir / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-aws-credentials"),
        )
        if moto_url:
            self.env.update(AWS_ENDPOINT_URL_S3=moto_url, AWS_ENDPOINT_URL_DYNAMODB=moto_url)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_online: bool = True, timeout: float = 20.0) -> AgentRunner:
        waiter = _StatusWaiter(self.broker, self.device) if wait_online else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.agent.main", *self.args],
                stdout=log, stderr=log, env=self.env, cwd=str(REPO),
            )
        if waiter is not None:
            try:
                waiter.wait(self.proc, timeout, self.log_text)
            finally:
                waiter.close()
        return self

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Ask for every thread's stack (faulthandler on SIGUSR1) so the failure shows
            # where the agent is stuck.
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)
            raise AssertionError(
                f"agent did not stop within {timeout:g}s of SIGTERM; log tail:\n"
                + self.log_text()[-8000:]
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def local_results(self) -> list[Path]:
        """The result files; not the sink's temporary files (``.<name>.<uuid>.tmp``),
        one of which a SIGKILL may leave behind half written."""
        if not self.results_dir.exists():
            return []
        return sorted(p for p in self.results_dir.rglob("*.*") if not p.name.startswith("."))


class _StatusWaiter:
    """Subscribes *before* the agent starts, then waits for a fresh ``online`` status
    published by that process (a retained one from an earlier run does not count)."""

    def __init__(self, broker: MosquittoBroker, device: str) -> None:
        self._probe = Probe(broker)
        self._started = time.time()
        self._probe.follow(f"edge/{device}/status")

    def wait(self, proc: subprocess.Popen[bytes], timeout: float, log: Callable[[], str]) -> None:
        def fresh_online(msgs: list[mqtt.MQTTMessage]) -> bool:
            if proc.poll() is not None:
                return True
            for m in msgs:
                if m.topic.endswith("/status"):
                    doc = json.loads(m.payload)
                    if doc.get("state") == "online" and doc.get("timestamp", 0) >= self._started:
                        return True
            return False

        try:
            self._probe.wait_for(fresh_online, timeout)
        except AssertionError:
            raise AssertionError(f"agent did not come online:\n{log()[-3000:]}") from None
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}:\n{log()[-3000:]}")

    def close(self) -> None:
        self._probe.close()


@pytest.fixture
def probe(mosquitto: MosquittoBroker) -> Iterator[Probe]:
    p = Probe(mosquitto)
    yield p
    p.close()


@pytest.fixture
def agent_factory(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> Iterator[Callable[..., AgentRunner]]:
    runners: list[AgentRunner] = []

    def make(components: list[Path], **kwargs: Any) -> AgentRunner:
        workdir = tmp_path / f"agent{len(runners)}"
        workdir.mkdir()
        runner = AgentRunner(workdir, mosquitto, components, **kwargs)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        if runner.alive():
            runner.kill()
