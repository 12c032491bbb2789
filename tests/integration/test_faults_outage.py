"""Cloud outage: the S3/DynamoDB endpoint is cut for 30 s (a TCP proxy between the agent
and the moto server) while events keep coming; the backlog rises, then drains, and
every result lands exactly once."""

from __future__ import annotations

import time
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
    dynamodb_ns,
    s3_ns,
    settle,
)

pytestmark = pytest.mark.integration

EVENTS = 2_000
RATE = 50.0  # events/s: 40 s of traffic
OUTAGE = 30.0


def backlog(doc: dict[str, Any]) -> int:
    return sum(sink["records"] for sink in doc.get("outbox", {}).values())


def test_a_30s_outage_is_waited_out_and_nothing_is_lost_or_doubled(
    tmp_path: Path, agent_factory: Any, mosquitto: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    bucket, table = unique_name("outage"), unique_name("outage")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = count_component(tmp_path / "c", bucket, table)
    with TcpProxy(moto_server.host, moto_server.port) as proxy:
        runner = agent_factory(
            [comp], moto_url=proxy.url, extra_args=["--sync-retry-max", "3"]
        )
        agent = agent_args(runner, heartbeat=1.0).start()
        status = StatusLog(probe)
        publisher = Publisher(mosquitto, "in/count/x", EVENTS, rate=RATE).start()
        status.wait(lambda d: d["outbox"].get("dynamodb", {}).get("written", 0) > 0, 30)

        proxy.cut()
        cut_at = time.monotonic()
        # While cut: the backlog grows and the sinks report the failure.
        during = status.wait(
            lambda d: backlog(d) > 200 and d["outbox"]["dynamodb"]["last_error"] is not None,
            timeout=OUTAGE,
        )
        remaining = OUTAGE - (time.monotonic() - cut_at)
        if remaining > 0:
            time.sleep(remaining)  # the outage's length is the scenario, not a wait for an event
        peak = max(backlog(d) for d in status.docs())
        proxy.restore()

        assert publisher.done.wait(60)
        publisher.close()
        after = settle(status, ddb_client, table, s3_client, bucket, EVENTS)
    assert publisher.sent == EVENTS
    assert proxy.refused > 0  # the agent kept trying while the endpoint was cut
    assert after["outbox"]["dynamodb"]["last_error"] is None
    assert after["outbox"]["s3"]["last_success"] > during["timestamp"]
    assert peak >= OUTAGE * RATE * 0.8  # ~30 s of results for two sinks waited on disk

    expected = set(range(EVENTS))
    ddb = dynamodb_ns(ddb_client, table)
    s3 = s3_ns(s3_client, bucket)
    assert set(ddb) == expected and sum(ddb.values()) == EVENTS
    assert set(s3) == expected and sum(s3.values()) == EVENTS
    assert agent.alive()
