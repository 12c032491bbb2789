"""The message bus as the rest of the project sees it.

The agent, the CLI and the function host talk to a ``Bus``; only
``edge.mqtt.paho_bus`` knows paho-mqtt and only ``edge.mqtt.ipc_bus`` knows
Greengrass IPC. Keeping the surface this small (subscribe, publish, ack) is
what lets tests drive the agent through a fake and lets the same host run on a
Mosquitto broker or inside a Greengrass nucleus.

Acknowledgement is explicit: a QoS 1 message handed to a subscriber is not
acknowledged to the broker until ``ack`` is called, so the agent can record it
durably first and the broker redelivers it if the device dies in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from edge.errors import UsageError


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    # MQTT 5 user properties (request id, content type, ...); empty on MQTT 3.1.1.
    properties: Mapping[str, str] = field(default_factory=dict)
    # Broker packet id for QoS > 0; the token ``Bus.ack`` needs. 0 when not applicable.
    mid: int = 0


@dataclass(frozen=True)
class BrokerAddress:
    """Where a bus connects: ``mqtt://`` or ``mqtts://`` plus the TLS files, if any."""

    host: str
    port: int
    tls: bool
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(f"broker: {url!r} is not an mqtt:// or mqtts:// URL")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls, ca, cert, key)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Will:
    """The last will: what the broker publishes for us if the connection dies."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


MessageHandler = Callable[[Message], None]
ConnectionHandler = Callable[[bool], None]


class Bus(Protocol):
    def connect(self, timeout: float = 10.0) -> None:
        """Connect and block until the session is up; raise ``BrokerError`` on failure."""

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler``; survives reconnects."""

    def unsubscribe(self, topic_filter: str) -> None: ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish; with ``timeout`` set, block until the broker acknowledged (QoS 1)."""

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message that was handed to a subscriber."""

    def on_connection_change(self, handler: ConnectionHandler) -> None: ...

    def close(self) -> None: ...
