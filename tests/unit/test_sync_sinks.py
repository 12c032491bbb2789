"""Sinks without a server: key and item layout, prefix validation, the local directory."""

from __future__ import annotations

import json
import os
import random
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from edge.aws.dynamodb import DynamoDBClient
from edge.aws.s3 import S3Client
from edge.aws.session import make_client
from edge.errors import ValidationError
from edge.sync.records import ResultRecord, request_id_for, result_id_for
from edge.sync.sinks import (
    MAX_INLINE_RESULT,
    DynamoDBSink,
    LocalDirSink,
    S3Sink,
    iso8601,
    validate_prefix,
)

COMPONENT = "com.example.Thumbnailer"
RECEIVED = 1_700_000_000.123  # 2023-11-14T22:13:20.123Z


def make_record(seq: int = 7, **overrides) -> ResultRecord:
    fields = {
        "result_id": result_id_for("pi01", COMPONENT, seq),
        "seq": seq,
        "device": "pi01",
        "thing": "pi01",
        "component": COMPONENT,
        "component_version": "1.0.0",
        "topic": "cameras/1/frames",
        "request_id": request_id_for("pi01", COMPONENT, seq),
        "received_at": RECEIVED,
        "finished_at": RECEIVED + 0.5,
        "kind": "result",
        "content_type": "application/json",
        "body": b'{"width": 64, "ratio": 0.5}',
    }
    fields.update(overrides)
    return ResultRecord(**fields)


class RecordingDynamoDB:
    """Stands in for DynamoDBClient where only the items handed over matter."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict], tuple[str, ...]]] = []

    def batch_put(self, table, items, *, key=()):
        self.calls.append((table, list(items), tuple(key)))


def test_iso8601_has_milliseconds_and_z() -> None:
    assert iso8601(RECEIVED) == "2023-11-14T22:13:20.123Z"
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("template", ["{thing}/{date}/", "{component}/{hour}/", "flat/", ""])
def test_validate_prefix_accepts_known_fields(template: str) -> None:
    validate_prefix(template)


@pytest.mark.parametrize("template", ["{device}/", "{}/", "{0}", "{thing"])
def test_validate_prefix_rejects_the_rest(template: str) -> None:
    with pytest.raises(ValidationError, match=r"results\.s3\.prefix"):
        validate_prefix(template)


def s3_sink(s3, template: str = "{thing}/{component}/{date}/{hour}/") -> S3Sink:
    return S3Sink(s3, bucket="thumbs", prefix_template=template, thing="pi01", component=COMPONENT)


def test_key_rendering_uses_received_at_in_utc() -> None:
    sink = s3_sink(None)
    record = make_record()
    assert sink.key_for(record) == (f"pi01/{COMPONENT}/2023-11-14/22/{record.result_id}.json")
    binary = make_record(content_type="application/octet-stream", body=b"\x89PNG")
    assert sink.key_for(binary).endswith(f"{binary.result_id}.bin")
    assert s3_sink(None, "/{thing}/").key_for(record) == f"pi01/{record.result_id}.json"


def test_s3_sink_put_shape(boto_session) -> None:
    client = make_client(boto_session, "s3")
    record = make_record(topic="caméras/1")
    with Stubber(client) as stub:
        stub.add_response(
            "put_object",
            {},
            {
                "Bucket": "thumbs",
                "Key": f"pi01/2023-11-14/{record.result_id}.json",
                "Body": record.body,
                "ContentType": "application/json",
                "Metadata": {
                    "device": "pi01",
                    "component": COMPONENT,
                    "topic": "cam%C3%A9ras/1",
                    "request-id": record.request_id,
                    "kind": "result",
                    "seq": "7",
                },
            },
        )
        s3_sink(S3Client(client), "{thing}/{date}/").write([record])
        stub.assert_no_pending_responses()


def test_dynamodb_item_layout() -> None:
    sink = DynamoDBSink(RecordingDynamoDB(), table="thumbs")
    record = make_record()
    assert sink.item_for(record) == {
        "pk": f"pi01#{COMPONENT}",
        "sk": "2023-11-14T22:13:20.123Z#000000000007",
        "result_id": record.result_id,
        "seq": 7,
        "device": "pi01",
        "thing": "pi01",
        "component": COMPONENT,
        "component_version": "1.0.0",
        "topic": "cameras/1/frames",
        "request_id": record.request_id,
        "received_at": "2023-11-14T22:13:20.123Z",
        "finished_at": "2023-11-14T22:13:20.623Z",
        "kind": "result",
        "content_type": "application/json",
        "result": {"width": 64, "ratio": Decimal("0.5")},
    }


def test_dynamodb_item_custom_keys_binary_and_oversize() -> None:
    sink = DynamoDBSink(RecordingDynamoDB(), table="t", partition_key="id", sort_key="at")
    small = sink.item_for(make_record(content_type="application/octet-stream", body=b"\x00"))
    assert small["id"] == f"pi01#{COMPONENT}"
    assert small["at"].endswith("#000000000007")
    assert small["result"] == b"\x00"
    big = sink.item_for(
        make_record(content_type="application/octet-stream", body=b"x" * (MAX_INLINE_RESULT + 1))
    )
    assert big["result_omitted"] is True
    assert "result" not in big


def test_dynamodb_item_error_record_and_nan() -> None:
    sink = DynamoDBSink(RecordingDynamoDB(), table="t")
    error = {"errorType": "ValueError", "errorMessage": "bad", "stackTrace": ["a"]}
    item = sink.item_for(make_record(kind="error", body=json.dumps(error).encode()))
    assert item["kind"] == "error"
    assert item["result"] == error
    assert sink.item_for(make_record(body=b'{"x": NaN}'))["result"] == {"x": "NaN"}


def test_dynamodb_items_serialize(boto_session) -> None:
    ddb = DynamoDBClient(make_client(boto_session, "dynamodb"), rng=random.Random(0))
    sink = DynamoDBSink(ddb, table="t")
    wire = ddb.serialize(sink.item_for(make_record()))
    assert wire["result"] == {"M": {"width": {"N": "64"}, "ratio": {"N": "0.5"}}}


def test_dynamodb_sink_batches_with_keys() -> None:
    fake = RecordingDynamoDB()
    sink = DynamoDBSink(fake, table="thumbs")
    sink.write([make_record(1), make_record(2)])
    sink.write([])
    [(table, items, key)] = fake.calls
    assert table == "thumbs"
    assert [i["seq"] for i in items] == [1, 2]
    assert key == ("pk", "sk")


def test_local_dir_sink_is_idempotent(tmp_path) -> None:
    sink = LocalDirSink(tmp_path)
    record = make_record()
    binary = make_record(8, content_type="application/octet-stream", body=b"\x00\x01")
    sink.write([record, binary])
    sink.write([record])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert files == [
        COMPONENT,
        f"{COMPONENT}/000000000007-{record.result_id}.json",
        f"{COMPONENT}/000000000008-{binary.result_id}.bin",
    ]
    assert (tmp_path / files[1]).read_bytes() == record.body
    assert (tmp_path / files[2]).read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("component", ["..", "a/b", ""])
def test_local_dir_sink_refuses_path_tricks(tmp_path, component: str) -> None:
    with pytest.raises(ValidationError):
        LocalDirSink(tmp_path).write([make_record(component=component)])




def test_local_dir_sink_sweeps_temporary_files_a_crash_left_behind(tmp_path) -> None:
    """A SIGKILL or a power cut mid-write leaves ``.<name>.<uuid>.tmp`` behind: the next
    process to write into that directory deletes the old ones, not one being written."""
    folder = tmp_path / COMPONENT
    folder.mkdir()
    stale = folder / ".000000000001-x.json.dead.tmp"
    fresh = folder / ".000000000002-y.json.live.tmp"
    stale.write_bytes(b'{"half')
    fresh.write_bytes(b'{"being written')
    now = 1_800_000_000.0
    os.utime(stale, (now - 7200, now - 7200))
    os.utime(fresh, (now - 5, now - 5))
    sink = LocalDirSink(tmp_path, clock=lambda: now)
    record = make_record()
    sink.write([record])
    assert not stale.exists() and fresh.exists()
    assert (folder / f"000000000007-{record.result_id}.json").read_bytes() == record.body
