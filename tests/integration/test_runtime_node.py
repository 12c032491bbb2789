"""Node.js components through the real agent, broker and the machine's ``node``:
async and callback handlers, the camelCase context, error records, a handler
that never calls back, and a module that fails to load."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent.worker import NODE_BOOTSTRAP
from edge.runtime.protocol import FrameReader, encode_frame, encode_invoke, whole_frame
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



FRAMES = """
exports.obj = async (event) => ({ got: event, 'ü': 1 });
exports.buf = async () => Buffer.from([0, 1, 2]);
exports.nothing = async () => undefined;
exports.loud = async (event) => { console.log('hi'); return [event.n]; };
exports.bad = async () => { throw new Error('no'); };
"""


@contextlib.contextmanager
def node_channel(folder: Path, handler: str) -> Iterator[tuple[int, int]]:
    """The Node.js bootstrap on two bare socket pairs, as the agent starts it,
    initialised with ``handler``: (fd to write frames to it, fd to read its raw
    frames from)."""
    (folder / "index.js").write_text(FRAMES)
    to_w, to_r = (sock.detach() for sock in socket.socketpair())
    from_r, from_w = (sock.detach() for sock in socket.socketpair())
    env = dict(os.environ, EDGE_CHANNEL_IN=str(to_r), EDGE_CHANNEL_OUT=str(from_w))
    proc = subprocess.Popen(["node", str(NODE_BOOTSTRAP)], env=env, pass_fds=(to_r, from_w),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    os.close(to_r)
    os.close(from_w)
    try:
        os.write(to_w, encode_frame({"type": "init", "dir": str(folder),
                                     "handler": f"index.{handler}"}))
        assert FrameReader(from_r).read()[0]["type"] == "ready"
        yield to_w, from_r
        os.write(to_w, encode_frame({"type": "stop"}))
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(to_w)
        os.close(from_r)


@pytest.mark.parametrize(
    ("handler", "content_type", "body", "logged"),
    [
        ("obj", "application/json", '{"got":{"n":1},"ü":1}'.encode(), False),
        ("buf", "application/octet-stream", b"\x00\x01\x02", False),
        ("nothing", "none", b"", False),
        ("loud", "application/json", b"[1]", True),
    ],
)
def test_node_writes_ok_results_in_the_compact_header(
    tmp_path: Path, handler: str, content_type: str, body: bytes, logged: bool
) -> None:
    # The agent reads an ok result without a JSON parse only when the runtime writes
    # the compact form: read the raw frames off the channel to hold Node.js to it.
    with node_channel(tmp_path, handler) as (to_w, from_r):
        for request_id in ("r-1", "r-ü"):
            os.write(to_w, encode_invoke(request_id, "t", "json", 3000, b'{"n":1}'))
            raw = os.read(from_r, 65536)
            assert raw[4] == 2  # compact, not JSON
            header, got = whole_frame(raw) or ({}, b"")
            assert 0 <= header.pop("duration_ms") < 3000
            expected: dict[str, Any] = {"type": "result", "request_id": request_id,
                                        "ok": True, "content_type": content_type}
            if logged:
                expected["logged"] = True
            assert (header, got) == (expected, body)


def test_node_error_results_stay_json(tmp_path: Path) -> None:
    with node_channel(tmp_path, "bad") as (to_w, from_r):
        os.write(to_w, encode_invoke("r-1", "t", "json", 3000, b"{}"))
        raw = os.read(from_r, 65536)
        assert raw[4:5] == b"{"
        header, _ = whole_frame(raw) or ({}, b"")
        assert header["ok"] is False and header["error"]["errorMessage"] == "no"
