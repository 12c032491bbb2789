"""Result records: deterministic ids and a lossless JSON form."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import ValidationError
from edge.sync.records import IdMinter, ResultRecord, request_id_for, result_id_for


def make_record(**overrides) -> ResultRecord:
    fields = {
        "result_id": result_id_for("pi01", "com.example.Thumbnailer", 7),
        "seq": 7,
        "device": "pi01",
        "thing": "pi01",
        "component": "com.example.Thumbnailer",
        "component_version": "1.0.0",
        "topic": "cameras/1/frames",
        "request_id": request_id_for("pi01", "com.example.Thumbnailer", 7),
        "received_at": 1_700_000_000.123,
        "finished_at": 1_700_000_000.456,
        "kind": "result",
        "content_type": "application/json",
        "body": b'{"ok": true}',
    }
    fields.update(overrides)
    return ResultRecord(**fields)


def test_result_id_is_stable_and_32_hex() -> None:
    rid = result_id_for("pi01", "c", 1)
    assert rid == result_id_for("pi01", "c", 1)
    assert len(rid) == 32
    int(rid, 16)


def test_result_id_depends_on_every_input() -> None:
    base = result_id_for("pi01", "c", 1)
    assert (
        len(
            {
                base,
                result_id_for("pi02", "c", 1),
                result_id_for("pi01", "d", 1),
                result_id_for("pi01", "c", 2),
                result_id_for("pi01", "c", 1, "v2"),
            }
        )
        == 5
    )


def test_result_id_is_not_fooled_by_separators() -> None:
    assert result_id_for("a|b", "c", 1) != result_id_for("a", "b|c", 1)


def test_request_id_is_a_stable_uuid4() -> None:
    rid = request_id_for("pi01", "c", 1)
    assert rid == request_id_for("pi01", "c", 1)
    assert rid != request_id_for("pi01", "c", 2)
    parsed = uuid.UUID(rid)
    assert parsed.version == 4
    assert str(parsed) == rid


@given(
    body=st.binary(max_size=256),
    seq=st.integers(min_value=0, max_value=2**53),
    topic=st.text(max_size=40),
    kind=st.sampled_from(["result", "error"]),
)
def test_json_round_trip(body: bytes, seq: int, topic: str, kind: str) -> None:
    record = make_record(
        body=body, seq=seq, topic=topic, kind=kind, content_type="application/octet-stream"
    )
    assert ResultRecord.from_json(record.to_json()) == record


names = st.text(max_size=40)  # any Unicode, quotes and separators included


def _reference(kind: str, thing: str, component: str, seq: int, epoch: str) -> bytes:
    """The id formula as documented (and as every earlier agent computed it): SHA-256
    of the compact UTF-8 JSON array, encoded whole."""
    array = json.dumps([kind, thing, component, seq, epoch], separators=(",", ":"),
                       ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(array.encode("utf-8")).digest()


@given(names, names, st.integers(min_value=0, max_value=2**63), names)
def test_ids_follow_the_documented_formula(
    thing: str, component: str, seq: int, epoch: str
) -> None:
    # Ids must not change across agent versions: a record re-run after an upgrade has
    # to overwrite the same S3 object and DynamoDB item.
    ids = IdMinter(thing, component, epoch)
    result = _reference("edge.result.v1", thing, component, seq, epoch)
    request = _reference("edge.request.v1", thing, component, seq, epoch)[:16]
    assert ids.result_id(seq) == result_id_for(thing, component, seq, epoch) == result.hex()[:32]
    assert ids.request_id(seq) == str(uuid.UUID(bytes=request, version=4))


def test_to_json_holds_every_field_in_sorted_order() -> None:
    record = make_record(body=b"\x00\xff")
    data = json.loads(record.to_json())
    expected = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    expected["body"] = base64.b64encode(b"\x00\xff").decode()
    assert data == expected
    assert list(data) == sorted(data)


def test_to_json_is_one_line() -> None:
    assert "\n" not in make_record(body=b"a\nb").to_json()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"body": "!!"}',
        make_record().to_json().replace('"kind":"result"', '"kind":"other"'),
        make_record().to_json().replace('"seq":7', '"seq":"7"'),
        make_record().to_json().replace('"seq":7,', ""),
    ],
)
def test_from_json_rejects_damage(text: str) -> None:
    with pytest.raises(ValidationError):
        ResultRecord.from_json(text)


def test_is_binary() -> None:
    assert make_record().is_binary is False
    assert make_record(content_type="application/octet-stream").is_binary is True
