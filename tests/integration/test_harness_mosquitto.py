"""The broker harness does what other tests rely on, proven with real paho clients.

Every other integration test trusts ``tests.harness.mosquitto`` to give it a
broker that behaves like a device's: QoS 1 delivery, TLS with client
certificates, ACLs keyed on the certificate CN, and persistent sessions that
survive a broker restart. If one of those silently did nothing (say, an ACL file
the broker never loaded) the agent's tests would pass for the wrong reason, so
each mode is checked here on its own.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.harness.mosquitto import MosquittoBroker, MosquittoFactory

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
NOT_AUTHORIZED = 0x87


class Probe:
    """A paho client with its callbacks turned into things a test can wait on."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.connected = threading.Event()
        self.lost = threading.Event()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail

    def _on_connect(
        self,
        _c: mqtt.Client,
        _u: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        self.connack = reason
        self.session_present = flags.session_present
        if not reason.is_failure:
            self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, *_rest: Any) -> None:
        self.lost.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.lost.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(
        self,
        _c: mqtt.Client,
        _u: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        self._subacks.put(reasons)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        """Subscribe and return the SUBACK reason codes (granted QoS or an error)."""
        result, _mid = self.client.subscribe(topic, qos=qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        return [code.value for code in self._subacks.get(timeout=TIMEOUT)]

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait for the PUBACK, so the broker has the message when we return."""
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT)


@contextmanager
def connected(
    broker: MosquittoBroker,
    client_id: str = "",
    *,
    cn: str | None = None,
    clean_start: bool = True,
    session_expiry: int | None = None,
) -> Iterator[Probe]:
    """A connected ``Probe``; disconnects and stops its network thread on exit."""
    probe = Probe(broker.paho_client(client_id, cn=cn))
    properties = None
    if session_expiry is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry
    probe.client.connect(broker.host, broker.port, clean_start=clean_start, properties=properties)
    probe.client.loop_start()
    try:
        assert probe.connected.wait(TIMEOUT), f"no CONNACK ({probe.connack}):\n{broker.log_tail()}"
        yield probe
    finally:
        probe.client.disconnect()
        probe.client.loop_stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_plain_broker_relays_qos1(mosquitto: MosquittoBroker) -> None:
    with connected(mosquitto, unique("sub")) as sub, connected(mosquitto, unique("pub")) as pub:
        assert sub.subscribe("harness/plain/#") == [1]
        pub.publish("harness/plain/a", b"hello")
        message = sub.next_message()
    assert (message.topic, message.payload, message.qos) == ("harness/plain/a", b"hello", 1)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883


def test_config_always_disables_nagle(mosquitto_factory: MosquittoFactory) -> None:
    for broker in (mosquitto_factory(), mosquitto_factory(tls=True, persistence=True)):
        conf = broker.conf_path.read_text()
        assert "set_tcp_nodelay true" in conf
        assert f"listener {broker.port} 127.0.0.1" in conf


def test_client_sockets_disable_nagle(mosquitto: MosquittoBroker) -> None:
    with connected(mosquitto, unique("nodelay")) as probe:
        sock = probe.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_session_broker_is_shared_and_running(mosquitto_session: MosquittoBroker) -> None:
    topic = unique("harness/session")
    with connected(mosquitto_session, unique("s")) as probe:
        assert probe.subscribe(topic) == [1]
        probe.publish(topic, b"x")
        assert probe.next_message().payload == b"x"


def test_tls_with_client_certificate_connects(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(tls=True)
    assert broker.url.startswith("mqtts://127.0.0.1:")
    with connected(broker, "device-1") as probe:
        assert probe.subscribe("harness/tls") == [1]
        probe.publish("harness/tls", b"secret")
        assert probe.next_message().payload == b"secret"


def test_tls_without_client_certificate_is_refused(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(tls=True)
    probe = Probe(broker.paho_client("anonymous", cn=""))
    try:
        # TLS 1.3 finishes the client side of the handshake before the server
        # checks for a certificate, so the refusal shows up either as an error
        # from connect() or as a connection that never gets its CONNACK.
        probe.client.connect(broker.host, broker.port)
    except (ssl.SSLError, OSError):
        return
    probe.client.loop_start()
    try:
        assert probe.lost.wait(TIMEOUT), "broker kept a client without a certificate"
        assert not probe.connected.is_set()
    finally:
        probe.client.disconnect()
        probe.client.loop_stop()
    assert "certificate" in broker.log_text().lower()


ACL = """\
user admin
topic readwrite #

user sensor-1
topic readwrite sensors/sensor-1/#
"""


def test_acl_denies_reading_outside_allowed_topics(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(tls=True, acl=ACL)
    with connected(broker, "admin") as admin, connected(broker, "sensor-1") as sensor:
        assert sensor.subscribe("sensors/sensor-1/#") == [1]
        # Mosquitto 2.0's acl_file grants the SUBACK and enforces "read" on each
        # delivery; a newer broker may refuse the SUBACK (0x87). Either way the
        # sensor must never see another sensor's messages.
        assert sensor.subscribe("sensors/sensor-2/#")[0] in (1, NOT_AUTHORIZED)
        admin.publish("sensors/sensor-2/private", b"not for sensor-1")
        admin.publish("sensors/sensor-1/marker", b"for sensor-1")
        received = sensor.next_message()
        assert (received.topic, received.payload) == ("sensors/sensor-1/marker", b"for sensor-1")
        assert sensor.messages.empty()


def test_acl_drops_publish_outside_allowed_topics(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(tls=True, acl=ACL)
    with connected(broker, "admin") as admin, connected(broker, "sensor-1") as sensor:
        assert admin.subscribe("sensors/#") == [1]
        sensor.publish("sensors/sensor-2/spoofed", b"denied")
        # The broker keeps one client's messages in order, so once the allowed
        # marker arrives the denied message would already have been delivered.
        sensor.publish("sensors/sensor-1/marker", b"allowed")
        received = admin.next_message()
        assert (received.topic, received.payload) == ("sensors/sensor-1/marker", b"allowed")
        assert admin.messages.empty()


def test_acl_applies_to_anonymous_clients_on_plain_broker(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(acl="topic readwrite open/#\n")
    with connected(broker, unique("anon")) as probe:
        assert probe.subscribe("open/#") == [1]
        assert probe.subscribe("closed/#")[0] in (1, NOT_AUTHORIZED)
        probe.publish("closed/x", b"denied")
        probe.publish("open/x", b"allowed")
        received = probe.next_message()
        assert (received.topic, received.payload) == ("open/x", b"allowed")
        assert probe.messages.empty()


def test_persistent_session_keeps_queued_qos1_across_restart(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(persistence=True)
    port = broker.port
    with connected(broker, "durable", clean_start=False, session_expiry=3600) as sub:
        assert sub.subscribe("jobs/#") == [1]
    with connected(broker, unique("pub")) as pub:
        pub.publish("jobs/1", b"queued while offline")

    broker.restart()
    assert broker.port == port

    with connected(broker, "durable", clean_start=False, session_expiry=3600) as sub:
        assert sub.session_present
        message = sub.next_message()
    assert (message.topic, message.payload, message.qos) == ("jobs/1", b"queued while offline", 1)


def test_stop_start_and_log(mosquitto: MosquittoBroker) -> None:
    pid = mosquitto.pid
    mosquitto.stop()
    stopped = mosquitto.running
    mosquitto.start()
    assert not stopped
    assert mosquitto.running
    assert mosquitto.pid != pid
    assert mosquitto.log_text().count("running") >= 2
