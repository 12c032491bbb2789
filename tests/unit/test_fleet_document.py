"""Status documents: parsing (trust nothing on a status topic) and classification."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from edge.errors import UsageError, ValidationError
from edge.fleet.document import (
    check_name,
    classify,
    clock_tolerance,
    parse_status,
    stale_after,
    thing_of,
)

NOW = 1_800_000_000.0


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1, "state": "online", "device": "pi01", "thing": "pi01",
        "groups": ["field"], "timestamp": NOW - 5, "heartbeat_s": 30,
        "components": {"com.example.Hello": {"version": "1.0.0", "state": "RUNNING",
                                             "recent": {"window_s": 300, "errors": 0}}},
        "outbox": {"s3": {"records": 4, "last_error": None},
                   "dynamodb": {"records": 3, "last_error": None}},
    }  # fmt: skip
    base.update(changes)
    return base


def row(data: dict[str, Any], thing: str = "pi01"):
    return classify(parse_status(thing, json.dumps(data).encode()), now=NOW)


def test_a_healthy_document_is_online_with_components_and_backlog() -> None:
    r = row(doc())
    assert r.state == "online"
    assert r.errors == ()
    assert r.backlog == 7
    assert r.components["com.example.Hello"].version == "1.0.0"
    assert r.components["com.example.Hello"].state == "running"
    assert r.last_seen is not None and r.last_seen.timestamp() == NOW - 5


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"hello", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"temperature": 21.5}', "no 'schema'"),
        (json.dumps(doc(schema=2)).encode(), "schema 2 is newer than this edgectl reads"),
        (json.dumps(doc(state="sleeping")).encode(), "state: 'sleeping'"),
        (json.dumps(doc(thing="pi02")).encode(), "does not match the topic's 'pi01'"),
        (json.dumps(doc(timestamp="yesterday")).encode(), "timestamp: 'yesterday'"),
        (json.dumps(doc(components=[1])).encode(), "components: [1] is not an object"),
        (json.dumps(doc(groups="field")).encode(), "groups: 'field'"),
    ],
)
def test_malformed_or_foreign_documents_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)) as info:
        parse_status("pi01", payload)
    assert "\n" not in str(info.value)


def test_the_last_will_is_offline() -> None:
    will = {"schema": 1, "state": "offline", "device": "pi01", "thing": "pi01", "will": True}
    r = row(will)
    assert r.state == "offline"
    assert r.last_seen is None
    assert r.errors == ("connection lost (last will)",)


def test_an_agent_that_stopped_on_its_own_says_why() -> None:
    reason = "store sync failed: [Errno 5] Input/output error; holding results"
    r = row(doc(state="offline", fatal=reason))
    assert r.state == "offline"
    assert r.errors == (f"stopped: {reason}",)


def test_an_online_document_older_than_three_heartbeats_is_offline() -> None:
    r = row(doc(timestamp=NOW - stale_after(30) - 1))
    assert r.state == "offline"
    assert "silent for" in r.errors[0]
    assert row(doc(timestamp=NOW - stale_after(30) + 1)).state == "online"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"components": {"c": {"version": "1", "state": "ERRORED"}}}, "c: errored"),
        (
            {"components": {"c": {"version": "1", "state": "RUNNING",
                                   "recent": {"window_s": 300, "errors": 2, "timeouts": 1}}}},
            "c: 2 errors, 1 timeouts in 5m",
        ),
        (
            {"deployment": {"deployment_id": "d-1", "state": "ROLLED_BACK",
                            "reason": "health gate"}},
            "deployment d-1: rolled_back: health gate",
        ),
        ({"outbox": {"s3": {"records": 1, "last_error": "Denied"}}}, "outbox s3: Denied"),
        ({"system": {"disk_free_bytes": 10_000_000}}, "data dir: 10 MB free"),
    ],
)  # fmt: skip
def test_what_makes_a_device_degraded(changes: dict[str, Any], error: str) -> None:
    r = row(doc(**changes))
    assert r.state == "degraded"
    assert error in r.errors


def test_the_deployment_report_becomes_the_deployment_column() -> None:
    report = {"deployment_id": "d-7", "state": "IN_PROGRESS", "phase": "download",
              "reason": "", "rollout": "r-1"}  # fmt: skip
    r = row(doc(deployment=report))
    assert r.state == "online"
    assert r.deployment is not None
    assert (r.deployment.id, r.deployment.name, r.deployment.state) == ("d-7", "r-1", "in_progress")


def test_topics() -> None:
    assert thing_of("edge/pi01/status") == "pi01"
    assert thing_of("edge/pi01/deployment") is None
    assert thing_of("edge/a/b/status") is None
    assert thing_of("edge//status") is None


@pytest.mark.parametrize("name", ["pi/01", "pi+", "#", "", "a b"])
def test_names_with_wildcards_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="no MQTT wildcards"):
        check_name(name)
    assert check_name("pi-01.a_b") == "pi-01.a_b"


# -- age by the broker's clock (the document's Message Expiry Interval) -----------------

WEEK = 7 * 24 * 3600


def aged(data: dict[str, Any], age: float | None, thing: str = "pi01"):
    parsed = parse_status(thing, json.dumps(data).encode())
    return classify(parsed, now=NOW, age=age)


def test_a_device_whose_clock_is_behind_is_not_taken_for_silent() -> None:
    # A Pi back from a power cut without a time server: its timestamps are 3 h old,
    # but the broker delivered the document 5 s after it came.
    late = doc(timestamp=NOW - 3 * 3600, expiry_s=WEEK)
    assert row(late).state == "offline"  # by the device's clock alone
    r = aged(late, age=5)
    assert r.state == "degraded"
    assert r.errors == ("its clock is 3h behind this machine's",)
    assert r.last_seen is not None and r.last_seen.timestamp() == NOW - 5


def test_a_silent_device_whose_clock_is_ahead_is_still_silent() -> None:
    ahead = doc(timestamp=NOW + 600, expiry_s=WEEK)
    r = aged(ahead, age=stale_after(30) + 1)
    assert r.state == "offline"
    assert r.errors[0].startswith("silent for")


def test_a_clock_within_tolerance_is_no_problem() -> None:
    assert aged(doc(timestamp=NOW - 40, expiry_s=WEEK), age=3).state == "online"
    assert aged(doc(timestamp=NOW + 40, expiry_s=WEEK), age=0).state == "online"
    assert clock_tolerance(30) == 60 and clock_tolerance(300) == 600


def test_the_age_is_the_expiry_it_was_sent_with_minus_what_the_broker_left() -> None:
    parsed = parse_status("pi01", json.dumps(doc(expiry_s=WEEK)).encode())
    assert parsed.expiry == WEEK
    assert parsed.age(WEEK - 7) == 7
    assert parsed.age(WEEK - 7, since=2.5) == 9.5  # held 2.5 s since it was delivered
    assert parsed.age(None) is None  # sent without an expiry, or lost in a broker restart
    assert parsed.age(WEEK + 1) is None  # more left than it was sent with: not ours
    old = parse_status("pi01", json.dumps(doc()).encode())  # an older agent: no expiry_s
    assert old.expiry is None and old.age(100) is None


@pytest.mark.parametrize("value", [0, -5, 1.5, "60", True])
def test_a_bad_expiry_is_refused(value: Any) -> None:
    with pytest.raises(ValidationError, match="expiry_s"):
        parse_status("pi01", json.dumps(doc(expiry_s=value)).encode())
