"""Publishes from a thread other than paho's network thread are written at once (plain
TCP), in order, and paho's own path is kept over TLS; so are the publishes and
acknowledgements a message handler sends on the network thread, which then sees its
wake-up fds quiet (``PahoBus.interrupts``), and tells a message waiting behind them
from the PUBACK of its own publish (``PahoBus.work_waits``)."""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.mqtt.bus import Message
from edge.mqtt.paho_bus import BrokerAddress, PahoBus, _DirectClient, _only_pubacks
from tests.harness.agent import Probe
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def test_the_paho_internals_it_relies_on_are_there() -> None:
    client = _DirectClient(mqtt.CallbackAPIVersion.VERSION2, direct_writes=True)
    for name in ("_out_packet", "_thread", "_sockpairW", "_sockpairR", "_packet_queue",
                 "want_write", "socket", "_in_packet", "_out_message_mutex", "_out_messages",
                 "_do_on_publish", "_handle_pubackcomp", "_protocol", "_handle_publish",
                 "_in_callback_mutex", "_manual_ack", "_send_puback", "_sock",
                 "_update_inflight", "_inflight_messages", "_max_inflight_messages",
                 "_msgtime_mutex", "_last_msg_out"):
        assert hasattr(client, name), f"paho-mqtt no longer has Client.{name}"


def test_a_publish_from_another_thread_is_on_the_wire_when_publish_returns(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    probe.follow("direct/#")
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus.connect()
    try:
        client = bus._client
        assert client._direct_writes
        unsent: list[int] = []

        def publish_all() -> None:
            for n in range(200):
                bus.publish("direct/x", str(n).encode(), qos=1, properties={"n": str(n)})
                unsent.append(len(client._out_packet))  # paho's path leaves it queued

        worker = threading.Thread(target=publish_all)
        worker.start()
        worker.join(10)
        assert max(unsent) == 0
        got = probe.wait_count("direct/x", 200)
        assert [m.payload for m in got] == [str(n).encode() for n in range(200)]
    finally:
        bus.close()


def test_what_the_socket_does_not_take_at_once_follows_in_order(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    """A publish larger than the socket's send buffer is written in part by the
    publishing thread; the network thread writes the rest, and a publish made
    meanwhile goes out after it, not into the middle of it."""
    probe.follow("big/#")
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus.connect()
    try:
        client = bus._client
        assert client._sock is not None
        client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * (16 * 1024)  # 4 MiB: far more than the socket takes
        # Holding the write lock (re-entrant) keeps the network thread from writing
        # the rest until both publishes are made.
        with client._write_lock:
            bus.publish("big/x", big, qos=1)
            assert client._out_packet  # the rest is left for the network thread
            bus.publish("big/x", b"after", qos=1)
        got = probe.wait_count("big/x", 2, timeout=30)
        assert [bytes(m.payload) for m in got] == [big, b"after"]
    finally:
        bus.close()


def test_tls_keeps_paho_s_own_writes() -> None:
    address = BrokerAddress.parse("mqtts://127.0.0.1:8883")
    assert not PahoBus(address)._client._direct_writes


def test_a_handler_on_the_network_thread_writes_at_once_and_sees_quiet_fds(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    probe.follow("reply/#")
    bus = PahoBus(BrokerAddress.parse(mosquitto.url), manual_ack=True)
    seen: dict[str, object] = {}
    done = threading.Event()

    def handler(message: Message) -> None:
        bus.ack(message)
        bus.publish("reply/x", message.payload, qos=0)  # QoS 1 would bring a PUBACK in
        fds = bus.interrupts()
        seen["fds"] = fds
        seen["queued"] = len(bus._client._out_packet)
        assert fds is not None
        # Nothing left for the network thread: neither input nor queued packets.
        seen["readable"] = select.select(list(fds), [], [], 0.05)[0]
        done.set()

    bus.subscribe("ask/#", handler, qos=1)
    bus.connect()
    try:
        assert bus.subscribed.wait(10)
        assert bus.interrupts() is None  # not on the network thread
        probe.publish("ask/x", b"hello")
        assert done.wait(10)
        assert seen["queued"] == 0 and seen["readable"] == []
        assert [m.payload for m in probe.wait_count("reply/x", 1)] == [b"hello"]
    finally:
        bus.close()


def test_a_handler_tells_a_waiting_message_from_the_puback_of_its_own_publish(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    bus = PahoBus(BrokerAddress.parse(mosquitto.url), manual_ack=True)
    seen: dict[str, bool] = {}
    puback_seen, second_sent, done = threading.Event(), threading.Event(), threading.Event()

    def handler(message: Message) -> None:
        bus.ack(message)
        if message.payload != b"one":
            return
        seen["before"] = bus.work_waits()
        bus.publish("reply/x", b"r", qos=1)
        sock = bus._client.socket()
        assert isinstance(sock, socket.socket)
        seen["puback in"] = bool(select.select([sock], [], [], 10)[0])
        seen["puback"] = bus.work_waits()
        puback_seen.set()
        assert second_sent.wait(10)
        # The next message lands behind the unread PUBACK, the socket readable all
        # along: nothing to wait on but the bytes themselves.
        deadline = time.monotonic() + 10
        while not bus.work_waits() and time.monotonic() < deadline:
            threading.Event().wait(0.005)
        seen["message"] = bus.work_waits()
        done.set()

    bus.subscribe("ask/#", handler, qos=1)
    bus.connect()
    try:
        assert bus.subscribed.wait(10)
        assert bus.work_waits()  # not on the network thread: cannot tell, so "yes"
        probe.publish("ask/x", b"one")
        assert puback_seen.wait(10)
        probe.publish("ask/x", b"two")
        second_sent.set()
        assert done.wait(15)
        assert seen == {"before": False, "puback in": True, "puback": False, "message": True}
    finally:
        bus.close()


def test_pubacks_are_told_apart_from_other_input() -> None:
    puback = b"\x40\x02\x00\x07"
    unrouted = b"\x40\x03\x00\x08\x10"  # reason code: no matching subscribers
    assert _only_pubacks(puback)
    assert _only_pubacks(puback + unrouted + puback)
    assert _only_pubacks(puback * 3 + puback[:1])  # the next one still arriving
    assert _only_pubacks(puback + unrouted[:3])
    assert not _only_pubacks(b"")
    assert not _only_pubacks(puback + b"\x30\x0c")  # a PUBLISH behind it
    assert not _only_pubacks(b"\x40\x80\x01")  # a remaining length past one byte
    assert not _only_pubacks(puback * 16)  # it may go on past what was looked at


def test_pubacks_complete_every_qos1_publish(mosquitto: MosquittoBroker) -> None:
    """The shortcut for a bare PUBACK (``_DirectClient._handle_pubackcomp``) still
    completes each publish: acknowledged, and forgotten by the client."""
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus.connect()
    try:
        for n in range(50):
            bus.publish("acked/x", str(n).encode(), qos=1, timeout=10)  # raises unless acked
        assert len(bus._client._out_messages) == 0
    finally:
        bus.close()


def test_a_subscription_made_while_connected_holds_subscribed_until_its_suback(
    mosquitto: MosquittoBroker,
) -> None:
    """``subscribed`` is what the agent's "online" status waits for, so a filter added
    after the connection came up must count too: otherwise a request published on
    seeing "online" can reach the broker before the subscription does."""
    arrived = threading.Event()
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus.connect()
    sender = PahoBus(BrokerAddress.parse(mosquitto.url))
    sender.connect()
    try:
        assert bus.subscribed.wait(10)
        # Holding paho's callback lock keeps the network thread from handling the SUBACK.
        with bus._client._in_callback_mutex:
            bus.subscribe("late/#", lambda message: arrived.set(), qos=1)
            assert not bus.subscribed.is_set()
        assert bus.subscribed.wait(10)
        sender.publish("late/x", b"1", qos=1, timeout=10)
        assert arrived.wait(10)
    finally:
        sender.close()
        bus.close()


def test_publishes_queued_behind_a_full_in_flight_window_still_go_out(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    """The shortcut in ``_update_inflight`` (nothing queued: nothing to walk) must not
    strand a publish that waits for room in the window: each PUBACK sends one."""
    probe.follow("window/#")
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus._client.max_inflight_messages_set(3)  # before the connection, as paho requires
    bus.connect()
    try:
        client = bus._client
        # Holding paho's (re-entrant) lock keeps the network thread from taking PUBACKs
        # meanwhile: all but three publishes wait for room.
        with client._out_message_mutex:
            for n in range(40):
                bus.publish("window/x", b"%d" % n, qos=1)
            assert (len(client._out_messages), client._inflight_messages) == (40, 3)
        got = probe.wait_count("window/x", 40)
        assert sorted(int(m.payload) for m in got) == list(range(40))
    finally:
        bus.close()


def test_plain_and_property_carrying_messages_arrive_alike(mosquitto: MosquittoBroker) -> None:
    """A message without properties, or with only an expiry, takes the short path
    (``_handle_publish``), one with user properties paho's own; all arrive with every
    field."""
    got: list[Message] = []
    arrived = threading.Condition()
    bus = PahoBus(BrokerAddress.parse(mosquitto.url))

    def handler(message: Message) -> None:
        with arrived:
            got.append(message)
            arrived.notify_all()

    short: list[str] = []
    inner = bus._client.on_plain_message
    assert inner is not None

    def counting(topic: str, *rest: Any) -> None:
        short.append(topic)
        inner(topic, *rest)

    bus._client.on_plain_message = counting
    bus.subscribe("plain/#", handler, qos=1)
    bus.connect()
    sender = PahoBus(BrokerAddress.parse(mosquitto.url))
    sender.connect()
    try:
        assert bus.subscribed.wait(10)
        sender.publish("plain/a", b"\x00one", qos=1, timeout=10)
        sender.publish("plain/b", b"two", qos=0, retain=True)
        sender.publish("plain/c", b"three", qos=1, properties={"k": "v"}, timeout=10)
        sender.publish("plain/d", b"four", qos=1, expiry=600, timeout=10)
        sender.publish("plain/e", b"five", qos=1, expiry=600, properties={"k": "v"},
                       timeout=10)  # fmt: skip
        with arrived:
            assert arrived.wait_for(lambda: len(got) == 5, timeout=10)
        by_topic = {m.topic: m for m in got}
        a, b, c = by_topic["plain/a"], by_topic["plain/b"], by_topic["plain/c"]
        d, e = by_topic["plain/d"], by_topic["plain/e"]
        assert (d.payload, d.properties) == (b"four", {}) and d.expiry is not None
        assert 590 <= d.expiry <= 600
        assert (e.payload, e.properties) == (b"five", {"k": "v"}) and e.expiry is not None
        assert a.expiry is None and c.expiry is None
        assert (a.payload, a.qos, a.retain, a.dup, a.properties) == (b"\x00one", 1, False,
                                                                      False, {})
        assert a.mid > 0
        assert (b.payload, b.qos, b.properties) == (b"two", 0, {})
        assert (c.payload, c.qos, c.properties) == (b"three", 1, {"k": "v"})
        # plain/c and plain/e had user properties; plain/d only its expiry
        assert sorted(short) == ["plain/a", "plain/b", "plain/d"]
    finally:
        sender.publish("plain/b", b"", qos=0, retain=True)  # clear the retained message
        sender.close()
        bus.close()


class _Inbox:
    """The messages a manual-ack bus received, unacknowledged, for a test to wait on."""

    def __init__(self) -> None:
        self.got: list[Message] = []
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.got.append(message)
            self._cond.notify_all()

    def wait_for(self, payloads: set[bytes], timeout: float = 10.0) -> list[Message]:
        """Wait until each of ``payloads`` has arrived; everything received so far."""
        with self._cond:
            assert self._cond.wait_for(
                lambda: payloads <= {m.payload for m in self.got}, timeout=timeout
            ), f"got {[m.payload for m in self.got]}, waited for {sorted(payloads)}"
            return list(self.got)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Message]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.got) >= n, timeout=timeout), (
                f"got {[m.payload for m in self.got]}, waited for {n}"
            )
            return list(self.got)


def _session(url: str, client_id: str, inbox: _Inbox) -> PahoBus:
    bus = PahoBus(BrokerAddress.parse(url), client_id=client_id, persistent=True,
                  manual_ack=True)
    bus.subscribe("held/#", inbox, qos=1)
    bus.connect()
    assert bus.subscribed.wait(10)
    return bus


def test_held_acks_go_out_together_when_the_block_ends(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    """``acks_held``: the acknowledgements a thread makes inside the block are kept
    back (nothing queued or written), then sent; the broker has them all, since a
    new connection to the same session gets none of the messages again."""
    inbox = _Inbox()
    bus = _session(mosquitto.url, "held-acks", inbox)
    try:
        for n in range(5):
            probe.publish("held/x", b"%d" % n)
        messages = inbox.wait_for({b"%d" % n for n in range(5)})
        client = bus._client
        with bus.acks_held():
            for message in messages:
                bus.ack(message)
            assert len(client._held.acks) == 5
        assert client._held.acks is None
    finally:
        bus.close()
    again = _Inbox()
    bus = _session(mosquitto.url, "held-acks", again)
    try:
        probe.publish("held/marker", b"marker")  # queued behind any redelivery
        got = again.wait_for({b"marker"})
        assert [m.payload for m in got] == [b"marker"]
    finally:
        bus.close()


def test_held_acks_of_a_lost_connection_are_dropped(
    mosquitto: MosquittoBroker, probe: Probe
) -> None:
    """Held acknowledgements are never written on another connection than the one
    they were made on (a packet id names another message there): when the block
    ends after a reconnect, they are dropped, and the broker, never acknowledged,
    keeps the messages for the session."""
    inbox = _Inbox()
    bus = _session(mosquitto.url, "held-acks-lost", inbox)
    try:
        for n in range(3):
            probe.publish("held/y", b"%d" % n)
        messages = inbox.wait_for({b"0", b"1", b"2"})
        with bus.acks_held():
            for message in messages:
                bus.ack(message)
            lost = bus._client._sock
            assert lost is not None
            lost.shutdown(socket.SHUT_RDWR)  # paho reconnects on its own
            resent = inbox.wait_count(6, timeout=20)[3:]
            # The new connection has them again (resent, as never acknowledged).
            assert sorted(m.payload for m in resent) == [b"0", b"1", b"2"]
            assert all(m.dup for m in resent)
    finally:
        bus.close()
    again = _Inbox()
    bus = _session(mosquitto.url, "held-acks-lost", again)
    try:
        # Still unacknowledged: the held acknowledgements never reached the broker.
        assert {m.payload for m in again.wait_for({b"0", b"1", b"2"})} == {b"0", b"1", b"2"}
    finally:
        bus.close()
