"""Store-and-forward costs, each next to its baseline measured in the same run.

``python -m bench.bench_sync`` (or ``python -m bench sync``) writes
``bench/results/sync.md`` and ``sync.json``. Four measurements:

1. **Outbox append**: results appended through the store's writer thread
   (``Store.complete``: delete the intake row, insert the outbox rows, one
   transaction per group), with ``synchronous=FULL`` (fsync per group commit,
   ``--durability power``) and ``NORMAL`` (``process``). Target: >= 10,000
   records/s with group commit.
2. **DynamoDB drain** (moto server over HTTP): the syncer draining the outbox
   (sealed batches of 500 rows, ``BatchWriteItem`` of 25) against a raw
   ``BatchWriteItem`` loop of pre-serialised items (target >= 80%) and a naive
   one-``PutItem``-per-result loop (target >= 10x).
3. **S3 drain** (moto server): the syncer writing NDJSON batches against one
   ``PutObject`` per record (target >= 20x).
4. **Durable intake latency** against acknowledging on receipt: a real
   Mosquitto, the agent's ``Intake`` on a ``PahoBus`` with manual
   acknowledgement; the time from a message's arrival to its PUBACK, and the
   acknowledged messages/s of a burst.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Broker, percentiles, write_table

APPEND_N = 20_000
DRAIN_N = 5_000  # S3 drain
DDB_N = 2_000  # every DynamoDB measurement writes this many items into a fresh table
NAIVE_N = 500  # S3: one PutObject per record
LATENCY_N = 2_000
ROUNDS = 3
ROUND_NOTES: list[str] = []


def _record(n: int, thing: str = "bench") -> Any:
    from edge.sync.records import ResultRecord, result_id_for

    return ResultRecord(
        result_id=result_id_for(thing, "count", n, "bench"), seq=n, device=thing, thing=thing,
        component="count", component_version="1.0.0", topic="sensors/s1/reading",
        request_id=f"req-{n}", received_at=1_800_000_000.0 + n / 1000,
        finished_at=1_800_000_000.5 + n / 1000, kind="result",
        content_type="application/json",
        body=json.dumps({"n": n, "celsius": 21.5, "sensor": "s1", "ok": True}).encode(),
    )


# -- 1. outbox append ------------------------------------------------------------------------


def bench_append(fsync: bool, n: int = APPEND_N) -> dict[str, Any]:
    from edge.agent.store import OutboxEntry, Store

    lines = [_record(i).to_json() for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        store = Store(Path(tmp) / "agent.db", fsync=fsync)
        store.start()
        done = threading.Event()
        started = time.perf_counter()
        for i, line in enumerate(lines):
            entry = OutboxEntry("dynamodb", "count", f"r{i}", line)
            store.complete(i, [entry], done.set if i == n - 1 else None)
        done.wait()
        elapsed = time.perf_counter() - started
        commits = store.commits
        store.close()
    return {
        "measure": f"outbox append, {'power (fsync)' if fsync else 'process'}",
        "records/s": n / elapsed,
        "commits": commits,
        "records/commit": n / max(commits, 1),
        "target": ">= 10,000 records/s" if fsync else "",
        "result": ("pass" if n / elapsed >= 10_000 else "FAIL") if fsync else "",
    }


# -- 2./3. drains ----------------------------------------------------------------------------


class Moto:
    """moto's server in its own process (as a real endpoint is): it does not share this
    process's GIL with the client being measured."""

    def __init__(self) -> None:
        import subprocess
        import sys

        from tests.harness.ports import free_port

        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        import socket

        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)  # waiting for a port to open; there is no event to await

    def client(self, service: str) -> Any:
        import boto3.session

        from edge.aws.session import make_client

        session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        return make_client(session, service, endpoint_url=self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _drain(store_dir: Path, sink_name: str, sink: Any, n: int) -> float:
    """Fill an outbox with ``n`` results for ``sink``, then time the syncer emptying it."""
    from edge.agent.store import OutboxEntry, Store
    from edge.agent.syncer import Syncer

    store = Store(store_dir / f"{sink_name}-{uuid.uuid4().hex[:6]}.db", fsync=False)
    store.start()
    done = threading.Event()
    for i in range(n):
        r = _record(i)
        entry = OutboxEntry(sink_name, "count", r.result_id, r.to_json())
        store.complete(i, [entry], done.set if i == n - 1 else None)
    done.wait()
    syncer = Syncer(store, {sink_name: {"count": sink}})
    started = time.perf_counter()
    while syncer.drain_once(sink_name):
        pass
    elapsed = time.perf_counter() - started
    left = store.outbox_stats().get(sink_name, {}).get("records", 0)
    store.close()
    if left:
        raise RuntimeError(f"{left} rows left in the outbox: {syncer.snapshot()}")
    return n / elapsed


def bench_dynamodb(moto: Moto, store_dir: Path) -> list[dict[str, Any]]:
    from edge.aws.dynamodb import DynamoDBClient
    from edge.sync.factory import DYNAMODB_CONCURRENCY
    from edge.sync.sinks import DynamoDBSink

    raw = moto.client("dynamodb")
    ddb = DynamoDBClient(raw)

    def table() -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        ddb.ensure_table(name)
        return name

    probe = DynamoDBSink(ddb, table="x")
    items = [ddb.serialize(probe.item_for(_record(i))) for i in range(DDB_N)]

    def raw_loop() -> float:
        """Baseline 1: a raw BatchWriteItem loop, items already serialised, no outbox."""
        t = table()
        started = time.perf_counter()
        for start in range(0, DDB_N, 25):
            requests = [{"PutRequest": {"Item": it}} for it in items[start : start + 25]]
            pending = {t: requests}
            while pending:
                pending = raw.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        return DDB_N / (time.perf_counter() - started)

    def drain() -> float:
        sink = DynamoDBSink(ddb, table=table(), concurrency=DYNAMODB_CONCURRENCY)
        rate = _drain(store_dir, "dynamodb", sink, DDB_N)
        if len(ddb.scan_all(sink.table)) != DDB_N:
            raise RuntimeError("DynamoDB drain lost items")
        return rate

    # Alternate the two, ROUNDS times, and compare medians: the machine's load drifts.
    raws, drains = [], []
    for _ in range(ROUNDS):
        raws.append(raw_loop())
        drains.append(drain())
    raw_rate, rate = statistics.median(raws), statistics.median(drains)
    ROUND_NOTES.append(
        "DynamoDB rounds (raw / drain records/s): "
        + ", ".join(f"{r:,.0f} / {d:,.0f}" for r, d in zip(raws, drains, strict=True))
    )

    # Baseline 2: one PutItem per result (slow: once).
    t = table()
    started = time.perf_counter()
    for it in items:
        raw.put_item(TableName=t, Item=it)
    naive_rate = DDB_N / (time.perf_counter() - started)

    verdict = (
        f"80% of raw: {'pass' if rate >= 0.8 * raw_rate else 'FAIL'}; "
        f"10x naive: {'pass' if rate >= 10 * naive_rate else 'FAIL'}"
    )
    return [
        {"measure": "DynamoDB: raw BatchWriteItem loop (baseline)", "records/s": raw_rate,
         "vs naive": f"{raw_rate / naive_rate:.1f}x"},
        {"measure": "DynamoDB: one PutItem per result (baseline)", "records/s": naive_rate},
        {
            "measure": "DynamoDB: outbox drain (syncer)", "records/s": rate,
            "vs raw batch": f"{rate / raw_rate:.0%}", "vs naive": f"{rate / naive_rate:.1f}x",
            "target": ">= 80% of raw, >= 10x naive", "result": verdict,
        },
    ]


def bench_s3(moto: Moto, store_dir: Path) -> list[dict[str, Any]]:
    from edge.aws.s3 import S3Client
    from edge.sync.sinks import S3Sink

    raw = moto.client("s3")
    s3 = S3Client(raw)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.ensure_bucket(bucket, "us-east-1")

    naive = S3Sink(s3, bucket=bucket, prefix_template="naive/", thing="bench",
                   component="count", layout="object")
    records = [_record(i) for i in range(NAIVE_N)]
    started = time.perf_counter()
    naive.write(records)  # one PutObject per record
    naive_rate = NAIVE_N / (time.perf_counter() - started)

    sink = S3Sink(s3, bucket=bucket, prefix_template="batched/", thing="bench",
                  component="count", layout="ndjson")
    rate = _drain(store_dir, "s3", sink, DRAIN_N)
    lines = sum(
        len(s3.get_object(bucket, k).splitlines()) for k in s3.list_keys(bucket, "batched/")
    )
    if lines != DRAIN_N:
        raise RuntimeError(f"S3 drain wrote {lines} records, not {DRAIN_N}")
    return [
        {"measure": "S3: one PutObject per record (baseline)", "records/s": naive_rate},
        {
            "measure": "S3: outbox drain, NDJSON batches of 500", "records/s": rate,
            "vs naive": f"{rate / naive_rate:.1f}x", "target": ">= 20x naive",
            "result": "pass" if rate >= 20 * naive_rate else "FAIL",
        },
    ]


# -- 4. durable intake latency -------------------------------------------------------------


def bench_intake(mode: str, broker: Any, n: int = LATENCY_N) -> dict[str, Any]:
    """``mode``: receipt (ack in the callback), process or power (Intake + Store)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from bench.common import tcp_nodelay
    from edge.agent.intake import Intake
    from edge.agent.store import Store
    from edge.mqtt.bus import Message
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    topic = f"bench/intake/{uuid.uuid4().hex[:6]}"
    bus = PahoBus(BrokerAddress.parse(broker.url), client_id=f"bench-{uuid.uuid4().hex[:8]}",
                  persistent=True, manual_ack=True)
    lat: list[float] = []
    lock = threading.Lock()
    all_acked = threading.Event()
    arrived: dict[int, float] = {}
    acked = [0]

    class TimingBus:
        """Times arrival -> ack around the real bus."""

        def ack(self, message: Message) -> None:
            bus.ack(message)
            now = time.perf_counter()
            with lock:
                lat.append(now - arrived.pop(message.mid, now))
                acked[0] += 1
                if acked[0] == total[0]:
                    all_acked.set()

        def __getattr__(self, name: str) -> Any:
            return getattr(bus, name)

    total = [n]
    tmp = tempfile.TemporaryDirectory(prefix="edgectl-bench-")
    store = None
    timing = TimingBus()
    if mode == "receipt":
        def on_message(message: Message) -> None:
            arrived[message.mid] = time.perf_counter()
            timing.ack(message)
    else:
        store = Store(Path(tmp.name) / "agent.db", fsync=mode == "power")
        store.start()
        intake = Intake(store, timing, lambda record: None)  # type: ignore[arg-type]
        bus.on_connection_change(intake.on_connection)

        def on_message(message: Message) -> None:
            arrived[message.mid] = time.perf_counter()
            intake.accept(message, ["count"])

    bus.subscribe(topic, on_message, qos=1)
    bus.connect()
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                      client_id=f"bench-pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    tcp_nodelay(pub)
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    payload = json.dumps({"celsius": 21.5, "pad": "x" * 60}).encode()

    # Latency: one message at a time (each waits for the previous one's ack).
    for _ in range(n):
        all_acked.clear()
        total[0] = acked[0] + 1
        pub.publish(topic, payload, qos=1)
        all_acked.wait(10)
    p50, p99 = percentiles(lat, [50, 99])
    # Throughput: a burst of n, as fast as the publisher sends.
    all_acked.clear()
    total[0] = acked[0] + n
    started = time.perf_counter()
    for _ in range(n):
        pub.publish(topic, payload, qos=1)
    all_acked.wait(60)
    rate = n / (time.perf_counter() - started)
    pub.loop_stop()
    pub.disconnect()
    bus.close()
    commits = store.commits if store else 0
    if store is not None:
        store.close()
    tmp.cleanup()
    label = {"receipt": "ack on receipt (baseline)", "process": "durable intake, process",
             "power": "durable intake, power (fsync)"}[mode]
    return {"measure": f"intake: {label}", "arrival->ack p50 ms": p50 * 1000,
            "arrival->ack p99 ms": p99 * 1000, "burst acks/s": rate,
            "commits": commits or ""}


def run() -> None:
    p = argparse.ArgumentParser(prog="bench_sync")
    p.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = p.parse_args()
    global APPEND_N, DRAIN_N, DDB_N, NAIVE_N, LATENCY_N
    if args.quick:
        APPEND_N, DRAIN_N, DDB_N, NAIVE_N, LATENCY_N = 2_000, 500, 200, 100, 200
    started = time.perf_counter()
    rows = [bench_append(True), bench_append(False)]
    moto = Moto()
    try:
        with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
            rows += bench_dynamodb(moto, Path(tmp))
            rows += bench_s3(moto, Path(tmp))
    finally:
        moto.stop()
    with Broker() as broker:
        intake_rows = [bench_intake(m, broker) for m in ("receipt", "process", "power")]
    base = intake_rows[0]
    for row in intake_rows[1:]:
        row["p50 cost ms"] = row["arrival->ack p50 ms"] - base["arrival->ack p50 ms"]
        row["acks/s vs receipt"] = f"{row['burst acks/s'] / base['burst acks/s']:.0%}"
    rows += intake_rows
    write_table(
        "sync",
        rows,
        title="Store and forward: outbox append, drains to DynamoDB and S3, durable intake",
        notes=[
            f"Outbox append: {APPEND_N:,} results of ~330 bytes through Store.complete (one "
            "writer thread, group commit: each transaction takes whatever queued meanwhile, "
            "at most 512 operations); timed from the first call to the last commit callback.",
            "Drains: results queued in the outbox, then Syncer.drain_once until empty (sealed "
            "batches of 500 rows; DynamoDB BatchWriteItem of 25, 4 requests in flight as the "
            "agent runs it; one S3 NDJSON object per batch), against moto's server in its own "
            f"process over HTTP on loopback. DynamoDB: medians of {ROUNDS} alternating rounds "
            "of the drain and the raw loop; the drain and both baselines (a raw "
            "sequential BatchWriteItem loop of the same pre-serialised items, and one PutItem "
            f"per item) each write {DDB_N:,} items into a fresh table (moto slows down as a "
            f"table grows, so equal sizes keep it fair). S3: {DRAIN_N:,} results drained vs "
            f"{NAIVE_N} PutObject calls, one per record.",
            "On moto, BatchWriteItem costs about a third to a seventh of a PutItem per item "
            "(moto does per-item work either way), so '>= 10x naive' is out of reach of the "
            "raw batch loop itself here; against DynamoDB, where a request's round trip "
            "dominates, batching 25 items per request is what that target measures.",
            f"Intake: {LATENCY_N:,} QoS 1 messages one at a time (latency: arrival in the paho "
            "callback -> PUBACK handed to paho), then a burst of as many (acks/s). Durable "
            "modes record through edge.agent.intake.Intake into the SQLite store and "
            "acknowledge from the commit callback; 'receipt' acknowledges in the callback.",
            *ROUND_NOTES,
            f"Whole benchmark: {time.perf_counter() - started:.0f} s.",
        ],
    )


if __name__ == "__main__":
    run()
