"""Sinks against a moto server over real HTTP: written, read back, idempotent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.aws.session import make_client
from edge.errors import NotFound
from edge.sync.records import ResultRecord, request_id_for, result_id_for
from edge.sync.sinks import DynamoDBSink, S3Sink
from tests.harness.moto import unique_name

pytestmark = pytest.mark.integration

COMPONENT = "com.example.Thumbnailer"
RECEIVED = 1_700_000_000.123  # 2023-11-14T22:13:20.123Z


def make_record(seq: int = 1, **overrides) -> ResultRecord:
    fields = {
        "result_id": result_id_for("pi01", COMPONENT, seq),
        "seq": seq,
        "device": "pi01",
        "thing": "pi01",
        "component": COMPONENT,
        "component_version": "1.0.0",
        "topic": "cameras/1/frames",
        "request_id": request_id_for("pi01", COMPONENT, seq),
        "received_at": RECEIVED + seq,
        "finished_at": RECEIVED + seq + 0.25,
        "kind": "result",
        "content_type": "application/json",
        "body": b'{"width": 64, "ratio": 0.5}',
    }
    fields.update(overrides)
    return ResultRecord(**fields)


@pytest.fixture
def raw_s3(moto_server, boto_session):
    return make_client(boto_session, "s3", endpoint_url=moto_server.url)


@pytest.fixture
def raw_ddb(moto_server, boto_session):
    return make_client(boto_session, "dynamodb", endpoint_url=moto_server.url)


def test_s3_sink_writes_one_object_per_record(s3_client, s3_bucket, raw_s3) -> None:
    sink = S3Sink(
        s3_client,
        bucket=s3_bucket,
        prefix_template="{thing}/{date}/{hour}/",
        thing="pi01",
        component=COMPONENT,
    )
    record = make_record()
    sink.write([record])
    key = f"pi01/2023-11-14/22/{record.result_id}.json"
    got = raw_s3.get_object(Bucket=s3_bucket, Key=key)
    assert got["Body"].read() == record.body
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {
        "device": "pi01",
        "component": COMPONENT,
        "topic": "cameras/1/frames",
        "request-id": record.request_id,
        "kind": "result",
        "seq": "1",
    }


def test_s3_sink_same_record_twice_leaves_one_object(s3_client, s3_bucket) -> None:
    sink = S3Sink(
        s3_client,
        bucket=s3_bucket,
        prefix_template="{component}/",
        thing="pi01",
        component=COMPONENT,
    )
    records = [make_record(1), make_record(2)]
    sink.write(records)
    sink.write(records[:1])
    sink.write(records)
    keys = s3_client.list_keys(s3_bucket, f"{COMPONENT}/")
    assert sorted(keys) == sorted(f"{COMPONENT}/{r.result_id}.json" for r in records)


def test_s3_sink_binary_record(s3_client, s3_bucket) -> None:
    sink = S3Sink(
        s3_client, bucket=s3_bucket, prefix_template="bin/", thing="pi01", component=COMPONENT
    )
    payload = bytes(range(256)) * 4
    record = make_record(content_type="application/octet-stream", body=payload)
    sink.write([record])
    key = f"bin/{record.result_id}.bin"
    assert s3_client.exists(s3_bucket, key)
    assert s3_client.get_object(s3_bucket, key) == payload


def test_s3_sink_missing_bucket_is_not_found(s3_client) -> None:
    sink = S3Sink(
        s3_client,
        bucket=unique_name("absent"),
        prefix_template="",
        thing="pi01",
        component=COMPONENT,
    )
    with pytest.raises(NotFound, match=r"NoSuchBucket on s3://absent-"):
        sink.write([make_record()])


def test_s3_client_against_server(s3_client, s3_bucket) -> None:
    s3_client.ensure_bucket(s3_bucket, "us-east-1")  # idempotent
    assert s3_client.exists(s3_bucket, "nope") is False
    assert s3_client.bucket_region(s3_bucket) == "us-east-1"
    for i in range(3):
        s3_client.put_object(s3_bucket, f"k/{i}", b"x", content_type="text/plain")
    assert s3_client.list_keys(s3_bucket, "k/") == ["k/0", "k/1", "k/2"]


def test_ensure_bucket_in_another_region(s3_client) -> None:
    name = unique_name("eu")
    s3_client.ensure_bucket(name, "eu-west-1")
    s3_client.ensure_bucket(name, "eu-west-1")
    assert s3_client.bucket_region(name) == "eu-west-1"


def test_dynamodb_sink_writes_items(ddb_client, ddb_table, raw_ddb) -> None:
    sink = DynamoDBSink(ddb_client, table=ddb_table)
    record = make_record(5)
    sink.write([record])
    raw = raw_ddb.get_item(
        TableName=ddb_table,
        Key={
            "pk": {"S": f"pi01#{COMPONENT}"},
            "sk": {"S": "2023-11-14T22:13:25.123Z#000000000005"},
        },
    )["Item"]
    assert raw["result_id"] == {"S": record.result_id}
    assert raw["result"] == {"M": {"width": {"N": "64"}, "ratio": {"N": "0.5"}}}
    item = ddb_client.get_item(
        ddb_table, {"pk": f"pi01#{COMPONENT}", "sk": "2023-11-14T22:13:25.123Z#000000000005"}
    )
    assert item["result"] == {"width": Decimal(64), "ratio": Decimal("0.5")}
    assert item["received_at"] == "2023-11-14T22:13:25.123Z"
    assert item["finished_at"] == "2023-11-14T22:13:25.373Z"


def test_dynamodb_sink_same_record_twice_leaves_one_item(ddb_client, ddb_table) -> None:
    sink = DynamoDBSink(ddb_client, table=ddb_table)
    records = [make_record(i) for i in range(1, 31)]  # more than one batch of 25
    sink.write(records)
    sink.write(records[:3] + records[:3])  # duplicates within one batch, too
    items = ddb_client.scan_all(ddb_table)
    assert len(items) == 30
    assert sorted(i["seq"] for i in items) == list(range(1, 31))


def test_dynamodb_sink_binary_record(ddb_client, ddb_table) -> None:
    sink = DynamoDBSink(ddb_client, table=ddb_table)
    record = make_record(9, content_type="application/octet-stream", body=b"\x00\xff")
    big = make_record(10, content_type="application/octet-stream", body=b"z" * 400_000)
    sink.write([record, big])
    by_seq = {int(i["seq"]): i for i in ddb_client.scan_all(ddb_table)}
    assert by_seq[9]["result"] == b"\x00\xff"
    assert by_seq[10]["result_omitted"] is True
    assert "result" not in by_seq[10]


def test_dynamodb_put_item_condition_new(ddb_client, ddb_table) -> None:
    item = {"pk": "idem", "sk": "1", "n": 1.5}
    assert ddb_client.put_item(ddb_table, item, condition_new=True) is True
    assert ddb_client.put_item(ddb_table, item, condition_new=True) is False
    assert ddb_client.get_item(ddb_table, {"pk": "idem", "sk": "1"})["n"] == Decimal("1.5")


def test_ensure_table_is_idempotent_and_missing_table_is_not_found(ddb_client) -> None:
    name = unique_name("tbl")
    ddb_client.ensure_table(name)
    ddb_client.ensure_table(name)
    with pytest.raises(NotFound, match="ResourceNotFoundException on dynamodb:table/"):
        ddb_client.batch_put(unique_name("absent"), [{"pk": "a", "sk": "b"}])
