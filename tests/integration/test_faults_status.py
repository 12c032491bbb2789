"""``edgectl sync status`` reads the backlog and sink health from the agent's retained
status document: unhealthy while the endpoint is cut, healthy once it drained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli.main import main
from tests.harness.agent import Probe
from tests.harness.moto import unique_name
from tests.harness.tcpproxy import TcpProxy
from tests.integration.faults import StatusLog, agent_args, count_component, drained

pytestmark = pytest.mark.integration


def test_sync_status_shows_the_backlog_and_the_failing_sink(
    tmp_path: Path, agent_factory: Any, probe: Probe, moto_server: Any, s3_client: Any,
    ddb_client: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, table = unique_name("status"), unique_name("status")
    s3_client.ensure_bucket(bucket, "us-east-1")
    ddb_client.ensure_table(table)
    comp = count_component(tmp_path / "c", bucket, table)
    with TcpProxy(moto_server.host, moto_server.port) as proxy:
        proxy.cut()
        runner = agent_factory([comp], moto_url=proxy.url, extra_args=["--sync-retry-max", "1"])
        agent_args(runner, heartbeat=0.5).start()
        status = StatusLog(probe)
        for n in range(5):
            probe.publish("in/count/x", json.dumps({"n": n}))
        status.wait(
            lambda d: sum(s["records"] for s in d["outbox"].values()) == 10
            and all(s["last_error"] for s in d["outbox"].values()), 30,
        )
        assert main(["sync", "status", "--device", "dev1", "--devices-dir",
                     str(runner.workdir), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["healthy"] is False and report["state"] == "online"
        assert report["backlog"] >= 10
        sinks = {s["name"]: s for s in report["sinks"]}
        assert set(sinks) == {"s3", "dynamodb"}
        assert sinks["dynamodb"]["last_error"] and sinks["dynamodb"]["last_success"] is None
        assert report["intake"]["pending"] == 0

        proxy.restore()
        status.wait(drained, 30)
        assert main(["sync", "status", "--device", "dev1", "--devices-dir",
                     str(runner.workdir)]) == 0
        table_text = capsys.readouterr().out
        assert "dev1: online" in table_text and "healthy" in table_text
        assert "dynamodb" in table_text and "s3" in table_text


def test_sync_status_without_a_report_says_so(
    tmp_path: Path, mosquitto: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.harness.agent import write_device

    write_device(tmp_path / "ghost.yaml", mosquitto.url, name="ghost")
    code = main(["sync", "status", "--device", "ghost", "--devices-dir", str(tmp_path),
                 "--timeout", "5"])
    assert code == 1
    assert "no status document on edge/ghost/status" in capsys.readouterr().err
