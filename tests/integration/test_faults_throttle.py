"""Throttling: injected ``ProvisionedThroughputExceededException`` /
``ThrottlingException`` and partial ``UnprocessedItems`` are retried to completion,
by the sync loop (whole-request throttles) and by the DynamoDB client (unprocessed
items), with the exact BatchWriteItem request shapes checked by a botocore Stubber."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.stub import Stubber

from edge.agent.store import OutboxEntry, Store
from edge.agent.syncer import Syncer
from edge.aws.dynamodb import DynamoDBClient
from edge.sync.records import ResultRecord, result_id_for
from edge.sync.retry import Backoff
from edge.sync.sinks import DynamoDBSink

pytestmark = pytest.mark.integration

TABLE = "results"
RESULTS = 60


def result(n: int) -> ResultRecord:
    return ResultRecord(
        result_id=result_id_for("pi01", "count", n, "e1"), seq=n, device="pi01", thing="pi01",
        component="count", component_version="1.0.0", topic="in/count/x",
        request_id=f"req-{n}", received_at=1_700_000_000.0 + n, finished_at=1_700_000_000.5 + n,
        kind="result", content_type="application/json", body=b'{"n": %d}' % n,
    )


def test_throttles_and_unprocessed_items_are_retried_to_completion(
    store: Store, boto_session: Any
) -> None:
    raw = boto_session.client("dynamodb", region_name="us-east-1")
    client = DynamoDBClient(raw, sleep=lambda _s: None)
    sink = DynamoDBSink(client, table=TABLE)
    records = [result(n) for n in range(1, RESULTS + 1)]
    puts = [{"PutRequest": {"Item": client.serialize(sink.item_for(r))}} for r in records]
    first, second, third = puts[:25], puts[25:50], puts[50:]

    stub = Stubber(raw)

    def expect(requests: list[dict[str, Any]], unprocessed: list[dict[str, Any]]) -> None:
        stub.add_response(
            "batch_write_item",
            {"UnprocessedItems": {TABLE: unprocessed} if unprocessed else {}},
            {"RequestItems": {TABLE: requests}},
        )

    def throttle(code: str) -> None:
        stub.add_client_error(
            "batch_write_item", service_error_code=code, service_message="slow down",
            http_status_code=400, expected_params={"RequestItems": {TABLE: first}},
        )

    throttle("ProvisionedThroughputExceededException")  # whole request: the loop backs off
    throttle("ThrottlingException")
    expect(first, first[15:])  # partial: 10 unprocessed, retried by the client at once
    expect(first[15:], [])
    expect(second, second)  # nothing processed at all
    expect(second, [])
    expect(third, [])
    stub.activate()

    syncer = Syncer(store, {"dynamodb": {"count": sink}})
    syncer.health["dynamodb"].backoff = Backoff(base=0.01, cap=0.02)
    emptied = threading.Event()
    store.on_space(lambda: emptied.set() if not store.outbox_batch("dynamodb", 1) else None)
    done = threading.Event()
    for r in records:
        entry = OutboxEntry("dynamodb", "count", r.result_id, r.to_json())
        store.complete(r.seq, [entry], done.set if r is records[-1] else None)
    assert done.wait(5)
    syncer.start()
    try:
        assert emptied.wait(10), syncer.snapshot()
    finally:
        syncer.stop()
    stub.assert_no_pending_responses()
    snap = syncer.snapshot()["dynamodb"]
    assert snap["written"] == RESULTS and snap["records"] == 0 and snap["last_error"] is None
