"""Artifacts through an object store: ``artifacts.s3`` in the device file, a moto server
over HTTP as the store, the real CLI and a real agent.

The CLI uploads each artifact once (key = SHA-256) and presigns it; the agent fetches it,
resumes a download cut mid-body with ``Range``, and checks the digest before anything is
activated.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.agent import Probe
from tests.harness.deploy import Project, served
from tests.harness.moto import MotoServer
from tests.harness.ports import free_port
from tests.harness.tcpproxy import _pump, _reset

pytestmark = pytest.mark.integration


@pytest.fixture
def aws_creds(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI signs with the usual credential chain: dummy keys for the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def s3_device(project: Project, endpoint: str, bucket: str, name: str = "dev1") -> None:
    # The harness writes "cloud:\n  region: us-east-1\n" last; the extra lines continue it.
    extra = f"  s3_endpoint: {endpoint}\nartifacts:\n  s3: {{bucket: {bucket}, prefix: fleet/}}\n"
    project.device(name, extra=extra)


def agent_env(moto: MotoServer) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL_S3": moto.url, "EDGE_ARTIFACT_TIMEOUT": "10"}


def test_deploy_through_s3_uploads_once_and_the_agent_runs_it(
    project: Project, probe: Probe, moto_server: MotoServer, s3_client: Any, s3_bucket: str,
    aws_creds: None,
) -> None:
    s3_device(project, moto_server.url, s3_bucket)
    probe.follow("out/#", "edge/dev1/deployment", "edge/dev1/desired", "edgectl/artifacts/#")
    project.agent("dev1", env=agent_env(moto_server)).start()
    v1 = project.component("1.0.0")
    result = project.deploy(str(v1), "--device", "dev1", "--health-window", "0")
    assert result["_code"] == 0, result
    assert [d["state"] for d in result["devices"]] == ["SUCCEEDED"]
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[0]["version"] == "1.0.0"

    [key] = s3_client.list_keys(s3_bucket, "fleet/")
    desired = json.loads(probe.on("edge/dev1/desired")[-1].payload)["document"]
    artifact = desired["components"]["echo"]["artifact"]
    assert key == f"fleet/{artifact['sha256']}.zip"
    assert artifact["s3"]["bucket"] == s3_bucket and artifact["s3"]["key"] == key
    assert artifact["s3"]["url"].startswith(moto_server.url) and "Expires=" in artifact["s3"]["url"]
    assert not probe.on("edgectl/artifacts/")  # nothing went through the broker

    # The same artifact for a second device on the same store: already there, not uploaded.
    s3_device(project, moto_server.url, s3_bucket, name="dev2")
    project.agent("dev2", env=agent_env(moto_server)).start()
    s3_client.put_object(s3_bucket, "fleet/marker", b"", content_type="text/plain")
    again = project.deploy(str(v1), "--device", "dev2", "--health-window", "0")
    assert again["_code"] == 0, again
    assert sorted(s3_client.list_keys(s3_bucket, "fleet/")) == sorted([key, "fleet/marker"])


def test_tampered_object_fails_before_activation(
    project: Project, probe: Probe, moto_server: MotoServer, s3_client: Any, s3_bucket: str,
    aws_creds: None,
) -> None:
    s3_device(project, moto_server.url, s3_bucket)
    probe.follow("out/#", "edge/dev1/deployment")
    project.agent("dev1", env=agent_env(moto_server)).start()
    v1 = project.component("1.0.0")
    assert project.deploy(str(v1), "--device", "dev1", "--health-window", "0")["_code"] == 0

    v2 = project.component("2.0.0")
    code, out, err = project.cli("deploy", str(v2), "--device", "dev1", "--dry-run", "--json")
    assert code == 0, err
    [upload] = json.loads(out)["uploads"]
    assert upload["s3"]["key"] == f"fleet/{upload['sha256']}.zip"
    # Someone replaced the object: same key, other bytes. The CLI sees the key and does not
    # upload; the device refuses the bytes.
    evil = bytearray((v2 / ".edge" / "build" / "echo.zip").read_bytes())
    evil[40] ^= 0xFF
    s3_client.put_object(s3_bucket, upload["s3"]["key"], bytes(evil),
                         content_type="application/zip")  # fmt: skip
    result = project.deploy(str(v2), "--device", "dev1", "--health-window", "0")
    assert result["_code"] == 1
    [device] = result["devices"]
    assert device["state"] == "FAILED" and "digest mismatch" in device["reason"], device
    assert "nothing was activated" in device["reason"]
    probe.publish("in/echo/check", json.dumps({"n": 0}))
    assert served(probe, "echo", 1)[-1]["version"] == "1.0.0"


class CutGetProxy:
    """A TCP proxy in front of the moto server that cuts the first GET after ``limit``
    bytes of its response (a reset, as a dropped link looks to the client) and lets
    everything else through. ``requests`` keeps the first bytes each client sent."""

    def __init__(self, target: MotoServer, limit: int) -> None:
        self.target = (target.host, target.port)
        self.limit = limit
        self.port = free_port()
        self.requests: list[bytes] = []
        self.cut_done = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target, timeout=10)
        upstream.settimeout(None)
        head = client.recv(65536)
        with self._lock:
            self.requests.append(head)
            cut = head.startswith(b"GET ") and not self.cut_done.is_set()
            if cut:
                self.cut_done.set()
        upstream.sendall(head)
        if not cut:
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
            _pump(client, upstream)
            return
        sent = 0
        try:
            while sent < self.limit:
                data = upstream.recv(min(65536, self.limit - sent))
                if not data:
                    break
                client.sendall(data)
                sent += len(data)
        finally:
            _reset(client)
            _reset(upstream)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()


@pytest.fixture
def cut_proxy(moto_server: MotoServer) -> Iterator[CutGetProxy]:
    proxy = CutGetProxy(moto_server, limit=300_000)
    yield proxy
    proxy.close()


def test_interrupted_download_resumes_with_range(
    project: Project, probe: Probe, moto_server: MotoServer, s3_client: Any, s3_bucket: str,
    aws_creds: None, cut_proxy: CutGetProxy,
) -> None:
    # The store's endpoint is the proxy: the CLI uploads and presigns through it, and the
    # agent's first GET is cut after 300 kB of a ~1 MB artifact.
    s3_device(project, cut_proxy.url, s3_bucket)
    probe.follow("out/#", "edge/dev1/deployment")
    project.agent("dev1", env=agent_env(moto_server)).start()
    v1 = project.component("1.0.0")
    (v1 / "blob.bin").write_bytes(os.urandom(1_000_000))  # incompressible
    result = project.deploy(str(v1), "--device", "dev1", "--health-window", "0")
    assert result["_code"] == 0, result
    assert cut_proxy.cut_done.is_set()
    gets = [r for r in cut_proxy.requests if r.startswith(b"GET ")]
    assert len(gets) == 2, gets
    assert b"range: bytes=0-" not in gets[0].lower() and b"range: bytes=" not in gets[0].lower()
    ranges = [line for line in gets[1].split(b"\r\n") if line.lower().startswith(b"range:")]
    assert ranges, gets[1]
    start = int(ranges[0].split(b"=")[1].split(b"-")[0])
    assert 0 < start <= 300_000
    probe.publish("in/echo/a", json.dumps({"n": 1}))
    assert served(probe, "echo", 1)[0]["version"] == "1.0.0"
    agent = project.agents[0]
    assert "resuming" in agent.log_text()
