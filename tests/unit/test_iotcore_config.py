"""Choosing the awsiotsdk MQTT 5 client: ``broker.client`` in the device file, the agent's
``--mqtt-client`` flag, and the adapter's endpoint parsing (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.agent.main import parse_args
from edge.errors import UsageError, ValidationError
from edge.model.device import parse_device
from edge.mqtt.iotcore_bus import BrokerAddress, IotCoreBus


def device(tmp_path: Path, broker: dict[str, object]):
    data = {"name": "pi01", "class": "generic-linux",
            "platform": {"os": "linux", "architecture": "x86_64"}, "broker": broker}  # fmt: skip
    return parse_device(data, source="devices/pi01.yaml", path=tmp_path / "devices" / "pi01.yaml")


def test_broker_client_defaults_to_paho(tmp_path: Path) -> None:
    assert device(tmp_path, {"url": "mqtt://localhost"}).broker.client == "paho"


def test_broker_client_awsiot(tmp_path: Path) -> None:
    url = "mqtts://abc-ats.iot.eu-west-1.amazonaws.com"
    config = device(tmp_path, {"url": url, "client": "awsiot", "cert": "pi01.crt",
                               "key": "pi01.key"})  # fmt: skip
    assert config.broker.client == "awsiot"
    assert config.broker.cert == tmp_path / "devices" / "pi01.crt"


def test_unknown_broker_client_is_one_line_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        device(tmp_path, {"url": "mqtt://localhost", "client": "awsiott"})
    message = str(err.value)
    assert "broker.client" in message and "paho, awsiot" in message and "awsiot" in message
    assert "\n" not in message


def test_agent_flag_overrides_the_client() -> None:
    args = parse_args(["--config", "d.yaml", "--data-dir", "data", "--mqtt-client", "awsiot"])
    assert args.mqtt_client == "awsiot"
    assert parse_args(["--config", "d.yaml", "--data-dir", "data"]).mqtt_client is None


def test_endpoint_parse() -> None:
    url = "mqtts://abc-ats.iot.eu-west-1.amazonaws.com"
    ep = BrokerAddress.parse(url, cert=Path("c"), key=Path("k"))
    assert (ep.host, ep.port, ep.tls) == ("abc-ats.iot.eu-west-1.amazonaws.com", 8883, True)
    assert BrokerAddress.parse("mqtt://127.0.0.1:1999").url == "mqtt://127.0.0.1:1999"
    with pytest.raises(UsageError, match="not an mqtt:// or mqtts:// URL"):
        BrokerAddress.parse("https://example.com")


def test_publish_before_start_is_a_broker_error() -> None:
    from edge.errors import BrokerError

    bus = IotCoreBus(BrokerAddress.parse("mqtt://127.0.0.1:1"))
    with pytest.raises(BrokerError, match="not started"):
        bus.publish("t", b"x")
