"""The raw paho relay: the baseline every agent benchmark is compared with.

The relay does the least a broker-to-broker hop can do in Python: one paho
MQTT 5 client, Nagle off, subscribed to ``bench/in/#`` at QoS 1, republishing
each payload to ``bench/out/<rest>`` at QoS 1. The device agent adds durable
intake, a worker process and an outbox on top of that hop; measuring both with
the same prober against the same broker in the same run shows what those
guarantees cost, separately from what Python + paho + Mosquitto cost anyway.

Run it:
    python -m bench.relay --host 127.0.0.1 --port 1884   # prints "ready" once subscribed
    python -m bench.relay --selftest                      # broker + relay + prober

The prober (``measure_latency``, ``measure_throughput``) works with any relay:
it publishes JSON ``{"seq": N, "pad": "..."}`` to ``in_topic`` and waits for a
message on ``out_topic`` whose payload ``seq_of`` maps back to ``N``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from bench.common import REPO_ROOT, Broker, percentiles, tcp_nodelay

IN_PREFIX = "bench/in/"
OUT_PREFIX = "bench/out/"
# paho's default of 20 in-flight QoS 1 messages per client would cap the
# throughput window below what the prober asks for; the broker's own limit
# (max_inflight_messages in the harness config) still applies on its side.
CLIENT_INFLIGHT = 1000
TIMEOUT = 10.0

SeqOf = Callable[[bytes], int]


def _client(client_id: str) -> mqtt.Client:
    return _configured(mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv5))


_C = TypeVar("_C", bound=mqtt.Client)


def _configured(client: _C) -> _C:
    client.max_inflight_messages_set(CLIENT_INFLIGHT)
    tcp_nodelay(client)
    return client


# -- the relay ---------------------------------------------------------------


def run_relay(
    host: str,
    port: int,
    *,
    in_prefix: str = IN_PREFIX,
    out_prefix: str = OUT_PREFIX,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Relay ``<in_prefix>#`` to ``<out_prefix><rest>`` at QoS 1 until SIGTERM/SIGINT."""
    client = _client(f"bench-relay-{os.getpid()}")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            raise SystemExit(f"relay: connect refused: {reason}")
        c.subscribe(in_prefix + "#", qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        if any(code.is_failure for code in codes):
            raise SystemExit(f"relay: subscribe refused: {codes}")
        if on_ready is not None:
            on_ready()

    def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        c.publish(out_prefix + message.topic[len(in_prefix) :], message.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    def stop(_signum: int, _frame: FrameType | None) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client.connect(host, port)
    client.loop_forever()


@dataclass
class RelayProcess:
    """A relay subprocess that has subscribed (it printed "ready")."""

    proc: subprocess.Popen[str]

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


@contextlib.contextmanager
def start_relay(host: str, port: int, timeout: float = TIMEOUT) -> Iterator[RelayProcess]:
    """Run ``python -m bench.relay`` against a broker; yield once it is subscribed.

    A separate process, as the agent is, so both pay the same scheduling and
    loopback costs and neither shares the prober's GIL.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.relay", "--host", host, "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    relay = RelayProcess(proc)
    try:
        _await_line(proc, "ready", timeout)
        yield relay
    finally:
        relay.stop()


def _await_line(proc: subprocess.Popen[str], wanted: str, timeout: float) -> None:
    """Read ``proc``'s stdout until ``wanted``; fail if it exits or the deadline passes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            line = proc.stdout.readline()
            if line.strip() == wanted:
                return
            if not line:
                raise RuntimeError(f"relay exited with {proc.wait()} before printing {wanted!r}")
    raise TimeoutError(f"relay did not print {wanted!r} within {timeout}s")


# -- the prober ------------------------------------------------------------------


def default_seq_of(payload: bytes) -> int:
    """The sequence number of a relayed payload that is the prober's JSON, unchanged."""
    return int(json.loads(payload)["seq"])


def make_payload(seq: int, size: int) -> bytes:
    """JSON ``{"seq": seq, "pad": "xxx"}`` padded to exactly ``size`` bytes when possible."""
    body = json.dumps({"seq": seq, "pad": ""}, separators=(",", ":"))
    return body.replace('"pad":""', '"pad":"' + "x" * max(0, size - len(body)) + '"').encode()


_MID = struct.Struct("!H")


class _ProberClient(mqtt.Client):
    """paho's client, except that a QoS 0/1 PUBLISH's payload goes straight to
    ``on_payload``, its MQTT 5 properties skipped, not decoded.

    The prober only reads the payload's ``seq``, and it shares the CPUs with the
    system it measures. paho decodes properties in Python: for the agent's four
    user properties per result that cost the prober about 40 us a message (a
    third more than a relayed message without properties), taken from the cores
    the agent runs on and added to each latency sample before its arrival time
    was read. The instrument must cost the same whatever it measures.
    """

    on_payload: Callable[[bytes], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        deliver = self.on_payload
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if deliver is None or qos == 2 or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        try:
            (tlen,) = _MID.unpack_from(packet, 0)
            pos = 2 + tlen
            mid = 0
            if qos:
                (mid,) = _MID.unpack_from(packet, pos)
                pos += 2
            size, shift = 0, 0
            while True:  # the property length, a variable byte integer
                byte = packet[pos]
                pos += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        except (struct.error, IndexError):
            return super()._handle_publish()  # malformed: paho's own errors
        deliver(bytes(packet[pos + size :]))
        if qos == 1:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class _Prober:
    """One paho client subscribed to the out topic, timing arrivals in its callback.

    Arrival time is taken as the payload is handed over on paho's network thread,
    not when the waiting thread wakes up, so thread hand-off is not part of the
    number; nor is decoding MQTT 5 properties (``_ProberClient``).
    """

    def __init__(self, host: str, port: int, out_topic: str, seq_of: SeqOf) -> None:
        self.arrivals: queue.Queue[tuple[int, float]] = queue.Queue()
        self._seq_of = seq_of
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.client = _configured(_ProberClient(
            CallbackAPIVersion.VERSION2, client_id=f"bench-prober-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        ))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_payload = self._on_payload
        self._out_topic = out_topic
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(TIMEOUT):
            self.close()
            raise TimeoutError(f"prober could not subscribe to {out_topic} on {host}:{port}")

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if not reason.is_failure:
            c.subscribe(self._out_topic, qos=1)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _m: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        if not any(code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._on_payload(bytes(message.payload))  # what paho's own path delivers (QoS 2)

    def _on_payload(self, payload: bytes) -> None:
        now = time.perf_counter()
        try:
            seq = self._seq_of(payload)
        except (ValueError, KeyError, TypeError):
            return  # not ours; a relay may publish other things on the out topic
        self.arrivals.put((seq, now))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measure_latency(
    host: str,
    port: int,
    in_topic: str,
    out_topic: str,
    n: int,
    payload_size: int = 100,
    *,
    warmup: int = 50,
    seq_of: SeqOf = default_seq_of,
    timeout: float = TIMEOUT,
) -> list[float]:
    """Round-trip times in **seconds** of ``n`` sequential QoS 1 messages in -> out.

    One message at a time: publish, wait for its relayed copy, next. ``warmup``
    messages go first and are not recorded, so connection setup, imports and
    the relay's first-message paths do not land in p99.
    """
    prober = _Prober(host, port, out_topic, seq_of)
    samples: list[float] = []
    try:
        for seq in range(warmup + n):
            start = time.perf_counter()
            prober.client.publish(in_topic, make_payload(seq, payload_size), qos=1)
            arrived = _await_seq(prober.arrivals, seq, timeout)
            if seq >= warmup:
                samples.append(arrived - start)
    finally:
        prober.close()
    return samples


def _await_seq(arrivals: queue.Queue[tuple[int, float]], seq: int, timeout: float) -> float:
    """Arrival time of ``seq``, skipping duplicates and older messages QoS 1 may resend."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, when = arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"message {seq} did not come back within {timeout}s") from None
        if got == seq:
            return when


def measure_throughput(
    host: str,
    port: int,
    in_topic: str,
    out_topic: str,
    n: int,
    window: int = 200,
    payload_size: int = 100,
    *,
    warmup: int = 200,
    seq_of: SeqOf = default_seq_of,
    timeout: float = 60.0,
) -> float:
    """Messages per second through the relay with up to ``window`` in flight.

    The clock runs from the first measured publish to the last relayed arrival;
    every sequence number must come back once (duplicates are ignored).
    """
    prober = _Prober(host, port, out_topic, seq_of)
    try:
        _pump(prober, in_topic, 0, warmup, window, payload_size, timeout)
        start = time.perf_counter()
        end = _pump(prober, in_topic, warmup, n, window, payload_size, timeout)
    finally:
        prober.close()
    return n / (end - start)


def _pump(
    prober: _Prober, topic: str, first: int, count: int, window: int, size: int, timeout: float
) -> float:
    """Send ``count`` messages keeping at most ``window`` unanswered; return last arrival."""
    pending: set[int] = set()
    last = time.perf_counter()
    deadline = time.monotonic() + timeout
    next_seq, stop = first, first + count

    def collect(block: bool) -> None:
        nonlocal last
        while True:
            try:
                wait = max(0.0, deadline - time.monotonic())
                seq, when = prober.arrivals.get(block=block, timeout=wait if block else None)
            except queue.Empty:
                if block:
                    raise TimeoutError(f"{len(pending)} messages not relayed in time") from None
                return
            if seq in pending:
                pending.discard(seq)
                last = when
                return

    while next_seq < stop or pending:
        if next_seq < stop and len(pending) < window:
            prober.client.publish(topic, make_payload(next_seq, size), qos=1)
            pending.add(next_seq)
            next_seq += 1
            collect(block=False)
        else:
            collect(block=True)
    return last


# -- entry point -----------------------------------------------------------------


def selftest(n_latency: int, n_throughput: int) -> dict[str, float]:
    """Broker + relay subprocess + prober, to prove the baseline works end to end."""
    with Broker() as broker, start_relay(broker.host, broker.port):
        samples = measure_latency(broker.host, broker.port, "bench/in/x", "bench/out/x", n_latency)
        rate = measure_throughput(
            broker.host, broker.port, "bench/in/x", "bench/out/x", n_throughput
        )
    p50, p99 = percentiles(samples, [50, 99])
    return {"p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "msgs_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--in-prefix", default=IN_PREFIX)
    parser.add_argument("--out-prefix", default=OUT_PREFIX)
    parser.add_argument("--selftest", action="store_true", help="start a broker and measure")
    parser.add_argument("-n", type=int, default=1000, help="selftest latency samples")
    parser.add_argument("--throughput-n", type=int, default=10000)
    args = parser.parse_args(argv)
    if args.selftest:
        result = selftest(args.n, args.throughput_n)
        print(
            f"raw paho relay: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
            f"{result['msgs_per_s']:,.0f} msgs/s"
        )
        return 0
    if args.port is None:
        parser.error("--port is required (or use --selftest)")

    def ready() -> None:
        print("ready", flush=True)

    run_relay(
        args.host, args.port, in_prefix=args.in_prefix, out_prefix=args.out_prefix, on_ready=ready
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
