"""The Greengrass IPC bus through a fake IPC client with the V2 client's methods."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edge.errors import BrokerError
from edge.mqtt.bus import Message
from edge.mqtt.ipc_bus import IpcBus, running_in_greengrass


class FakeOperation:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeIpcClient:
    """The two GreengrassCoreIPCClientV2 methods the adapter uses, recorded."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        self.published: list[tuple[str, Any]] = []
        self.operations: dict[str, FakeOperation] = {}
        self.fail_publish = False

    def subscribe_to_topic(self, *, topic, on_stream_event, on_stream_error, **_: Any):
        self.handlers[topic] = on_stream_event
        self.errors[topic] = on_stream_error
        self.operations[topic] = FakeOperation()
        return SimpleNamespace(), self.operations[topic]

    def publish_to_topic(self, *, topic, publish_message):
        if self.fail_publish:
            raise RuntimeError("UnauthorizedError")
        self.published.append((topic, publish_message))
        return SimpleNamespace()

    def deliver(self, topic_filter: str, topic: str, payload: bytes) -> None:
        event = SimpleNamespace(
            binary_message=SimpleNamespace(message=payload, context=SimpleNamespace(topic=topic)),
            json_message=None,
        )
        self.handlers[topic_filter](event)


def test_running_in_greengrass():
    assert running_in_greengrass(
        {"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": "/s", "SVCUID": "x"}
    )
    assert not running_in_greengrass({"SVCUID": "x"})
    assert not running_in_greengrass({})


def test_subscribe_delivers_messages_and_ack_is_a_no_op():
    fake = FakeIpcClient()
    bus = IpcBus(fake)
    bus.connect()
    got: list[Message] = []
    bus.subscribe("sensors/+/temp", got.append)
    fake.deliver("sensors/+/temp", "sensors/a/temp", b'{"t": 1}')
    assert got == [Message(topic="sensors/a/temp", payload=b'{"t": 1}', qos=1)]
    bus.ack(got[0])


def test_json_messages_arrive_as_json_bytes():
    fake = FakeIpcClient()
    bus = IpcBus(fake)
    bus.connect()
    got: list[Message] = []
    bus.subscribe("a/#", got.append)
    event = SimpleNamespace(
        binary_message=None,
        json_message=SimpleNamespace(message={"k": 1}, context=SimpleNamespace(topic="a/b")),
    )
    fake.handlers["a/#"](event)
    assert got[0].topic == "a/b" and got[0].payload == b'{"k": 1}'


def test_handler_exception_is_caught_and_stream_survives(caplog):
    fake = FakeIpcClient()
    bus = IpcBus(fake)
    bus.connect()
    calls: list[Message] = []

    def handler(message: Message) -> None:
        calls.append(message)
        raise ValueError("user bug")

    bus.subscribe("t", handler)
    fake.deliver("t", "t", b"1")
    fake.deliver("t", "t", b"2")
    assert len(calls) == 2
    assert "handler for t raised" in caplog.text
    assert fake.errors["t"](RuntimeError("boom")) is False


def test_publish_sends_a_binary_message():
    fake = FakeIpcClient()
    bus = IpcBus(fake)
    bus.connect()
    bus.publish("out/x", b"\x00\x01")
    topic, message = fake.published[0]
    assert topic == "out/x"
    assert message.binary_message.message == b"\x00\x01"


def test_publish_failure_is_a_broker_error():
    fake = FakeIpcClient()
    fake.fail_publish = True
    bus = IpcBus(fake)
    bus.connect()
    with pytest.raises(BrokerError, match="publish to 'out'"):
        bus.publish("out", b"x")


def test_use_before_connect_and_failing_factory():
    bus = IpcBus(factory=lambda: (_ for _ in ()).throw(OSError("no socket")))
    with pytest.raises(BrokerError, match="before connect"):
        bus.publish("t", b"")
    with pytest.raises(BrokerError, match="no socket"):
        bus.connect()


def test_close_unsubscribes_and_reports_disconnect():
    fake = FakeIpcClient()
    bus = IpcBus(fake)
    states: list[bool] = []
    bus.on_connection_change(states.append)
    bus.connect()
    bus.subscribe("t", lambda m: None)
    bus.close()
    assert fake.operations["t"].closed
    assert states == [True, False]
