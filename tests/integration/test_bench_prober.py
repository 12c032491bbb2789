"""The benchmarks' prober reads a relayed payload without decoding its MQTT 5
properties (``bench.relay._ProberClient``), so what it costs does not depend on
what the measured system attaches; it must still see every payload and
acknowledge it."""

from __future__ import annotations

import json

import pytest

from bench.relay import _Prober
from edge.mqtt.paho_bus import BrokerAddress, PahoBus
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def test_the_prober_gets_payloads_with_and_without_properties(
    mosquitto: MosquittoBroker,
) -> None:
    prober = _Prober(mosquitto.host, mosquitto.port, "probe/out",
                     lambda p: int(json.loads(p)["seq"]))
    sender = PahoBus(BrokerAddress.parse(mosquitto.url))
    sender.connect()
    try:
        long = {f"key-{n}": "v" * 20 for n in range(8)}  # a property length over 127 bytes
        sender.publish("probe/out", b'{"seq": 1}', qos=1, timeout=10)
        sender.publish("probe/out", b'{"seq": 2}', qos=1, properties={"request-id": "r"},
                       timeout=10)
        sender.publish("probe/out", b'{"seq": 3}', qos=0, properties=long)
        sender.publish("probe/out", b'not json', qos=1, timeout=10)  # not a probe's: skipped
        sender.publish("probe/out", b'{"seq": 4}', qos=1, properties=long, timeout=10)
        seqs = [prober.arrivals.get(timeout=10)[0] for _ in range(4)]
        assert seqs == [1, 2, 3, 4]
        # Every QoS 1 delivery is acknowledged: were it not, the broker would stop
        # sending once its in-flight window for the prober was full.
        window = mosquitto.max_inflight_messages
        for seq in range(5, 5 + 2 * window):
            sender.publish("probe/out", b'{"seq": %d}' % seq, qos=1, properties=long)
        got = [prober.arrivals.get(timeout=10)[0] for _ in range(2 * window)]
        assert got == list(range(5, 5 + 2 * window))
    finally:
        sender.close()
        prober.close()
