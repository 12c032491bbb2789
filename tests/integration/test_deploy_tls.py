"""mTLS and the ACL: the CLI and the agent over a Mosquitto TLS listener with
``require_certificate``, certificates from ``edgectl device provision`` and an ACL from
``edgectl broker config``; device B can neither read A's desired state nor publish as A."""

from __future__ import annotations

import json
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.certs import Ca
from tests.harness.deploy import Project
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def fleet_ca(certs: Path) -> Ca:
    cert = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    return Ca(cert=certs / "ca.crt", certificate=cert, private_key=key)  # type: ignore[arg-type]


class TlsClient:
    def __init__(self, broker: MosquittoBroker, certs: Path, name: str, cert: Path, key: Path):
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[Any] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"tls-{name}", protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.tls_set(ca_certs=str(certs / "ca.crt"), certfile=str(cert), keyfile=str(key),
                            cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        with self._cond:
            self.granted.extend(codes)
            self._cond.notify_all()

    def wait(self, pred: Any, timeout: float = 20) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.messages), timeout), [
                m.topic for m in self.messages][-10:]  # fmt: skip

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_tls_device(root: Path, name: str, url: str) -> None:
    (root / "devices" / f"{name}.yaml").write_text(
        f"name: {name}\nclass: generic-linux\nplatform: {{os: linux, architecture: x86_64}}\n"
        f"thing_name: {name}\ngroups: [test]\nbroker:\n  url: {url}\n"
        f"  ca: ../certs/ca.crt\n  cert: ../certs/devices/{name}.crt\n"
        f"  key: ../certs/devices/{name}.key\ncloud:\n  region: us-east-1\n"
    )


def test_mtls_deploy_and_acl(tmp_path: Path) -> None:
    from edge.deploy.pki import ensure_ca

    root = tmp_path / "project"
    certs = root / "certs"
    ensure_ca(certs)  # what `edgectl device provision` does on first use
    broker = MosquittoBroker(tmp_path / "tls", tls=True, acl="", ca=fleet_ca(certs))
    broker.start()  # without an ACL at first: only to learn its port
    broker.stop()
    project = Project(root, broker)
    for name in ("devA", "devB"):
        write_tls_device(root, name, broker.url)
    project.component("1.0.0")
    for name in ("devA", "devB"):
        code, _, err = project.cli("device", "provision", name, "--devices-dir",
                                   str(root / "devices"))  # fmt: skip
        assert code == 0, err
    code, _, err = project.cli("broker", "config", "--devices-dir", str(root / "devices"),
                               "--components-dir", str(root / "components"))  # fmt: skip
    assert code == 0, err
    acl = (root / "broker" / "acl").read_text()
    assert "user devA\ntopic read edge/devA/desired" in acl
    broker.acl = acl
    broker.start()
    try:
        operator = TlsClient(broker, certs, "op", certs / "edgectl.crt", certs / "edgectl.key")
        operator.client.subscribe("edge/#", qos=1)
        agent = project.agent("devA").start(wait_online=False)
        operator.wait(lambda ms: any(m.topic == "edge/devA/status" and
                                     json.loads(m.payload).get("state") == "online" for m in ms))
        result = project.deploy(str(root / "components" / "echo"), "--device", "devA",
                                "--health-window", "0")  # fmt: skip
        assert result["_code"] == 0, result
        assert result["devices"][0]["state"] == "SUCCEEDED"

        b = TlsClient(broker, certs, "b", certs / "devices" / "devB.crt",
                      certs / "devices" / "devB.key")  # fmt: skip
        # Mosquitto grants the subscription but never delivers what the ACL denies: prove
        # it with a marker the operator publishes after B subscribed to both.
        b.client.subscribe("edge/devA/desired", qos=1)
        b.client.subscribe("edgectl/artifacts/marker", qos=1)
        with b._cond:
            assert b._cond.wait_for(lambda: len(b.granted) == 2, 10)
        operator.client.publish("edgectl/artifacts/marker", b"x", qos=1).wait_for_publish(5)
        b.wait(lambda ms: any(m.topic == "edgectl/artifacts/marker" for m in ms))
        # Publishing as A: the broker drops it; A's retained status stays A's own.
        forged = json.dumps({"schema": 1, "state": "offline", "device": "devA", "thing": "devA"})
        b.client.publish("edge/devA/status", forged, qos=1, retain=True).wait_for_publish(5)
        b.client.publish("edge/devA/desired", b"{}", qos=1, retain=True).wait_for_publish(5)
        marker = TlsClient(broker, certs, "m", certs / "edgectl.crt", certs / "edgectl.key")
        marker.client.subscribe("edge/devA/#", qos=1)
        marker.wait(lambda ms: {m.topic for m in ms} >= {"edge/devA/status", "edge/devA/desired"})
        status = next(json.loads(m.payload) for m in marker.messages
                      if m.topic == "edge/devA/status")  # fmt: skip
        desired = next(m.payload for m in marker.messages if m.topic == "edge/devA/desired")
        assert status["state"] == "online"
        assert desired != b"{}" and b"signature" in desired
        assert not any(m.topic.startswith("edge/devA/") for m in b.messages)
        # No certificate, no connection.
        from edge.errors import BrokerError
        from edge.mqtt.paho_bus import BrokerAddress, PahoBus

        anon = PahoBus(BrokerAddress.parse(broker.url, ca=certs / "ca.crt"))
        with pytest.raises(BrokerError):
            anon.connect(timeout=3)
        for client in (operator, b, marker):
            client.close()
        agent.terminate()
    finally:
        broker.stop()
