"""A newer desired state that arrives while a deployment is in its health window is
reported QUEUED; a third one supersedes the queued one (never two waiting); the window
ends on its own terms (here: a failed invocation rolls back) and the queued one runs next.
The CLI waiting for the first deployment gets its real outcome, not "superseded"."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from edge.deploy.signing import load_private_key, sign
from tests.harness.agent import Probe
from tests.harness.deploy import Project, report_of, served

pytestmark = pytest.mark.integration

FAILS_ON_REQUEST = """
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"version": VERSION, "echo": event}
"""


def reports(probe: Probe, thing: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in probe.on(f"edge/{thing}/deployment") if m.payload]


def test_newer_document_is_queued_behind_the_health_window(
    project: Project, probe: Probe
) -> None:
    probe.follow("out/#", "edge/dev1/deployment", "edge/dev1/desired")
    project.agent("dev1").start()
    v1 = project.component("1.0.0")
    first = project.deploy(str(v1), "--device", "dev1", "--health-window", "0")
    assert first["_code"] == 0, first
    v1_id = first["devices"][0]["deployment_id"]

    v2 = project.component("2.0.0", code=FAILS_ON_REQUEST)
    outcome: dict[str, Any] = {}
    cli = threading.Thread(
        target=lambda: outcome.update(project.deploy(
            str(v2), "--device", "dev1", "--health-window", "120", "--timeout", "60")),
        daemon=True,
    )  # fmt: skip
    cli.start()
    wait = report_of(probe, "dev1")
    in_health = wait(lambda r: r["deployment_id"] != v1_id and r["phase"] == "health")
    a_id, a_seq = in_health["deployment_id"], in_health["sequence"]
    envelope = next(json.loads(m.payload) for m in reversed(probe.on("edge/dev1/desired"))
                    if json.loads(m.payload)["document"]["deployment_id"] == a_id)  # fmt: skip
    a_doc = envelope["document"]
    key = load_private_key(project.root / "keys" / "fleet.key")
    # B and C go back to v1 (A's previous components): applying them needs no transfer.
    back = {"components": a_doc["previous"], "previous": a_doc["components"]}
    doc_b = dict(a_doc, deployment_id="d-queued-b", sequence=a_seq + 1, **back)
    doc_c = dict(a_doc, deployment_id="d-queued-c", sequence=a_seq + 2, **back)

    probe.publish("edge/dev1/desired", sign(doc_b, key).to_bytes())
    queued_b = wait(lambda r: r["deployment_id"] == "d-queued-b" and r["state"] == "QUEUED")
    assert queued_b["running"]["echo"]["version"] == "2.0.0"  # A runs, in its window

    probe.publish("edge/dev1/desired", sign(doc_c, key).to_bytes())
    dropped = wait(lambda r: r["deployment_id"] == "d-queued-b" and r["state"] == "FAILED")
    assert dropped["reason"] == "superseded by d-queued-c"
    wait(lambda r: r["deployment_id"] == "d-queued-c" and r["state"] == "QUEUED")
    assert not any(r["deployment_id"] == a_id and r["state"] != "IN_PROGRESS"
                   for r in reports(probe, "dev1"))  # A is still in its window  # fmt: skip

    # End A's window: a failed invocation of the new version rolls it back.
    probe.publish("in/echo/x", json.dumps({"fail": True}))
    done_c = wait(lambda r: r["deployment_id"] == "d-queued-c"
                  and r["state"] in ("SUCCEEDED", "FAILED"))  # fmt: skip
    if done_c["state"] == "FAILED":
        # The CLI puts A's previous state back as desired after the rollback (the same v1);
        # when that document reaches the agent before C starts, it supersedes C.
        assert done_c["reason"].startswith("superseded by d-"), done_c
        assert "d-queued" not in done_c["reason"]
    assert done_c["running"]["echo"]["version"] == "1.0.0"
    cli.join(60)
    assert not cli.is_alive()
    [device] = outcome["devices"]
    assert device["deployment_id"] == a_id
    assert device["state"] == "ROLLED_BACK" and device["reason"].startswith("health gate:"), device

    seen = [(r["deployment_id"], r["state"]) for r in reports(probe, "dev1")]
    a_final = seen.index((a_id, "ROLLED_BACK"))
    assert seen.index(("d-queued-b", "QUEUED")) < a_final
    c_final = seen.index(("d-queued-c", done_c["state"]))
    assert seen.index(("d-queued-c", "QUEUED")) < a_final < c_final
    assert not any(i == "d-queued-b" and s == "IN_PROGRESS" for i, s in seen)  # B never ran
    assert (a_id, "FAILED") not in seen  # A was not cut short by the newer documents
    probe.publish("in/echo/y", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[-1]["version"] == "1.0.0"
