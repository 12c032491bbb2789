"""The first end-to-end path, with every part real: a Mosquitto broker, the agent
as a subprocess, worker processes, and S3/DynamoDB on a moto server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, user_props, write_component
from tests.harness.moto import unique_name

pytestmark = pytest.mark.integration

ECHO = """
    def handler(event, context):
        return {"echo": event, "subject": context.client_context.custom["subject"],
                "request_id": context.aws_request_id, "fn": context.function_name}
"""


def test_results_reach_output_topic_dynamodb_and_s3(
    tmp_path: Path, agent_factory: Any, probe: Probe, moto_server: Any,
    s3_client: Any, ddb_client: Any,
) -> None:
    bucket, table = unique_name("res"), unique_name("res")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = write_component(
        tmp_path / "components", "echo", ECHO,
        manifest=f"""
            results:
              s3: {{bucket: {bucket}, prefix: "{{component}}/{{thing}}/"}}
              dynamodb: {{table: {table}}}
        """,
    )
    agent = agent_factory([comp], moto_url=moto_server.url).start()
    probe.follow("out/#")
    for i in range(5):
        probe.publish(f"in/echo/s{i}", json.dumps({"n": i}))
    outputs = probe.wait_count("out/echo", 5)

    # Outputs carry the bare result; metadata rides in MQTT 5 user properties.
    bodies = sorted((json.loads(m.payload) for m in outputs), key=lambda b: b["echo"]["n"])
    assert [b["echo"] for b in bodies] == [{"n": i} for i in range(5)]
    assert [b["subject"] for b in bodies] == [f"in/echo/s{i}" for i in range(5)]
    assert all(b["fn"] == "echo" for b in bodies)
    props = [user_props(m) for m in outputs]
    assert {p["request-id"] for p in props} == {b["request_id"] for b in bodies}
    assert all(p["component"] == "echo" for p in props)

    items = _wait_for(lambda: ddb_client.scan_all(table), 5)
    assert len(items) == 5
    assert {i["pk"] for i in items} == {"dev1#echo"}
    assert {i["request_id"] for i in items} == {b["request_id"] for b in bodies}
    assert sorted(int(i["result"]["echo"]["n"]) for i in items) == list(range(5))
    assert all(i["device"] == "dev1" and i["kind"] == "result" for i in items)
    assert {i["topic"] for i in items} == {f"in/echo/s{i}" for i in range(5)}

    # JSON results are batched into NDJSON objects named after the seq range they hold.
    lines = _wait_for(lambda: _ndjson_lines(s3_client, bucket), 5)
    assert len(lines) == 5
    assert {line["result_id"] for line in lines} == {i["result_id"] for i in items}
    assert all(k.startswith("echo/dev1/") and k.endswith(".ndjson")
               for k in s3_client.list_keys(bucket))
    assert set(lines[0]["result"]) == {"echo", "subject", "request_id", "fn"}
    assert agent.alive()


def test_bad_input_is_reported_and_the_agent_keeps_serving(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "components", "picky",
        """
        import os
        def handler(event, context):
            action = event.get("do")
            if action == "raise":
                raise ValueError("no thanks")
            if action == "set":
                return {1, 2}
            if action == "exit":
                os._exit(7)
            return {"ok": event["n"]}
        """,
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#", "edge/dev1/picky/errors")
    probe.publish("in/picky/a", b"\xff not json")
    probe.publish("in/picky/a", json.dumps({"do": "raise"}))
    probe.publish("in/picky/a", json.dumps({"do": "set"}))
    probe.publish("in/picky/a", json.dumps({"do": "exit"}))
    probe.publish("in/picky/a", json.dumps({"n": 42}))

    errors = probe.wait_count("edge/dev1/picky/errors", 4)
    # Workers run in parallel; the intake sequence number gives publish order back.
    errors.sort(key=lambda m: int(user_props(m)["seq"]))
    records = [json.loads(m.payload) for m in errors]
    assert [r["errorType"] for r in records] == [
        "Runtime.InvalidEvent", "ValueError", "Runtime.MarshalError", "Runtime.ExitError",
    ]
    for record in records:
        assert set(record) == {"errorType", "errorMessage", "stackTrace"}
    assert records[1]["errorMessage"] == "no thanks"
    assert any("app.py" in line for line in records[1]["stackTrace"])
    assert "status 7" in records[3]["errorMessage"]
    # The worker died on os._exit; a new one serves the next message.
    good = probe.wait_count("out/picky", 1)
    assert json.loads(good[0].payload) == {"ok": 42}
    assert agent.alive()


def test_sigterm_exits_zero_and_messages_sent_while_down_run_after_restart(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(tmp_path / "components", "echo", ECHO)
    agent = agent_factory([comp]).start()
    probe.follow("out/#")
    probe.publish("in/echo/x", json.dumps({"n": 1}))
    probe.wait_count("out/echo", 1)
    assert agent.terminate() == 0
    assert "agent stopped" in agent.log_text()

    # The broker keeps the agent's persistent session: QoS 1 messages wait for it.
    for n in (2, 3, 4):
        probe.publish("in/echo/x", json.dumps({"n": n}))
    agent.start()
    outputs = probe.wait_count("out/echo", 4)
    assert sorted(json.loads(m.payload)["echo"]["n"] for m in outputs) == [1, 2, 3, 4]


def test_sigkill_mid_stream_loses_nothing(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(tmp_path / "components", "echo", ECHO)
    agent = agent_factory([comp]).start()
    probe.follow("out/#")
    for n in range(40):
        probe.publish("in/echo/x", json.dumps({"n": n}))
    probe.wait_count("out/echo", 5)
    agent.kill()
    for n in range(40, 60):
        probe.publish("in/echo/x", json.dumps({"n": n}))
    agent.start()
    expected = set(range(60))
    probe.wait_for(
        lambda ms: expected
        <= {json.loads(m.payload)["echo"]["n"] for m in ms if m.topic == "out/echo"},
        timeout=30,
    )
    # Every result also reached the local results sink, under a deterministic name.
    files = _wait_for(lambda: agent.local_results(), 60)
    seen = {json.loads(p.read_bytes())["echo"]["n"] for p in files}
    assert seen == expected


def test_one_message_triggers_every_matching_component(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    a = write_component(tmp_path / "c", "a", ECHO, triggers="  - topic: shared/+\n")
    b = write_component(tmp_path / "c", "b", ECHO, triggers="  - topic: shared/#\n")
    agent_factory([a, b]).start()
    probe.follow("out/#")
    probe.publish("shared/t", json.dumps({"n": 1}))
    outs = probe.wait_count("out/", 2)
    assert sorted(m.topic for m in outs) == ["out/a", "out/b"]
    ids = {user_props(m)["request-id"] for m in outs}
    assert len(ids) == 2


def test_binary_trigger_and_binary_result(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    comp = write_component(
        tmp_path / "c", "flip",
        """
        def handler(event, context):
            assert isinstance(event, bytes)
            return event[::-1]
        """,
        triggers="  - topic: frames/+\n    encoding: binary\n",
    )
    agent = agent_factory([comp]).start()
    probe.follow("out/#")
    probe.publish("frames/cam1", bytes(range(256)))
    out = probe.wait_count("out/flip", 1)
    assert out[0].payload == bytes(range(256))[::-1]
    files = _wait_for(lambda: agent.local_results(), 1)
    assert files[0].suffix == ".bin" and files[0].read_bytes() == bytes(range(256))[::-1]


def _ndjson_lines(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for key in s3_client.list_keys(bucket)
        for line in s3_client.get_object(bucket, key).splitlines()
    ]


def _wait_for(read: Any, n: int, timeout: float = 20.0) -> list[Any]:
    """Poll a remote store until it holds ``n`` things (a store has no event to await)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = list(read())
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)
