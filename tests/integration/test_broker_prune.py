"""``edgectl broker prune`` against a real Mosquitto and a real agent: an artifact no
desired state names goes (chunks and manifest), one that a desired state names stays,
what does not parse is left alone, and a later deploy of a pruned build uploads it
again."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from edge.model.deployment import ARTIFACT_PREFIX
from tests.harness.agent import Probe
from tests.harness.deploy import Project, served
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def retained(broker: MosquittoBroker, topic_filter: str) -> dict[str, bytes]:
    """What the broker retains under ``topic_filter``, read by a probe of the test's own."""
    probe = Probe(broker)
    try:
        probe.follow(topic_filter)  # returns after a round trip behind the retained burst
        return {m.topic: m.payload for m in probe.on("") if m.retain and m.payload}
    finally:
        probe.close()


def artifacts_of(broker: MosquittoBroker) -> dict[str, set[str]]:
    """sha256 -> the names retained under it (``manifest`` and chunk numbers)."""
    out: dict[str, set[str]] = {}
    for topic in retained(broker, f"{ARTIFACT_PREFIX}/#"):
        sha, name = topic.split("/")[-2:]
        out.setdefault(sha, set()).add(name)
    return out


def prune(project: Project, *args: str) -> dict[str, Any]:
    code, out, err = project.cli(
        "broker", "prune", "--devices-dir", str(project.root / "devices"), "--json", *args
    )
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def put_retained(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    client = broker.paho_client(f"writer-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def deploy(project: Project, version: str) -> dict[str, Any]:
    result = project.deploy(str(project.component(version)), "--device", "dev1",
                            "--health-window", "0.3")  # fmt: skip
    assert result["_code"] == 0, result["_err"]
    return result


def test_prune_removes_what_no_desired_state_names_and_keeps_the_rest(
    project: Project, probe: Probe
) -> None:
    project.agent("dev1").start()
    probe.follow("out/#")
    deploy(project, "1.0.0")
    old = set(artifacts_of(project.broker))
    assert len(old) == 1
    deploy(project, "1.0.1")
    both = artifacts_of(project.broker)
    (new,) = set(both) - old
    (stale,) = old
    assert both[stale] >= {"manifest", "0"} and both[new] >= {"manifest", "0"}
    # Garbage on the broker is reported, never removed, and never stops a run.
    junk_manifest = f"{ARTIFACT_PREFIX}/{'0' * 64}/manifest"
    put_retained(project.broker, junk_manifest, b"{not json")
    # A valid manifest under another artifact's topic: which chunks are whose is unclear.
    misfiled = f"{ARTIFACT_PREFIX}/{'1' * 64}/manifest"
    manifest_of_new = retained(project.broker, f"{ARTIFACT_PREFIX}/{new}/manifest")
    put_retained(project.broker, misfiled, next(iter(manifest_of_new.values())))
    put_retained(project.broker, "edge/ghost/desired", b"[]")

    listed = prune(project, "--dry-run")
    assert [a["sha256"] for a in listed["removed"]] == [stale]
    assert [(a["sha256"], a["needed_by"]) for a in listed["kept"]] == [(new, ["dev1"])]
    assert listed["unreadable_manifests"] == [junk_manifest, misfiled]
    assert listed["ignored_desired_states"] == ["edge/ghost/desired"]
    assert artifacts_of(project.broker)[stale] == both[stale]  # a dry run removes nothing

    done = prune(project)
    assert [a["sha256"] for a in done["removed"]] == [stale]
    assert done["freed_bytes"] == listed["freed_bytes"] > 0
    after = artifacts_of(project.broker)
    assert stale not in after
    assert after[new] == both[new]
    assert "manifest" in after["0" * 64] and "manifest" in after["1" * 64]
    assert prune(project)["removed"] == []  # nothing left to do

    # The pruned build deploys again: the CLI finds it missing and uploads it.
    again = deploy(project, "1.0.0")
    assert [d["state"] for d in again["devices"]] == ["SUCCEEDED"]
    assert stale in artifacts_of(project.broker)
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[-1]["version"] == "1.0.0"


def test_prune_table_and_its_one_line_summary(project: Project) -> None:
    project.device("dev1")
    code, out, err = project.cli("broker", "prune", "--devices-dir",
                                 str(project.root / "devices"))  # fmt: skip
    assert code == 0, err
    assert "0 removed, 0 kept; freed 0 bytes" in out


def test_prune_needs_a_broker(tmp_path: Any) -> None:
    from edge.cli.main import main

    assert main(["broker", "prune", "--devices-dir", str(tmp_path / "none")]) == 2
