"""Simulated devices answer real rollouts (``edgectl deploy``) like agents do, and
``edgectl device show`` tells one device's story, history included."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edge.fleet.simulate import SimOptions, Simulator, load_verifier
from tests.harness.agent import REPO, Probe
from tests.harness.deploy import Project, report_of

pytestmark = pytest.mark.integration


@pytest.fixture
def sims(project: Project) -> Iterator[list[Simulator]]:
    made: list[Simulator] = []
    yield made
    for sim in made:
        sim.stop(graceful=False)


def start(project: Project, sims: list[Simulator], n: int, **options: object) -> Simulator:
    for i in range(1, n + 1):
        project.device(f"sim-{i:04d}", groups=("sim",))
    sim = Simulator(
        project.broker.host, project.broker.port,
        SimOptions(devices=n, groups=("sim",), step=0.05, **options),  # type: ignore[arg-type]
        verify=load_verifier(project.root / "keys" / "fleet.pub"),
    )  # fmt: skip
    sim.start(timeout=20)
    sims.append(sim)
    return sim


def show(project: Project, name: str) -> tuple[int, dict[str, object]]:
    code, out, err = project.cli(
        "device", "show", name, "--json", "--devices-dir", str(project.root / "devices")
    )
    assert out.strip(), err
    return code, json.loads(out)


def test_a_group_rollout_to_simulated_devices_succeeds(
    project: Project, sims: list[Simulator]
) -> None:
    start(project, sims, 3)
    v1 = project.component("1.0.0")
    result = project.deploy(str(v1), "--group", "sim", "--health-window", "0.2")
    assert result["_code"] == 0, result["_err"]
    assert [d["state"] for d in result["devices"]] == ["SUCCEEDED"] * 3

    code, view = show(project, "sim-0002")
    assert code == 0
    row = view["row"]
    assert isinstance(row, dict) and row["state"] == "online"
    assert row["components"] == {"echo": {"version": "1.0.0", "state": "running"}}
    history = view["history"]
    assert isinstance(history, list) and history[0]["state"] == "SUCCEEDED"
    assert isinstance(view["desired"], dict)
    assert view["desired"]["thing"] == "sim-0002"


def test_a_failing_simulated_fleet_rolls_back(project: Project, sims: list[Simulator]) -> None:
    start(project, sims, 2, fail_rate=1.0)
    v1 = project.component("1.0.0")
    result = project.deploy(str(v1), "--device", "sim-0001", "--health-window", "0.2")
    assert result["_code"] != 0
    assert [d["state"] for d in result["devices"]] == ["ROLLED_BACK"]
    _, view = show(project, "sim-0001")
    history = view["history"]
    assert isinstance(history, list)
    assert "ROLLED_BACK" in [h["state"] for h in history]
    row = view["row"]
    # What ran before still runs.
    assert isinstance(row, dict) and set(row["components"]) == {"com.example.Hello"}


def test_a_rolled_back_device_is_degraded(
    project: Project, sims: list[Simulator], probe: Probe
) -> None:
    from edge.deploy.signing import load_private_key, sign
    from edge.model.deployment import ArtifactRef, ComponentSpec, DesiredState

    sim = start(project, sims, 1, fail_rate=1.0)
    probe.follow("edge/sim-0001/deployment")
    spec = ComponentSpec("echo", "2.0.0", ArtifactRef("ab" * 32, 100))
    desired = DesiredState("sim-0001", "d-bad", 10, 1.0, {"echo": spec}, health_window=0.1)
    signed = sign(desired.to_json(), load_private_key(project.root / "keys" / "fleet.key"))
    device = sim.by_thing["sim-0001"]
    sim.call(lambda: device.on_desired(signed.to_bytes()))
    report_of(probe, "sim-0001")(lambda r: r["state"] == "ROLLED_BACK", 10)
    code, out, _ = project.cli("fleet", "status", "--json", "--broker", project.broker.url,
                               "--devices-dir", str(project.root / "devices"))  # fmt: skip
    row = json.loads(out)["devices"][0]
    assert code == 1
    assert row["errors"][0].startswith("deployment d-bad: rolled_back: health gate: echo 2.0.0")
    assert row["deployment"]["state"] == "rolled_back"


def test_an_unsigned_document_is_refused(project: Project, sims: list[Simulator]) -> None:
    sim = start(project, sims, 1)
    signed = {
        "schema": 1,
        "document": {"schema": 1, "thing": "sim-0001", "deployment_id": "d-evil",
                     "sequence": 5, "created_at": 1.0, "components": {}},
        "signature": {"alg": "ed25519", "key_id": "0" * 16, "value": "A" * 86 + "=="},
    }  # fmt: skip
    device = sim.by_thing["sim-0001"]
    sim.call(lambda: device.on_desired(json.dumps(signed).encode()))
    assert device.report is not None
    assert (device.report.deployment_id, device.report.state) == ("d-evil", "FAILED")
    assert "sim-0001" in device.report.reason or "signed by key" in device.report.reason


def test_the_simulate_command_runs_and_stops(project: Project) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "fleet", "simulate", "--devices", "5",
         "--broker", project.broker.url, "--duration", "30", "--prefix", "cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready: 5 devices connected"
        code, out, err = project.cli("fleet", "status", "--json", "--broker", project.broker.url,
                                     "--devices-dir", "/nonexistent")  # fmt: skip
        assert code == 0, err
        assert sorted(d["name"] for d in json.loads(out)["devices"]) == [
            f"cli-{i:04d}" for i in range(1, 6)
        ]
    finally:
        proc.send_signal(2)
        proc.wait(15)
    code, out, _ = project.cli("fleet", "status", "--json", "--broker", project.broker.url,
                               "--devices-dir", "/nonexistent")  # fmt: skip
    assert code == 1
    assert {d["state"] for d in json.loads(out)["devices"]} == {"offline"}
