"""An unmodified Greengrass v1 function, using the real ``greengrasssdk`` 1.6.1 from
PyPI, on the real agent: its ``iot-data`` publish reaches the local broker, its
``lambda`` invoke reaches another component (synchronously and as an event), and
its shadow get/update work against the agent's local shadow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, write_component

pytestmark = pytest.mark.integration
pytest.importorskip("greengrasssdk")

# Written the way v1 functions were; nothing here knows about edgectl.
LEGACY = """
    import json
    import logging

    import greengrasssdk

    logger = logging.getLogger(__name__)
    iot = greengrasssdk.client("iot-data")
    lam = greengrasssdk.client("lambda")
    ADDER = "arn:aws:lambda:us-east-1:123456789012:function:adder"


    def function_handler(event, context):
        iot.publish(topic="v1/out/hello", payload=json.dumps({"hello": event["name"]}))
        response = lam.invoke(
            FunctionName=ADDER + ":1",
            InvocationType="RequestResponse",
            Payload=json.dumps({"a": 2, "b": 3}),
        )
        total = json.loads(response["Payload"].read())
        iot.update_thing_shadow(
            thingName="dev1",
            payload=json.dumps({"state": {"reported": {"total": total["sum"]},
                                          "desired": {"total": 10}}}),
        )
        shadow = json.loads(iot.get_thing_shadow(thingName="dev1")["payload"])
        lam.invoke(FunctionName=ADDER, InvocationType="Event",
                   Payload=json.dumps({"a": 1, "b": 1}))
        try:
            iot.get_thing_shadow(thingName="nobody")
            missing = None
        except Exception as exc:
            missing = type(exc).__name__ + ": " + str(exc)
        return {"total": total, "shadow": shadow["state"], "version": shadow["version"],
                "missing": missing}
"""

ADDER = """
    def handler(event, context):
        return {"sum": event["a"] + event["b"]}
"""


def test_unmodified_greengrasssdk_function(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    legacy = write_component(tmp_path / "c", "legacy", LEGACY)
    (legacy / "component.yaml").write_text(
        (legacy / "component.yaml").read_text().replace("app.handler", "app.function_handler")
    )
    adder = write_component(tmp_path / "c", "adder", ADDER)
    agent = agent_factory([legacy, adder]).start()
    probe.follow("out/#", "v1/#", "$aws/things/dev1/shadow/#", "edge/dev1/+/errors")
    probe.publish("in/legacy/x", json.dumps({"name": "pi"}))

    (hello,) = probe.wait_count("v1/out/hello", 1)
    assert json.loads(hello.payload) == {"hello": "pi"}
    (result,) = probe.wait_count("out/legacy", 1)
    doc = json.loads(result.payload)
    assert doc["total"] == {"sum": 5}
    assert doc["shadow"]["reported"] == {"total": 5}
    assert doc["shadow"]["delta"] == {"total": 10}
    assert doc["version"] == 1
    assert doc["missing"].startswith("ShadowError") and "404" in doc["missing"]
    # The Event invoke ran the adder as its own durable invocation.
    sums = probe.wait_for(lambda ms: any(
        m.topic == "out/adder" and json.loads(m.payload) == {"sum": 2} for m in ms))
    assert sums
    accepted = probe.wait_count("$aws/things/dev1/shadow/update/accepted", 1)
    assert json.loads(accepted[0].payload)["state"]["reported"] == {"total": 5}
    assert probe.on("edge/dev1/") == []
    # The shadow is kept on disk by the agent.
    stored = json.loads((agent.data_dir / "shadows" / "dev1.json").read_text())
    assert stored["state"]["reported"] == {"total": 5}
