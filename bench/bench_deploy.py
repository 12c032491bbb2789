"""Direct deployment timings (issue 4), written to bench/results/deploy.md.

1. ``edgectl deploy --device`` of a small Python component to a real agent on this
   machine, measured from the command's start (a fresh ``edgectl`` process) to its
   exit on the device's ``SUCCEEDED``; then one event proves the new version serves.
   Run with ``--health-window 0`` (the gate still starts the new version's worker and
   runs it before the switch) and with a 1 s window, to show what the window adds.
2. Redeploying the unchanged component: the time, and the number of artifact
   messages the broker carried (target: none).
3. A canary rollout (``--canary 10``, then batches of 50) to 200 simulated devices
   on one broker. The simulated devices are in-process fakes in this file, so the
   figure is the rollout engine's own cost: one MQTT connection that verifies each
   device's signed desired state with the real Ed25519 code and answers with
   IN_PROGRESS and SUCCEEDED reports; they do not download artifacts.

Run: ``.venv/bin/python -m bench.bench_deploy``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Broker, tcp_nodelay, write_table
from edge.deploy.direct import BrokerAccess, DirectRequest, run_direct
from edge.deploy.signing import load_public_key, verify
from edge.model.deployment import DeploymentReport, parse_desired, parse_signed
from edge.model.device import load_inventory
from tests.harness.agent import Probe
from tests.harness.deploy import Project

EDGECTL = [sys.executable, "-m", "edge.cli.main"]


def cli(project: Project, *args: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [*EDGECTL, *args, "--devices-dir", str(project.root / "devices"), "--json"],
        capture_output=True, text=True, cwd=project.root, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"edgectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def serve_time(probe: Probe, version: str, n: int) -> float:
    started = time.perf_counter()
    probe.publish("in/echo/bench", json.dumps({"n": n}))
    probe.wait_for(lambda ms: any(m.topic == "out/echo" and json.loads(m.payload)["echo"]["n"] == n
                                  and json.loads(m.payload)["version"] == version for m in ms))
    return time.perf_counter() - started


def single_device(runs: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Broker() as broker, tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp) / "project", broker)
        probe = Probe(broker)
        probe.follow("out/#", "edgectl/artifacts/#")
        agent = project.agent("pi01").start()
        try:
            samples: dict[str, list[float]] = {"0": [], "1": []}
            serve: list[float] = []
            n = 0
            for run in range(runs):
                for window in ("0", "1"):
                    n += 1
                    version = f"1.{run}.{window}"
                    folder = project.component(version)
                    seconds, out = cli(project, "deploy", str(folder), "--device", "pi01",
                                       "--health-window", window)  # fmt: skip
                    assert out["devices"][0]["state"] == "SUCCEEDED", out
                    samples[window].append(seconds)
                    serve.append(serve_time(probe, version, n))
            rows.append({
                "case": "deploy --device (changed component, --health-window 0)",
                "median s": statistics.median(samples["0"]), "max s": max(samples["0"]),
                "runs": len(samples["0"]), "target": "< 2 s",
                "pass": "yes" if statistics.median(samples["0"]) < 2 else "FAIL",
            })  # fmt: skip
            rows.append({
                "case": "deploy --device (changed component, --health-window 1)",
                "median s": statistics.median(samples["1"]), "max s": max(samples["1"]),
                "runs": len(samples["1"]), "target": "(window adds ~1 s)", "pass": "",
            })  # fmt: skip
            rows.append({
                "case": "first event served by the new version after SUCCEEDED",
                "median s": statistics.median(serve), "max s": max(serve), "runs": len(serve),
            })  # fmt: skip
            before = len(probe.on("edgectl/artifacts/"))
            unchanged: list[float] = []
            for _ in range(runs):
                seconds, out = cli(project, "deploy", str(folder), "--device", "pi01")
                assert out["devices"][0]["state"] == "UNCHANGED", out
                unchanged.append(seconds)
            transferred = len(probe.on("edgectl/artifacts/")) - before
            rows.append({
                "case": "redeploy unchanged component",
                "median s": statistics.median(unchanged), "max s": max(unchanged),
                "runs": len(unchanged), "artifact messages": transferred,
                "target": "< 0.5 s, no transfer",
                "pass": "yes" if statistics.median(unchanged) < 0.5 and not transferred else "FAIL",
            })  # fmt: skip
        finally:
            agent.terminate()
            probe.close()
    return rows


class FakeFleet:
    """``n`` simulated devices behind one MQTT connection (see the module docstring)."""

    def __init__(self, broker: Any, project: Project, n: int) -> None:
        self.key = load_public_key(project.root / "keys" / "fleet.pub")
        self.things = [f"sim{i:03d}" for i in range(n)]
        for thing in self.things:
            project.device(thing, groups=("sim",))
        self.applied = 0
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                   client_id="fake-fleet", protocol=mqtt.MQTTv5)  # fmt: skip
        tcp_nodelay(self._client)
        self._client.max_inflight_messages_set(1000)
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe("edge/+/desired", qos=1)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        signed = parse_signed(msg.payload, source=msg.topic)
        verify(signed, self.key, source=msg.topic)
        desired = parse_desired(signed.document, source=msg.topic)
        now = time.time()
        base = DeploymentReport(thing=desired.thing, deployment_id=desired.deployment_id,
                                sequence=desired.sequence, state="IN_PROGRESS",
                                phase="download", started_at=now, updated_at=now)  # fmt: skip
        topic = f"edge/{desired.thing}/deployment"
        self._client.publish(topic, base.to_bytes(), qos=1, retain=True)
        done = base.evolve(state="SUCCEEDED", phase=None, applied=desired.deployment_id)
        self._client.publish(topic, done.to_bytes(), qos=1, retain=True)
        self.applied += 1

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def canary_rollout(n: int) -> list[dict[str, Any]]:
    with Broker() as broker, tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp) / "project", broker)
        fleet = FakeFleet(broker, project, n)
        folder = project.component("1.0.0")
        devices = tuple(load_inventory(project.root / "devices").values())
        try:
            started = time.perf_counter()
            _plan, result = run_direct(DirectRequest(
                devices=devices, component_dirs=(folder,), strategy="canary", canary=10,
                batch=50, health_window=0, timeout=60,
                key_path=project.root / "keys" / "fleet.key",
                broker=BrokerAccess(broker.url),
            ))  # fmt: skip
            seconds = time.perf_counter() - started
        finally:
            fleet.close()
        assert result is not None and result.ok, result
        return [{
            "case": f"canary rollout to {n} simulated devices (canary 10, batches of 50)",
            "median s": seconds, "runs": 1,
            "batches": 1 + (n - 10 + 49) // 50, "devices": len(result.outcomes),
        }]  # fmt: skip


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    rows = single_device(args.runs) + canary_rollout(args.devices)
    path = write_table(
        "deploy", rows, title="Direct deployments (issue 4)",
        notes=[
            "Times include starting `edgectl` (a fresh Python process) and building; the "
            "component is a one-file Python handler (a few hundred bytes zipped).",
            "The canary rollout runs in-process (no `edgectl` start-up) against in-process "
            "fake devices: they verify signatures and report, but do not download.",
        ],
    )  # fmt: skip
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
