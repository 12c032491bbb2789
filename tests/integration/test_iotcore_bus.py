"""The awsiotsdk (``awscrt.mqtt5``) bus against Mosquitto's TLS listener with client
certificates (``require_certificate``): connect, subscribe, QoS 1 both ways, manual
acknowledgement, reconnect after a broker restart; and a deployment to an agent whose
bus is this adapter."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import pytest

from edge.errors import BrokerError
from edge.mqtt.bus import Message
from edge.mqtt.iotcore_bus import BrokerAddress, IotCoreBus
from tests.harness.agent import Probe
from tests.harness.deploy import Project, served
from tests.harness.mosquitto import MosquittoBroker, MosquittoFactory

pytestmark = pytest.mark.integration


def crt_bus(broker: MosquittoBroker, cn: str, **kwargs: object) -> IotCoreBus:
    pair = broker.client_cert(cn)
    endpoint = BrokerAddress.parse(broker.url, ca=broker.ca.cert, cert=pair.cert, key=pair.key)
    return IotCoreBus(endpoint, client_id=cn, **kwargs)  # type: ignore[arg-type]


def test_connect_subscribe_publish_receive_and_reconnect(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(tls=True, persistence=True)
    inbox: queue.Queue[Message] = queue.Queue()
    ups: queue.Queue[bool] = queue.Queue()
    bus = crt_bus(broker, "device-a", persistent=True, manual_ack=True)
    bus.on_connection_change(ups.put)
    bus.subscribe("t/in/#", inbox.put, qos=1)
    bus.connect(timeout=10)
    assert ups.get(timeout=10) is True
    sender = crt_bus(broker, "sender")
    sender.connect(timeout=10)
    try:
        # The subscription is made on connect; a QoS 1 round trip through the broker proves
        # it is active before the real message.
        deadline = time.monotonic() + 10
        while True:
            sender.publish("t/in/ping", b"ping", qos=1, timeout=5)
            try:
                first = inbox.get(timeout=0.5)
                break
            except queue.Empty:
                assert time.monotonic() < deadline, broker.log_tail()
        assert first.topic == "t/in/ping" and first.qos == 1 and first.mid > 0
        bus.ack(first)
        sender.publish("t/in/x", b"hello", qos=1, properties={"request-id": "r1"}, timeout=5)
        got = inbox.get(timeout=10)
        assert (got.topic, got.payload) == ("t/in/x", b"hello")
        assert got.properties == {"request-id": "r1"}
        assert got.expiry is None  # sent without one
        bus.ack(got)
        sender.publish("t/in/x", b"expiring", qos=1, timeout=5, expiry=3600)
        got = inbox.get(timeout=10)
        assert got.payload == b"expiring" and got.expiry is not None and got.expiry <= 3600
        bus.ack(got)

        # Broker restart: the CRT reconnects by itself and the subscription works again.
        broker.restart()
        assert ups.get(timeout=10) is False
        assert ups.get(timeout=30) is True
        assert sender.wait_connected(30)
        sender.publish("t/in/after", b"again", qos=1, timeout=10)
        # A PUBACK still in flight at the restart means a redelivery first (QoS 1 allows it).
        after = inbox.get(timeout=10)
        while after.payload != b"again":
            assert after.payload in (b"ping", b"hello", b"expiring"), after  # no DUP in the CRT
            bus.ack(after)
            after = inbox.get(timeout=10)
        bus.ack(after)
    finally:
        sender.close()
        bus.close()


def test_unacknowledged_message_is_redelivered_on_the_rejoined_session(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(tls=True)
    inbox: queue.Queue[Message] = queue.Queue()
    sender = crt_bus(broker, "sender2")
    sender.connect(timeout=10)
    bus = crt_bus(broker, "device-b", persistent=True, manual_ack=True)
    bus.subscribe("t/q", inbox.put, qos=1)
    bus.connect(timeout=10)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the subscription is active
            sender.publish("t/q", b"warm-up", qos=1, timeout=5)
            try:
                warm = inbox.get(timeout=0.5)
                break
            except queue.Empty:
                assert time.monotonic() < deadline
        bus.ack(warm)
        while not inbox.empty():
            bus.ack(inbox.get())
        sender.publish("t/q", b"keep me", qos=1, timeout=5)
        kept = inbox.get(timeout=10)
        assert kept.payload == b"keep me"
        bus.close()  # without the PUBACK
        again = crt_bus(broker, "device-b", persistent=True, manual_ack=True)
        again.subscribe("t/q", inbox.put, qos=1)
        again.connect(timeout=10)
        try:
            redelivered = inbox.get(timeout=10)
            assert redelivered.payload == b"keep me"
            again.ack(redelivered)
        finally:
            again.close()
    finally:
        sender.close()


def test_no_client_certificate_is_refused(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(tls=True)
    bus = IotCoreBus(BrokerAddress.parse(broker.url, ca=broker.ca.cert), client_id="anon")
    with pytest.raises(BrokerError, match="cannot connect"):
        bus.connect(timeout=3)


def test_agent_deploys_over_the_crt_bus(
    tmp_path: Path, mosquitto_factory: MosquittoFactory
) -> None:
    broker = mosquitto_factory(tls=True)
    project = Project(tmp_path / "project", broker)
    pair = broker.client_cert("dev1")
    operator = broker.client_cert("edgectl")
    certs = project.root / "certs"
    certs.mkdir()
    for src, name in ((operator.cert, "edgectl.crt"), (operator.key, "edgectl.key"),
                      (broker.ca.cert, "ca.crt")):  # fmt: skip
        (certs / name).write_bytes(src.read_bytes())
    (certs / "edgectl.key").chmod(0o600)
    project.device("dev1")
    device_file = project.root / "devices" / "dev1.yaml"
    text = device_file.read_text().replace(
        f"  url: {broker.url}\n",
        f"  url: {broker.url}\n  client: awsiot\n  ca: {broker.ca.cert}\n"
        f"  cert: {pair.cert}\n  key: {pair.key}\n",
    )
    device_file.write_text(text)
    probe_pair = broker.client_cert("probe")
    probe = Probe.__new__(Probe)  # a TLS probe: same recording client, own connection
    _tls_probe(probe, broker, probe_pair.cert, probe_pair.key)
    try:
        probe.follow("out/#", "edge/dev1/#")
        agent = project.agent("dev1").start(wait_online=False)
        probe.wait_for(lambda ms: any(m.topic == "edge/dev1/status"
                                      and json.loads(m.payload).get("state") == "online"
                                      for m in ms), 20)  # fmt: skip
        assert "(awscrt)" in agent.log_text()
        v1 = project.component("1.0.0")
        result = project.deploy(str(v1), "--device", "dev1", "--health-window", "0")
        assert result["_code"] == 0, result
        assert [d["state"] for d in result["devices"]] == ["SUCCEEDED"]
        probe.publish("in/echo/a", json.dumps({"n": 1}))
        assert served(probe, "echo", 1)[0]["version"] == "1.0.0"
        agent.terminate()
    finally:
        probe.close()


def _tls_probe(probe: Probe, broker: MosquittoBroker, cert: Path, key: Path) -> None:
    import threading

    probe.messages = []
    probe._cond = threading.Condition()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-tls", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(broker.ca.cert), certfile=str(cert), keyfile=str(key))
    client.on_message = probe._on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    probe._client = client
