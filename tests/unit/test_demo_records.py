"""The demo counts results in S3, not objects: results synced together share one
newline-delimited object."""

from __future__ import annotations

from edge.local.demo import _records_in


def test_a_batch_object_holds_one_result_per_line() -> None:
    body = b'{"result_id": "a"}\n{"result_id": "b"}\n'
    assert _records_in("p/x/000001-000002.ndjson", body) == [
        {"result_id": "a"}, {"result_id": "b"},
    ]


def test_a_single_json_object_is_one_result() -> None:
    assert _records_in("p/x/abc.json", b'{"ok": true}') == [{"ok": True}]


def test_a_binary_object_is_one_result_shown_by_size() -> None:
    assert _records_in("p/x/abc.bin", b"\x89PNG\x00\x01") == ["<6 bytes>"]
