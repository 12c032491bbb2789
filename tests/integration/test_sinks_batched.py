"""Batched S3 objects, multipart uploads, first-write-wins DynamoDB and import files,
against the moto server."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from edge.sync.records import ResultRecord, result_id_for
from edge.sync.sinks import DynamoDBImportSink, DynamoDBSink, S3Sink

pytestmark = pytest.mark.integration


def result(n: int, body: bytes | None = None, binary: bool = False) -> ResultRecord:
    return ResultRecord(
        result_id=result_id_for("pi01", "count", n, "e1"), seq=n, device="pi01", thing="pi01",
        component="count", component_version="1.0.0", topic="in/x", request_id=f"r{n}",
        received_at=1_700_000_000.0 + n, finished_at=1_700_000_001.0 + n, kind="result",
        content_type="application/octet-stream" if binary else "application/json",
        body=body if body is not None else b'{"n": %d}' % n,
    )


def test_json_results_become_one_ndjson_object_named_after_its_range(
    s3_client: Any, s3_bucket: str
) -> None:
    sink = S3Sink(s3_client, bucket=s3_bucket, prefix_template="{component}/", thing="pi01",
                  component="count", layout="ndjson")
    batch = [result(3), result(4), result(5, b"\x89PNG", binary=True), result(6)]
    sink.write(batch)
    sink.write(batch)  # a retry of the same sealed batch rewrites the same objects
    keys = sorted(s3_client.list_keys(s3_bucket))
    ndjson = f"count/000000000003-000000000006-{batch[0].result_id[:8]}.ndjson"
    assert keys == sorted([ndjson, f"count/{batch[2].result_id}.bin"])
    lines = [json.loads(x) for x in s3_client.get_object(s3_bucket, ndjson).splitlines()]
    assert [x["seq"] for x in lines] == [3, 4, 6]
    assert lines[0]["result"] == {"n": 3} and lines[0]["result_id"] == batch[0].result_id
    assert lines[0]["received_at"] == "2023-11-14T22:13:23.000Z"


def test_large_objects_go_up_in_parts(s3_client: Any, s3_bucket: str) -> None:
    big = bytes(range(256)) * (12 * 1024 * 1024 // 256)
    sink = S3Sink(s3_client, bucket=s3_bucket, prefix_template="f/", thing="pi01",
                  component="count", layout="ndjson", multipart_threshold=6 * 1024 * 1024,
                  part_size=5 * 1024 * 1024)
    record = result(1, big, binary=True)
    sink.write([record])
    assert s3_client.get_object(s3_bucket, f"f/{record.result_id}.bin") == big


def test_conditional_writes_keep_the_first_result(ddb_client: Any, ddb_table: str) -> None:
    sink = DynamoDBSink(ddb_client, table=ddb_table, conditional=True)
    first = result(1, b'{"v": "first"}')
    sink.write([first, result(2)])
    sink.write([replace(first, body=b'{"v": "second"}')])  # a re-run that computed otherwise
    items = {i["seq"]: i for i in ddb_client.scan_all(ddb_table)}
    assert len(items) == 2 and items[1]["result"] == {"v": "first"}


def test_import_files_are_dynamodb_json_of_the_same_items(
    s3_client: Any, s3_bucket: str
) -> None:
    sink = DynamoDBImportSink(s3_client, bucket=s3_bucket, table="t1", thing="pi01",
                              component="count")
    records = [result(1), result(2, b"\x00\x01", binary=True)]
    sink.write(records)
    (key,) = s3_client.list_keys(s3_bucket)
    assert key == f"import/dynamodb/t1/pi01/count/000000000001-000000000002-" \
                  f"{records[0].result_id[:8]}.json"
    items = [json.loads(x)["Item"] for x in s3_client.get_object(s3_bucket, key).splitlines()]
    expected = DynamoDBSink(None, table="t1").item_for(records[0])  # type: ignore[arg-type]
    assert items[0]["sk"] == {"S": expected["sk"]}
    assert items[0]["result"] == {"M": {"n": {"N": "1"}}}
    assert items[1]["result"] == {"B": "AAE="}
