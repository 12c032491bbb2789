"""Waiting for a deployment's outcome: its final report counts even when a newer
deployment's report arrived before the waiting thread looked."""

from __future__ import annotations

import json
import time

from edge.deploy.direct import ControlChannel
from edge.model.deployment import DeploymentReport, DesiredState
from edge.mqtt.bus import Bus, Message
from tests.unit.test_agent_core import FakeBus


def report(deployment_id: str, sequence: int, state: str, reason: str = "") -> Message:
    doc = DeploymentReport("dev1", deployment_id, sequence, state, reason).to_json()
    return Message(topic="edge/dev1/deployment", payload=json.dumps(doc).encode(), qos=1)


def test_the_final_report_wins_over_a_newer_deployment_that_already_started() -> None:
    bus: Bus = FakeBus()
    channel = ControlChannel(bus, "cli")
    channel._on_report(report("d-a", 5, "ROLLED_BACK", "health gate: 1 error"))
    channel._on_report(report("d-c", 7, "IN_PROGRESS"))  # before anyone waited
    a = DesiredState("dev1", "d-a", 5, 1.0, {})
    [outcome] = channel.wait_final({"dev1": a}, time.monotonic() + 1).values()
    assert outcome is not None
    assert (outcome.state, outcome.reason) == ("ROLLED_BACK", "health gate: 1 error")


def test_a_newer_started_deployment_ends_one_whose_final_report_never_came() -> None:
    channel = ControlChannel(FakeBus(), "cli")
    channel._on_report(report("d-c", 7, "IN_PROGRESS"))
    a = DesiredState("dev1", "d-a", 5, 1.0, {})
    [outcome] = channel.wait_final({"dev1": a}, time.monotonic() + 1).values()
    assert outcome is not None
    assert (outcome.state, outcome.reason) == ("FAILED", "superseded by d-c")
