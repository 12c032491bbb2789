"""Node.js components through the real agent, broker and the machine's ``node``:
async and callback handlers, the camelCase context, error records, a handler
that never calls back, and a module that fails to load."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import Probe, user_props

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node on PATH"),
]

INDEX = """
exports.handler = async (event, context) => {
  console.log('got', JSON.stringify(event));
  if (event.do === 'throw') throw new TypeError('not a number: ' + event.n);
  return {
    echo: event,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    awsRequestId: context.awsRequestId,
    subject: context.clientContext.custom.subject,
    remaining: context.getRemainingTimeInMillis(),
    region: process.env.AWS_REGION,
    thing: process.env.AWS_IOT_THING_NAME,
  };
};
exports.callback = (event, context, callback) => {
  if (event.do === 'never') return;  // never calls back
  setTimeout(() => callback(null, {called: 'back', n: event.n}), 5);
};
"""


def node_component(root: Path, name: str, handler: str, code: str, limits: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "index.js").write_text(textwrap.dedent(code))
    (folder / "component.yaml").write_text(
        f"name: {name}\nversion: 2.1.0\nruntime: nodejs20.x\nhandler: {handler}\n"
        f"triggers:\n  - topic: in/{name}/+\noutputs:\n  - topic: out/{name}\n{limits}"
    )
    return folder


def test_node_async_and_callback_handlers(
    tmp_path: Path, agent_factory: Any, probe: Probe
) -> None:
    a = node_component(tmp_path, "nasync", "index.handler", INDEX)
    b = node_component(
        tmp_path, "ncb", "index.callback", INDEX, "limits: {timeout: 0.5s, max_instances: 1}\n"
    )
    bad = node_component(tmp_path, "nbad", "index.handler", "require('no-such-package');\n")
    agent = agent_factory([a, b, bad]).start()
    probe.follow("out/#", "edge/dev1/+/errors")

    probe.publish("in/nasync/s1", json.dumps({"n": 1}))
    probe.publish("in/nasync/s1", json.dumps({"do": "throw", "n": "x"}))
    (out,) = probe.wait_count("out/nasync", 1)
    doc = json.loads(out.payload)
    assert doc["echo"] == {"n": 1}
    assert doc["functionName"] == "nasync" and doc["functionVersion"] == "2.1.0"
    assert doc["invokedFunctionArn"].endswith(":function:nasync")
    assert doc["memoryLimitInMB"] == "128"
    assert doc["awsRequestId"] == user_props(out)["request-id"]
    assert doc["subject"] == "in/nasync/s1"
    assert 0 < doc["remaining"] <= 3000
    assert doc["region"] == "us-east-1" and doc["thing"] == "dev1"
    (err,) = probe.wait_count("edge/dev1/nasync/errors", 1)
    record = json.loads(err.payload)
    assert set(record) == {"errorType", "errorMessage", "stackTrace"}
    assert record["errorType"] == "TypeError"
    assert record["errorMessage"] == "not a number: x"
    assert any("index.js" in line for line in record["stackTrace"])
    # Not JSON on a json trigger: the runtime's error, and the handler never runs.
    probe.publish("in/nasync/s1", b"\xff not json")
    invalid = json.loads(probe.wait_count("edge/dev1/nasync/errors", 2)[-1].payload)
    assert invalid == {"errorType": "Runtime.InvalidEvent", "stackTrace": [],
                       "errorMessage": "payload on topic 'in/nasync/s1' is not JSON (10 bytes)"}

    probe.publish("in/ncb/s", json.dumps({"do": "never"}))
    probe.publish("in/ncb/s", json.dumps({"n": 2}))
    (timeout,) = probe.wait_count("edge/dev1/ncb/errors", 1)
    assert json.loads(timeout.payload)["errorType"] == "Runtime.Timeout"
    (called,) = probe.wait_count("out/ncb", 1)
    assert json.loads(called.payload) == {"called": "back", "n": 2}

    probe.publish("in/nbad/s", json.dumps({}))
    (failed,) = probe.wait_count("edge/dev1/nbad/errors", 1)
    record = json.loads(failed.payload)
    assert record["errorType"] == "Runtime.ImportModuleError"
    assert "no-such-package" in record["errorMessage"]
    assert agent.alive()
