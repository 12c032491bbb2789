"""The agent's Prometheus endpoint: off by default, loopback by default, real counters."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.agent import AgentRunner, Probe, write_component
from tests.harness.ports import free_port

pytestmark = pytest.mark.integration

HELLO = """
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True}
"""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def test_counters_match_the_status_document(
    tmp_path: Path, agent_factory: Callable[..., AgentRunner], probe: Probe
) -> None:
    hello = write_component(tmp_path / "components", "hello", HELLO)
    port = free_port("127.0.0.1")
    agent = agent_factory([hello], device="pi01", extra_args=["--metrics-port", str(port)])
    agent.start()
    probe.follow("out/#", "edge/pi01/hello/errors")
    probe.publish("in/hello/a", json.dumps({"n": 1}))
    probe.publish("in/hello/a", json.dumps({"fail": True}))
    probe.wait_for(lambda ms: len(ms) >= 2)  # one output, one error record
    # The counters move when the invocation is recorded, just after its messages went out.
    deadline = time.monotonic() + 10
    text = scrape(port)
    while 'invocations_total{component="hello",version="1.0.0"} 2' not in text:
        assert time.monotonic() < deadline, text
        text = scrape(port)
    assert 'edge_component_invocations_total{component="hello",version="1.0.0"} 2' in text
    assert 'edge_component_errors_total{component="hello",version="1.0.0"} 1' in text
    assert "# TYPE edge_component_invocations_total counter" in text
    assert 'edge_agent_info{thing="pi01"' in text
    assert "edge_agent_resident_memory_bytes " in text
    assert "edge_data_dir_free_bytes " in text
    assert 'edge_outbox_records{sink="local"}' in text
    assert f"metrics on http://127.0.0.1:{port}/metrics" in agent.log_text()
    # Loopback only: the port is not open on the machine's other addresses.
    other = socket.gethostbyname(socket.gethostname())
    if not other.startswith("127."):
        with pytest.raises(OSError), socket.create_connection((other, port), timeout=1):
            pass


def test_off_by_default(tmp_path: Path, agent_factory: Callable[..., AgentRunner]) -> None:
    agent = agent_factory([], device="pi02").start()
    assert "metrics on" not in agent.log_text()
