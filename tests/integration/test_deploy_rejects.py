"""Bad input ends with a one-line error and a non-zero exit; the device keeps running
what it ran: tampered, unsigned, foreign-key and replayed documents, tampered artifacts and
truncated chunks, unknown devices and groups, a device that never answers, and a group
rollout halted by --max-failures."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from edge.deploy.signing import init_keys, load_private_key, sign
from edge.model.deployment import artifact_chunk_topic
from tests.harness.agent import Probe
from tests.harness.deploy import Project, served

pytestmark = pytest.mark.integration

FAILS_ALWAYS = """
def handler(event, context):
    raise ValueError("every invocation fails")
"""


def retained_desired(probe: Probe, thing: str) -> dict[str, Any]:
    msgs = [m for m in probe.on(f"edge/{thing}/desired") if m.payload]
    return json.loads(msgs[-1].payload)


def wait_report(probe: Probe, thing: str, deployment_id: str) -> dict[str, Any]:
    def final(ms: list[Any]) -> bool:
        return any(m.topic == f"edge/{thing}/deployment"
                   and json.loads(m.payload)["deployment_id"] == deployment_id
                   and json.loads(m.payload)["state"] in ("FAILED", "SUCCEEDED", "ROLLED_BACK")
                   for m in ms)  # fmt: skip

    probe.wait_for(final, 20)
    return [json.loads(m.payload) for m in probe.on(f"edge/{thing}/deployment")
            if json.loads(m.payload)["deployment_id"] == deployment_id][-1]  # fmt: skip


def retain(probe: Probe, topic: str, payload: bytes) -> None:
    info = probe._client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(5)
    assert info.is_published()


@pytest.fixture
def running(project: Project, probe: Probe) -> Project:
    probe.follow("out/#", "edge/dev1/#")
    project.agent("dev1").start()
    v1 = project.component("1.0.0")
    assert project.deploy(str(v1), "--device", "dev1", "--health-window", "0")["_code"] == 0
    return project


def still_serving_v1(probe: Probe) -> None:
    probe.publish("in/echo/check", json.dumps({"n": 0}))
    assert served(probe, "echo", 1)[-1]["version"] == "1.0.0"


def test_tampered_unsigned_foreign_and_replayed_documents_are_rejected(
    running: Project, probe: Probe
) -> None:
    envelope = retained_desired(probe, "dev1")
    document = envelope["document"]
    newer = dict(document, deployment_id="d-tampered", sequence=document["sequence"] + 10)
    newer["components"] = {}  # would remove everything

    tampered = dict(envelope, document=newer)  # old signature, new document
    probe.publish("edge/dev1/desired", json.dumps(tampered))
    report = wait_report(probe, "dev1", "d-tampered")
    assert report["state"] == "FAILED" and "signature does not verify" in report["reason"]

    unsigned = {"schema": 1, "document": dict(newer, deployment_id="d-unsigned")}
    probe.publish("edge/dev1/desired", json.dumps(unsigned))
    report = wait_report(probe, "dev1", "d-unsigned")
    assert report["state"] == "FAILED" and "signature" in report["reason"]

    other = load_private_key(init_keys(running.root / "other-keys")[0])
    foreign = sign(dict(newer, deployment_id="d-foreign"), other)
    probe.publish("edge/dev1/desired", foreign.to_bytes())
    report = wait_report(probe, "dev1", "d-foreign")
    assert report["state"] == "FAILED" and "this device trusts" in report["reason"]

    key = load_private_key(running.root / "keys" / "fleet.key")
    replay = sign(dict(document, deployment_id="d-replay", sequence=document["sequence"] - 1), key)
    probe.publish("edge/dev1/desired", replay.to_bytes())
    report = wait_report(probe, "dev1", "d-replay")
    assert report["state"] == "FAILED" and "replayed document" in report["reason"]
    assert report["running"]["echo"]["version"] == "1.0.0"
    still_serving_v1(probe)


def test_tampered_artifact_and_truncated_chunk_fail_before_activation(
    running: Project, probe: Probe
) -> None:
    v2 = running.component("2.0.0")
    # A dry run builds the artifact and tells us its digest.
    code, out, _ = running.cli("deploy", str(v2), "--device", "dev1", "--dry-run", "--json")
    assert code == 0
    sha = json.loads(out)["uploads"][0]["sha256"]
    # Pre-publish a manifest and a truncated chunk 0 for that digest: the agent refuses it,
    # waits for an intact one, and fails when none arrives (short stall timeout below).
    zip_bytes = (v2 / ".edge" / "build" / "echo.zip").read_bytes()
    assert hashlib.sha256(zip_bytes).hexdigest() == sha
    manifest = {"schema": 1, "sha256": sha, "size": len(zip_bytes), "chunk_size": 131072,
                "chunks": [hashlib.sha256(zip_bytes).hexdigest()]}  # fmt: skip
    retain(probe, f"edgectl/artifacts/{sha}/manifest", json.dumps(manifest).encode())
    retain(probe, artifact_chunk_topic(sha, 0), zip_bytes[:-10])
    result = running.deploy(str(v2), "--device", "dev1", "--timeout", "45")
    assert result["_code"] == 1, result["devices"]
    [device] = result["devices"]
    assert device["state"] == "FAILED"
    assert "stalled" in device["reason"] and "failed their digest" in device["reason"]
    assert result["_err"] == ""  # --json: the table is the output, the exit code the verdict
    still_serving_v1(probe)
    # A tampered artifact: right size, right chunk digests, wrong content digest.
    v3 = running.component("3.0.0")
    code, out, _ = running.cli("deploy", str(v3), "--device", "dev1", "--dry-run", "--json")
    sha3 = json.loads(out)["uploads"][0]["sha256"]
    evil = bytearray((v3 / ".edge" / "build" / "echo.zip").read_bytes())
    evil[40] ^= 0xFF
    manifest = {"schema": 1, "sha256": sha3, "size": len(evil), "chunk_size": 131072,
                "chunks": [hashlib.sha256(evil).hexdigest()]}  # fmt: skip
    retain(probe, f"edgectl/artifacts/{sha3}/manifest", json.dumps(manifest).encode())
    retain(probe, artifact_chunk_topic(sha3, 0), bytes(evil))
    result = running.deploy(str(v3), "--device", "dev1")
    [device] = result["devices"]
    assert device["state"] == "FAILED" and "digest mismatch" in device["reason"]
    still_serving_v1(probe)


def test_unknown_device_group_and_bad_component_exit_2(project: Project) -> None:
    project.device("dev1")
    v1 = project.component("1.0.0")
    code, _, err = project.cli("deploy", str(v1), "--device", "dev9")
    assert code == 2 and "unknown device 'dev9'" in err and err.count("\n") == 1
    code, _, err = project.cli("deploy", str(v1), "--group", "nope")
    assert code == 2 and "unknown group 'nope'" in err and err.count("\n") == 1
    (v1 / "component.yaml").write_text("name: echo\nversion: one\n")
    code, _, err = project.cli("deploy", str(v1), "--device", "dev1")
    assert code == 2 and "version" in err and err.count("\n") == 1


def test_device_that_never_answers_times_out(project: Project) -> None:
    project.device("ghost")
    v1 = project.component("1.0.0")
    code, out, err = project.cli("deploy", str(v1), "--device", "ghost", "--timeout", "1",
                                 "--health-window", "0")  # fmt: skip
    assert code == 1
    assert err.strip() == "edgectl: error: ghost: TIMED_OUT: no final report within 1s"


FAILS_SMOKE_EXCEPT_ON_G0 = """
import os
def handler(event, context):
    if event.get("smoke") and os.environ["AWS_IOT_THING_NAME"] != "g0":
        raise ValueError("smoke says no")
    return {"version": VERSION, "echo": event}
"""


def test_group_rollout_halts_at_max_failures_and_reverts(project: Project, probe: Probe) -> None:
    names = [f"g{i}" for i in range(4)]
    for name in names:
        project.device(name, groups=("field",))
        project.agent(name).start()
    v1 = project.component("1.0.0")
    first = project.deploy(str(v1), "--group", "field", "--health-window", "0")
    assert first["_code"] == 0, first
    (v1 / "events").mkdir()
    (v1 / "events" / "smoke.json").write_text('{"smoke": true}')
    v2 = project.component("2.0.0", code=FAILS_SMOKE_EXCEPT_ON_G0,
                           manifest="health:\n  smoke_event: events/smoke.json\n")  # fmt: skip
    code, out, err = project.cli(
        "deploy", str(v2), "--group", "field", "--strategy", "canary", "--canary", "1",
        "--batch", "1", "--max-failures", "1", "--health-window", "0", "--json",
    )  # fmt: skip
    assert code == 1, err
    data = json.loads(out)
    states = {d["device"]: d["state"] for d in data["devices"]}
    assert data["halted"] is True
    # The canary succeeded, the next batch failed: halt, and put the canary back.
    assert states == {"g0": "REVERTED", "g1": "ROLLED_BACK", "g2": "SKIPPED", "g3": "SKIPPED"}
    probe.follow("out/#")
    for name in names:
        probe.publish(f"in/echo/{name}", json.dumps({"n": name}))
    bodies = served(probe, "echo", 4)
    assert {b["version"] for b in bodies} == {"1.0.0"}
