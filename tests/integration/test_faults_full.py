"""Full outbox: a small bound and the endpoint cut. ``backpressure`` stops acknowledging
intake (the broker keeps the messages) and loses nothing once the endpoint returns;
``drop-oldest`` keeps taking messages, drops the oldest results, and drops exactly
what it reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe
from tests.harness.moto import unique_name
from tests.harness.tcpproxy import TcpProxy
from tests.integration.faults import (
    Publisher,
    StatusLog,
    agent_args,
    count_component,
    drained,
    dynamodb_ns,
    s3_ns,
    set_outbox,
    settle,
)

pytestmark = pytest.mark.integration

EVENTS = 400
BOUND = 40_000  # bytes: room for the results of about 40 events in two sinks


def _setup(
    tmp_path: Path, agent_factory: Any, moto_server: Any, s3_client: Any, ddb_client: Any,
    proxy: TcpProxy, policy: str,
) -> tuple[Any, str, str]:
    bucket, table = unique_name("full"), unique_name("full")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    # One worker: results enter the outbox in event order, so "the oldest" is checkable.
    comp = count_component(tmp_path / "c", bucket, table, instances=1)
    runner = agent_factory([comp], moto_url=proxy.url, extra_args=["--sync-retry-max", "1"])
    set_outbox(runner, BOUND, policy)
    return agent_args(runner, heartbeat=0.5).start(), bucket, table


def test_backpressure_holds_intake_and_loses_nothing(
    tmp_path: Path, agent_factory: Any, mosquitto: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    with TcpProxy(moto_server.host, moto_server.port) as proxy:
        proxy.cut()
        agent, bucket, table = _setup(
            tmp_path, agent_factory, moto_server, s3_client, ddb_client, proxy, "backpressure"
        )
        status = StatusLog(probe)
        publisher = Publisher(mosquitto, "in/count/x", EVENTS, rate=2_000).start()
        assert publisher.done.wait(30)  # the broker took them all; the agent holds back
        publisher.close()
        full = status.wait(lambda d: d["intake"]["full"] and d["intake"]["parked"] > 0, 30)
        invocations = full["components"]["count"]["invocations"]
        assert invocations < EVENTS / 2, "intake should stop near the bound"
        assert full["intake"]["used_bytes"] >= BOUND
        assert all(sink["dropped"] == 0 for sink in full["outbox"].values())
        proxy.restore()
        done = settle(status, ddb_client, table, s3_client, bucket, EVENTS)
    assert not done["intake"]["full"]
    expected = set(range(EVENTS))
    ddb, s3 = dynamodb_ns(ddb_client, table), s3_ns(s3_client, bucket)
    assert set(ddb) == expected and sum(ddb.values()) == EVENTS
    assert set(s3) == expected and sum(s3.values()) == EVENTS
    assert agent.alive()


def test_drop_oldest_drops_exactly_what_it_reports(
    tmp_path: Path, agent_factory: Any, mosquitto: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    with TcpProxy(moto_server.host, moto_server.port) as proxy:
        proxy.cut()
        agent, bucket, table = _setup(
            tmp_path, agent_factory, moto_server, s3_client, ddb_client, proxy, "drop-oldest"
        )
        status = StatusLog(probe)
        publisher = Publisher(mosquitto, "in/count/x", EVENTS, rate=2_000).start()
        assert publisher.done.wait(30)
        publisher.close()
        # Every event runs (nothing is held back); the outbox keeps only the newest.
        ran = status.wait(
            lambda d: d["components"]["count"]["invocations"] >= EVENTS
            and d["intake"]["pending"] == 0, 60,
        )
        assert ran["intake"]["used_bytes"] <= BOUND
        dropped = {name: sink["dropped"] for name, sink in ran["outbox"].items()}
        assert dropped["s3"] > 0 and dropped["dynamodb"] > 0
        proxy.restore()
        kept = {name: EVENTS - n for name, n in dropped.items()}
        status.wait(lambda d: drained(d) and d["timestamp"] > ran["timestamp"], 60)
    ddb, s3 = dynamodb_ns(ddb_client, table), s3_ns(s3_client, bucket)
    # Exactly the oldest `dropped` results are missing, and nothing else.
    assert sorted(ddb) == list(range(dropped["dynamodb"], EVENTS))
    assert sorted(s3) == list(range(dropped["s3"], EVENTS))
    assert sum(ddb.values()) == kept["dynamodb"] and sum(s3.values()) == kept["s3"]
    assert agent.alive()
