"""The agent's wiring with a fake bus: subscriptions follow the components, and a
message is acknowledged only after it is recorded."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edge.agent.agent import Agent
from edge.model.component import load_component
from edge.model.device import load_device
from edge.mqtt.bus import Bus, ConnectionHandler, Message, MessageHandler
from tests.harness.agent import write_component, write_device


class FakeBus(Bus):
    def __init__(self) -> None:
        self.subscriptions: dict[str, MessageHandler] = {}
        self.published: list[tuple[str, bytes, Mapping[str, str]]] = []
        self.acked: list[int] = []
        self.event = threading.Event()

    def connect(self, timeout: float = 10.0) -> None: ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.subscriptions[topic_filter] = handler

    def unsubscribe(self, topic_filter: str) -> None:
        del self.subscriptions[topic_filter]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None, timeout: float | None = None) -> None:
        self.published.append((topic, payload, dict(properties or {})))
        self.event.set()

    def ack(self, message: Message) -> None:
        self.acked.append(message.mid)

    def wait_published(self, topic: str, timeout: float = 10.0) -> bool:
        """Wait until something was published on ``topic`` (a worker process answers)."""
        deadline = time.monotonic() + timeout
        while not any(t == topic for t, _, _ in self.published):
            if time.monotonic() > deadline:
                return False
            self.event.wait(0.05)
            self.event.clear()
        return True

    def on_connection_change(self, handler: ConnectionHandler) -> None: ...

    def close(self) -> None: ...


def _agent(tmp_path: Path, bus: FakeBus) -> Agent:
    device = load_device(write_device(tmp_path / "dev1.yaml", "mqtt://127.0.0.1:9"))
    return Agent(device, [], bus=bus, data_dir=tmp_path / "data", sink_factory=lambda m: {},
                 heartbeat=3600)


@contextlib.contextmanager
def running_echo(tmp_path: Path, bus: FakeBus) -> Iterator[tuple[Agent, Any]]:
    """A started agent running the echo component, and the bus handler of its trigger."""
    agent = _agent(tmp_path, bus)
    agent.start()
    try:
        agent.add_component(load_component(write_component(tmp_path, "echo", ECHO)))
        yield agent, bus.subscriptions["in/echo/+"]
    finally:
        agent.stop()


ECHO = "def handler(event, context):\n    return event\n"


def test_subscriptions_follow_added_and_removed_components(tmp_path: Path) -> None:
    bus = FakeBus()
    agent = _agent(tmp_path, bus)
    agent.start()
    try:
        a = load_component(write_component(tmp_path, "a", ECHO, triggers="  - topic: x/+\n"))
        b = load_component(write_component(tmp_path, "b", ECHO, triggers="  - topic: x/#\n"))
        agent.add_component(a)
        assert set(bus.subscriptions) == {"x/+"}
        agent.add_component(b)
        assert set(bus.subscriptions) == {"x/#"}  # x/+ is covered by x/#
        assert agent.remove_component("b")
        assert set(bus.subscriptions) == {"x/+"}
        assert not agent.remove_component("b")
    finally:
        agent.stop()


def test_message_is_acked_after_recording_and_result_published(tmp_path: Path) -> None:
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (_, handler):
        handler(Message(topic="in/echo/s", payload=b'{"v": 1}', qos=1, mid=77))
        assert bus.wait_published("out/echo")
        assert bus.acked == [77]
        topic, payload, props = next(p for p in bus.published if p[0] == "out/echo")
        assert json.loads(payload) == {"v": 1}
        assert props["component"] == "echo" and props["seq"] == "1"


def test_message_matching_no_component_is_acked_at_once(tmp_path: Path) -> None:
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        agent.remove_component("echo")
        handler(Message(topic="in/echo/s", payload=b"{}", qos=1, mid=5))
        assert bus.acked == [5]


def test_routing_follows_a_removed_component_after_its_topic_was_seen(tmp_path: Path) -> None:
    """Targets are remembered per topic; removing a component must forget them."""
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        handler(Message(topic="in/echo/s", payload=b'{"n": 1}', qos=1, mid=1))
        assert bus.wait_published("out/echo")
        agent.remove_component("echo")
        handler(Message(topic="in/echo/s", payload=b'{"n": 2}', qos=1, mid=2))
        assert bus.acked == [1, 2]
        assert b'{"n": 2}' not in [r.payload for r in agent.store.pending()]
