"""Crash: 5,000 events, the agent SIGKILLed at five random moments and restarted each
time; afterwards S3 and DynamoDB hold every result exactly once.

The moments are drawn from a seeded RNG (printed, and settable with
``EDGE_FAULT_SEED``) so a failing run can be replayed with the same timing.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe
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

EVENTS = 5_000
KILLS = 5


def test_sigkill_five_times_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, agent_factory: Any, mosquitto: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    seed = int(os.environ.get("EDGE_FAULT_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed: {seed} (EDGE_FAULT_SEED={seed} replays it)")
    rng = random.Random(seed)
    bucket, table = unique_name("crash"), unique_name("crash")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = count_component(tmp_path / "c", bucket, table)
    agent = agent_args(agent_factory([comp], moto_url=moto_server.url)).start()
    status = StatusLog(probe)

    publisher = Publisher(mosquitto, "in/count/x", EVENTS, rate=1_000).start()
    kills = []
    for _ in range(KILLS):
        # A random moment: anywhere from mid-intake to mid-sync of the running agent.
        time.sleep(rng.uniform(0.2, 1.5))  # fault timing, not synchronisation
        kills.append(round(time.monotonic(), 3))
        agent.kill()
        agent.start()
    assert publisher.done.wait(120)
    publisher.close()
    assert publisher.sent == EVENTS

    doc = settle(status, ddb_client, table, s3_client, bucket, EVENTS)
    expected = set(range(EVENTS))
    ddb = dynamodb_ns(ddb_client, table)
    s3 = s3_ns(s3_client, bucket)
    assert set(ddb) == expected, f"missing in DynamoDB: {sorted(expected - set(ddb))[:20]}"
    assert set(s3) == expected, f"missing in S3: {sorted(expected - set(s3))[:20]}"
    assert sum(ddb.values()) == EVENTS, [n for n, c in ddb.items() if c > 1][:20]
    assert sum(s3.values()) == EVENTS, [n for n, c in s3.items() if c > 1][:20]
    redeliveries = agent.log_text().count("redelivered message(s)")
    print(f"kills at {kills}; commits that recognised redeliveries: {redeliveries}; "
          f"last status intake: {doc['intake']}")
    assert agent.alive()
