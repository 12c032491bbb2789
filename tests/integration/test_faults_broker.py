"""Broker restart: Mosquitto with persistence is restarted mid-stream; no QoS 1 event is
lost. Messages queued in the broker for the agent's persistent session, and
messages in flight to the agent when the broker went away, all reach the sinks
exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import AgentRunner, Probe
from tests.harness.moto import unique_name
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

FIRST, SECOND = 1_500, 500


def test_a_broker_restart_mid_stream_loses_no_event(
    tmp_path: Path, mosquitto_factory: Any, moto_server: Any, s3_client: Any, ddb_client: Any,
) -> None:
    broker = mosquitto_factory(persistence=True)
    bucket, table = unique_name("broker"), unique_name("broker")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = count_component(tmp_path / "c", bucket, table)
    (tmp_path / "agent").mkdir()
    agent = agent_args(AgentRunner(tmp_path / "agent", broker, [comp], moto_url=moto_server.url))
    agent.start()
    try:
        probe = Probe(broker)
        status = StatusLog(probe)
        # Published faster than the agent runs them, so the restart finds some queued in
        # the broker, some in flight to the agent and some already done.
        first = Publisher(broker, "in/count/x", FIRST, rate=5_000).start()
        assert first.done.wait(60)
        first.close()
        status.wait(lambda d: d["components"]["count"]["invocations"] > 100, 30)
        probe.close()

        broker.restart()

        probe = Probe(broker)
        status = StatusLog(probe)
        second = Publisher(broker, "in/count/x", SECOND, rate=5_000, first=FIRST).start()
        assert second.done.wait(60)
        second.close()
        settle(status, ddb_client, table, s3_client, bucket, FIRST + SECOND)
        probe.close()
        assert first.sent == FIRST and second.sent == SECOND
    finally:
        if agent.alive():
            agent.kill()

    expected = set(range(FIRST + SECOND))
    ddb = dynamodb_ns(ddb_client, table)
    s3 = s3_ns(s3_client, bucket)
    assert set(ddb) == expected, f"missing: {sorted(expected - set(ddb))[:20]}"
    assert sum(ddb.values()) == FIRST + SECOND
    assert set(s3) == expected and sum(s3.values()) == FIRST + SECOND

