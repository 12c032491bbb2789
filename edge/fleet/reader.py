"""Read every device's retained status document from the broker, then follow changes.

Knowing when the retained burst has ended: MQTT has no "end of retained
messages" signal, so the feed subscribes to ``edge/+/status`` and to a topic
of its own (``edgectl/sync/<random>``) and then publishes one empty message
to that topic on the same connection. The broker sends the retained messages
of a subscription while it handles the SUBSCRIBE, and handles our later
PUBLISH after it, so the marker comes back after the last retained status.

That holds only when both travel at the **same QoS, and that QoS is 0**,
measured on Mosquitto 2.0.11 (bench/README.md, "Reading the fleet"):

* QoS 1 subscription and QoS 0 marker: the marker overtakes everything beyond
  the broker's in-flight window (arrived after 100 of 1,000);
* QoS 1 for both on a broker with Mosquitto's default limits
  (``max_inflight_messages 20``, ``max_queued_messages 1000``): the broker
  dropped everything beyond 1,020 retained messages *and the marker*;
* QoS 0 for both: all 5,000 retained messages, then the marker, in 0.4 s.

So the feed reads at QoS 0. A status document is a snapshot that the next
heartbeat replaces, so nothing is lost by not acknowledging it.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import BrokerError
from edge.fleet.document import STATUS_FILTER, status_topic, thing_of
from edge.mqtt.bus import Bus, Message

MARKER_PREFIX = "edgectl/sync"
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Sample:
    """The newest payload seen on one status topic and when it arrived (monotonic)."""

    thing: str
    payload: bytes
    received: float
    retained: bool
    #: The Message Expiry Interval it was delivered with (``Message.expiry``).
    expiry: int | None = None


class StatusFeed:
    """Follows ``edge/+/status`` (or one device's status topic) on a connected bus."""

    def __init__(
        self,
        bus: Bus,
        *,
        thing: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._filter = status_topic(thing) if thing else STATUS_FILTER
        self._marker = f"{MARKER_PREFIX}/{uuid.uuid4().hex}"
        self._clock = clock
        self._cond = threading.Condition()
        self._samples: dict[str, Sample] = {}
        self._synced = False
        self._version = 0
        self.received = 0

    def open(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Sample]:
        """Subscribe and return once every retained status document has arrived."""
        self._bus.subscribe(self._filter, self._on_status, qos=0)
        self._bus.subscribe(self._marker, self._on_marker, qos=0)
        self._bus.publish(self._marker, b"", qos=0)
        deadline = self._clock() + timeout
        with self._cond:
            while not self._synced:
                left = deadline - self._clock()
                if left <= 0:
                    raise BrokerError(
                        f"the broker did not finish sending status documents within {timeout:g}s "
                        f"({self.received} received)"
                    )
                self._cond.wait(left)
            return dict(self._samples)

    def snapshot(self) -> dict[str, Sample]:
        with self._cond:
            return dict(self._samples)

    @property
    def version(self) -> int:
        """Grows by one with every status message; ``wait_change`` waits for it to move."""
        return self._version

    def wait_change(self, seen: int, timeout: float) -> int:
        """Block until a status message newer than version ``seen`` arrives (or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != seen, timeout)
            return self._version

    def _on_status(self, message: Message) -> None:
        thing = thing_of(message.topic)
        if thing is None:
            return
        with self._cond:
            self.received += 1
            if message.payload:
                self._samples[thing] = Sample(thing, message.payload, self._clock(),
                                              message.retain, message.expiry)  # fmt: skip
            else:  # an empty retained message deletes the document
                self._samples.pop(thing, None)
            self._version += 1
            self._cond.notify_all()

    def _on_marker(self, message: Message) -> None:
        with self._cond:
            self._synced = True
            self._cond.notify_all()

    def close(self) -> None:
        self._bus.unsubscribe(self._filter)
        self._bus.unsubscribe(self._marker)


def connect(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> Bus:
    """A connected bus for the workstation side, or ``BrokerError`` within ``timeout``.

    A TCP probe first, so an unreachable broker fails with the operating
    system's reason (refused, no route, timed out) rather than a bare timeout.
    """
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    address = BrokerAddress.parse(url, ca=ca, cert=cert, key=key)
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:g}s"
        raise BrokerError(f"cannot connect to broker {address.url}: {reason}") from None
    bus = PahoBus(address, keepalive=30)
    bus.connect(timeout)
    return bus


def read_retained(
    bus: Bus, topics: list[str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, bytes]:
    """The retained payload on each of ``topics`` (absent when none; a filter with
    wildcards brings every topic it matches), read with the same end-of-burst marker
    as ``StatusFeed``."""
    return {t: m.payload for t, m in read_retained_messages(bus, topics, timeout=timeout).items()}


def read_retained_messages(
    bus: Bus, topics: list[str], *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Message]:
    """``read_retained`` with each whole message (its expiry, for a status document)."""
    marker = f"{MARKER_PREFIX}/{uuid.uuid4().hex}"
    found: dict[str, Message] = {}
    done = threading.Event()

    def on_message(message: Message) -> None:
        if message.payload:
            found[message.topic] = message

    for topic in topics:
        bus.subscribe(topic, on_message, qos=0)
    bus.subscribe(marker, lambda m: done.set(), qos=0)
    bus.publish(marker, b"", qos=0)
    if not done.wait(timeout):
        raise BrokerError(f"the broker did not answer within {timeout:g}s")
    for topic in (*topics, marker):
        bus.unsubscribe(topic)
    return dict(found)
