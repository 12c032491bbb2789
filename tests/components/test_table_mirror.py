"""components/table-mirror: idempotent upserts and deletes against a real (moto) DynamoDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.testing import mqtt_event, run_handler
from tests.components.helpers import COMPONENTS, copy_component, wait_for
from tests.harness.agent import Probe
from tests.harness.moto import unique_name

HERE = COMPONENTS / "table-mirror"
TOPIC = "mirror/erp/changes"


@pytest.fixture
def mirror(moto_server: Any, aws_env: None, tmp_path: Path) -> dict[str, str]:
    """The environment that points the handler at a fresh table on the moto server."""
    return {
        "EDGE_STATE_DIR": str(tmp_path),
        "AWS_ENDPOINT_URL_DYNAMODB": moto_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MIRROR_TABLE": unique_name("mirror"),
    }


def apply(env: dict[str, str], change: dict[str, Any], mode: str = "process") -> Any:
    result = run_handler(HERE, mqtt_event(TOPIC, change), environment=env, mode=mode)
    assert result.ok, result.error
    return result.value


def rows(ddb_client: Any, env: dict[str, str]) -> dict[str, Any]:
    return {i["id"]: i for i in ddb_client.scan_all(env["MIRROR_TABLE"])}


def test_upsert_then_the_same_change_again_has_no_second_effect(
    mirror: dict[str, str], ddb_client: Any
) -> None:
    change = {"op": "upsert", "key": "k1", "version": 1, "item": {"name": "a", "rpm": 10}}
    assert apply(mirror, change)["applied"] is True
    assert apply(mirror, change)["applied"] is False
    assert rows(ddb_client, mirror) == {"k1": {"id": "k1", "version": 1, "name": "a", "rpm": 10}}


def test_an_older_change_never_overwrites_a_newer_one(
    mirror: dict[str, str], ddb_client: Any
) -> None:
    apply(mirror, {"op": "upsert", "key": "k1", "version": 2, "item": {"rpm": 20}})
    late = apply(mirror, {"op": "upsert", "key": "k1", "version": 1, "item": {"rpm": 10}})
    assert late["applied"] is False
    assert rows(ddb_client, mirror)["k1"]["rpm"] == 20


def test_an_upsert_redelivered_after_its_delete_does_not_bring_the_item_back(
    mirror: dict[str, str], ddb_client: Any
) -> None:
    upsert = {"op": "upsert", "key": "k1", "version": 1, "item": {"rpm": 1}}
    apply(mirror, upsert)
    apply(mirror, {"op": "delete", "key": "k1", "version": 2})
    assert apply(mirror, upsert)["applied"] is False
    assert rows(ddb_client, mirror) == {}
    newer = {"op": "upsert", "key": "k1", "version": 3, "item": {"rpm": 3}}
    assert apply(mirror, newer)["applied"] is True  # a newer change after a delete is fine


def test_delete_is_idempotent_and_respects_versions(
    mirror: dict[str, str], ddb_client: Any
) -> None:
    apply(mirror, {"op": "upsert", "key": "k1", "version": 3, "item": {"rpm": 1}})
    stale = apply(mirror, {"op": "delete", "key": "k1", "version": 2})
    assert stale["applied"] is False and "k1" in rows(ddb_client, mirror)
    apply(mirror, {"op": "delete", "key": "k1", "version": 4})
    apply(mirror, {"op": "delete", "key": "k1", "version": 4})  # delivered twice
    assert rows(ddb_client, mirror) == {}


def test_in_the_worker_runtime(mirror: dict[str, str], ddb_client: Any) -> None:
    value = apply(
        mirror, {"op": "upsert", "key": "w", "version": 1, "item": {"tags": ["x"], "on": True}},
        mode="worker",
    )
    assert value == {"op": "upsert", "key": "w", "version": 1, "applied": True, "source": "erp"}
    assert rows(ddb_client, mirror)["w"]["tags"] == ["x"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"op": "merge", "key": "k", "version": 1}, "op: 'merge' is not 'upsert' or 'delete'"),
        ({"op": "delete", "key": "", "version": 1}, "key: '' is not a non-empty string"),
        ({"op": "delete", "key": "k", "version": "2"}, "version: '2' is not a non-negative"),
        ({"op": "upsert", "key": "k", "version": 1}, "item: an upsert needs an 'item' object"),
    ],
)
def test_bad_changes_are_clear_errors(
    mirror: dict[str, str], change: dict[str, Any], message: str
) -> None:
    result = run_handler(HERE, mqtt_event(TOPIC, change), environment=mirror)
    assert result.error_type == "ValueError"
    assert message in result.error["errorMessage"]


def test_on_a_real_agent_the_sample_events_twice_give_the_same_table(
    tmp_path: Path, agent_factory: Any, probe: Probe, moto_server: Any, ddb_client: Any
) -> None:
    table = unique_name("mirror")
    comp = copy_component("table-mirror", tmp_path, {"MIRROR_TABLE: edge-demo-mirror":
                                                     f"MIRROR_TABLE: {table}"})
    agent_factory([comp], moto_url=moto_server.url).start()
    probe.follow("mirror/dev1/applied")
    events = sorted((HERE / "events").glob("*.json"))
    for _ in range(2):  # the second round is a redelivery of every change
        for path in events:
            probe.publish(TOPIC, path.read_bytes())
    outputs = probe.wait_count("mirror/dev1/applied", 2 * len(events))
    applied = [json.loads(m.payload)["applied"] for m in outputs]
    assert applied[: len(events)] == [True] * len(events)
    # Round two: pump-1's upsert is already there; pump-2's upsert comes after its
    # delete (the tombstone stops it); the delete again finds nothing to delete.
    assert applied[len(events):] == [False, False, True]
    items = wait_for(lambda: ddb_client.scan_all(table), lambda v: len(v) == 1)
    assert [i["id"] for i in items] == ["pump-1"]
    assert items[0]["rpm"] == 1200 and items[0]["tags"] == ["north"]
