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

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from edge.errors import UsageError
from edge.model.topics import TopicMemo, matches

log = logging.getLogger(__name__)


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
    # MQTT 5 Message Expiry Interval as delivered: the seconds the broker would still
    # have kept it. A retained message's age by the broker's clock (docs/status.md).
    expiry: int | None = None


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
        expiry: int | None = None,
    ) -> None:
        """Publish; with ``timeout`` set, block until the broker acknowledged (QoS 1).
        ``expiry``: an MQTT 5 Message Expiry Interval in seconds (where the transport
        has none, the message is sent without it)."""

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message that was handed to a subscriber."""

    def on_connection_change(self, handler: ConnectionHandler) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """A bus whose receiving thread may wait inside a message handler, on the fds it
    names, until it has other work (see ``PahoBus.interrupts``)."""

    def interrupts(self) -> tuple[int, ...] | None: ...

    def work_waits(self) -> bool: ...


@runtime_checkable
class AckBatching(Protocol):
    """A bus that can hold back the acknowledgements one thread makes and send them
    together, in one write (see ``PahoBus.acks_held``)."""

    def acks_held(self) -> AbstractContextManager[None]: ...


class Subscriptions:
    """A bus adapter's subscribed filters and their handlers (thread-safe), and the
    delivery of one received message to them.

    The handlers of each topic are remembered until a subscription changes: a device
    sees a few trigger topics over and over, and matching every filter against every
    message is per-message work for nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[MessageHandler, int]] = {}
        self._by_topic = TopicMemo(self._match)

    def add(self, topic_filter: str, handler: MessageHandler, qos: int) -> None:
        with self._lock:
            self._subs[topic_filter] = (handler, qos)
            self._by_topic = TopicMemo(self._match)

    def remove(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
            self._by_topic = TopicMemo(self._match)

    def filters(self) -> list[tuple[str, int]]:
        """(filter, qos) of every subscription: what to subscribe again on a reconnect."""
        with self._lock:
            return [(f, q) for f, (_, q) in self._subs.items()]

    def handlers_for(self, topic: str) -> list[MessageHandler]:
        """One entry per distinct handler, even when several of its filters match."""
        with self._lock:
            return self._by_topic(topic)

    def _match(self, topic: str) -> list[MessageHandler]:
        return list(dict.fromkeys(h for f, (h, _) in self._subs.items() if matches(f, topic)))

    def deliver(self, message: Message, ack: Callable[[Message], None]) -> None:
        """Hand ``message`` to its handlers; one nobody wants is acknowledged at once.
        A failing handler is logged and never stops the others (or the adapter's loop)."""
        handlers = self.handlers_for(message.topic)
        if not handlers:
            ack(message)
            return
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("message handler failed for topic %s", message.topic)
