"""``edgectl fleet status`` against a real Mosquitto, real agent processes and a
simulated fleet: rows, exit codes, the last will, bad input and ``--watch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.fleet.simulate import SimOptions, Simulator
from tests.harness.agent import REPO, AgentRunner, Probe, write_component
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

HELLO = """
def handler(event, context):
    return {"hello": event.get("name")}
"""


NO_INVENTORY = ("--devices-dir", "/nonexistent/devices")


def edgectl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def status_json(broker: MosquittoBroker, *extra: str) -> tuple[int, dict[str, Any]]:
    if "--devices-dir" not in extra:
        extra = (*extra, *NO_INVENTORY)
    done = edgectl("fleet", "status", "--json", "--broker", broker.url, *extra)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in doc["devices"]}


@pytest.fixture
def simulator(mosquitto: MosquittoBroker) -> Iterator[Callable[..., Simulator]]:
    sims: list[Simulator] = []

    def make(devices: int, **options: Any) -> Simulator:
        sim = Simulator(mosquitto.host, mosquitto.port, SimOptions(devices=devices, **options))
        sim.start(timeout=30)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop(graceful=False)


def test_real_agents_and_simulated_devices_look_the_same(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    agent_factory: Callable[..., AgentRunner],
    simulator: Callable[..., Simulator],
) -> None:
    hello = write_component(tmp_path / "components", "hello", HELLO)
    agents = [agent_factory([hello], device=f"pi0{i}").start() for i in (1, 2)]
    simulator(20)
    inventory = tmp_path / "devices"
    inventory.mkdir()
    (inventory / "pi09.yaml").write_text(
        "name: pi09\nclass: raspberry-pi\nthing_name: pi09\ngroups: [field]\n"
        f"broker:\n  url: {mosquitto.url}\n"
    )

    code, doc = status_json(mosquitto, "--devices-dir", str(tmp_path / "none"))
    assert code == 0, doc
    table = rows(doc)
    assert len(table) == 22
    assert doc["backend"] == "direct"
    for name in ("pi01", "pi02", "sim-0001", "sim-0020"):
        assert table[name]["state"] == "online", table[name]
        assert table[name]["backlog"] is not None
        assert table[name]["errors"] == []
    assert set(table["pi01"]["components"]) == {"hello"}
    assert table["pi01"]["components"]["hello"] == {"version": "1.0.0", "state": "running"}
    assert set(table["sim-0001"]["components"]) == {"com.example.Hello"}
    # Both publish their online documents with an expiry, so both are aged by the broker.
    from edge.fleet.reader import read_retained_messages
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    reader = PahoBus(BrokerAddress.parse(mosquitto.url))
    reader.connect(timeout=10)
    try:
        topics = ["edge/pi01/status", "edge/sim-0001/status"]
        held = read_retained_messages(reader, topics, timeout=10)
    finally:
        reader.close()
    for topic in topics:
        expiry_s = json.loads(held[topic].payload)["expiry_s"]
        assert held[topic].expiry is not None and 0 < held[topic].expiry <= expiry_s

    # The inventory's broker is the default, and its devices that never reported show.
    done = edgectl("fleet", "status", "--json", "--devices-dir", str(inventory))
    assert done.returncode == 1, done.stderr
    first = json.loads(done.stdout)["devices"][0]
    assert (first["name"], first["state"]) == ("pi09", "never-seen")

    # --group and --state filter; the exit code follows what is shown.
    code, doc = status_json(mosquitto, "--group", "test", "--devices-dir", str(inventory))
    assert code == 0
    assert sorted(rows(doc)) == ["pi01", "pi02"]
    code, doc = status_json(mosquitto, "--state", "never-seen", "--devices-dir", str(inventory))
    assert (code, sorted(rows(doc))) == (1, ["pi09"])
    assert all(a.alive() for a in agents)


def test_a_killed_agent_is_offline_by_its_last_will(
    tmp_path: Path, mosquitto: MosquittoBroker, agent_factory: Callable[..., AgentRunner]
) -> None:
    hello = write_component(tmp_path / "components", "hello", HELLO)
    agent = agent_factory([hello], device="pi01").start()
    probe = Probe(mosquitto)
    try:
        probe.follow("edge/pi01/status")
        agent.kill()  # SIGKILL: no goodbye, the broker publishes the will
        probe.wait_for(
            lambda ms: any(json.loads(m.payload).get("will") for m in ms if m.payload), 10
        )
    finally:
        probe.close()
    code, doc = status_json(mosquitto)
    row = rows(doc)["pi01"]
    assert code == 1
    assert row["state"] == "offline"
    assert row["errors"] == ["connection lost (last will)"]


def test_a_clean_stop_is_offline_too(
    tmp_path: Path, mosquitto: MosquittoBroker, agent_factory: Callable[..., AgentRunner]
) -> None:
    agent = agent_factory([], device="pi01").start()
    assert agent.terminate() == 0
    code, doc = status_json(mosquitto)
    assert (code, rows(doc)["pi01"]["state"]) == (1, "offline")
    assert rows(doc)["pi01"]["last_seen"] is not None


def test_foreign_and_malformed_documents_are_invalid_status(
    mosquitto: MosquittoBroker, probe: Probe, simulator: Callable[..., Simulator]
) -> None:
    simulator(2)
    probe._client.publish("edge/cam7/status", b"21.5 C", qos=1, retain=True).wait_for_publish(5)
    foreign = json.dumps({"schema": 1, "state": "online", "thing": "someone-else"})
    probe._client.publish("edge/cam8/status", foreign, qos=1, retain=True).wait_for_publish(5)
    code, doc = status_json(mosquitto)
    table = rows(doc)
    assert code == 1
    assert table["cam7"]["state"] == "invalid"
    assert table["cam7"]["errors"] == ["invalid status: not JSON (6 bytes)"]
    assert table["cam8"]["state"] == "invalid"
    assert "does not match the topic's 'cam8'" in table["cam8"]["errors"][0]
    assert [d["name"] for d in doc["devices"]][:2] == ["cam7", "cam8"]  # attention first
    assert table["sim-0001"]["state"] == "online"
    table_out = edgectl("fleet", "status", "--broker", mosquitto.url, *NO_INVENTORY)
    assert table_out.returncode == 1
    assert "invalid status" in table_out.stdout


def test_an_unreachable_broker_is_one_line_within_seconds(tmp_path: Path) -> None:
    from tests.harness.ports import free_port

    done = edgectl("fleet", "status", "--broker", f"mqtt://127.0.0.1:{free_port('127.0.0.1')}")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to broker" in lines[0], done.stderr


def test_usage_errors_exit_2(mosquitto: MosquittoBroker) -> None:
    done = edgectl("fleet", "status", "--broker", mosquitto.url, "--state", "sleeping")
    assert done.returncode == 2
    assert "--state: 'sleeping'" in done.stderr
    done = edgectl("fleet", "status", "--broker", "tcp://nowhere")
    assert done.returncode == 2


def test_watch_shows_a_change_within_two_seconds(
    mosquitto: MosquittoBroker, simulator: Callable[..., Simulator]
) -> None:
    sim = simulator(50)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "fleet", "status", "--watch", "--json",
         "--broker", mosquitto.url, *NO_INVENTORY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
    )  # fmt: skip
    lines: list[tuple[float, dict[str, Any]]] = []
    cond = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with cond:
                lines.append((time.monotonic(), json.loads(line)))
                cond.notify_all()

    threading.Thread(target=read, daemon=True).start()
    try:
        with cond:
            assert cond.wait_for(lambda: len(lines) >= 1, 15), proc.stderr
        assert rows(lines[0][1])["sim-0007"]["state"] == "online"
        sim.drop("sim-0007")  # how fast it shows is measured in bench/bench_fleet.py

        def offline() -> bool:
            return any(rows(d)["sim-0007"]["state"] == "offline" for _, d in lines)

        with cond:
            assert cond.wait_for(offline, 15)
    finally:
        proc.send_signal(2)  # Ctrl-C: the watch ends with the exit code of what it shows
        code = proc.wait(10)
    assert code == 1


def test_age_comes_from_the_broker_not_from_the_device_clock(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # Documents published through the agent's own bus with an expiry, as its status
    # reporter does: one from a device whose clock is 3 h behind (a Pi after a power
    # cut, no time server yet), one whose clock is right but that the broker has held
    # for 1,000 s (the expiry it was sent with is that much shorter than it says).
    from edge.model.status import STATUS_EXPIRY_S
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    def status(thing: str, timestamp: float) -> bytes:
        return json.dumps({"schema": 1, "state": "online", "device": thing, "thing": thing,
                           "timestamp": timestamp, "heartbeat_s": 30,
                           "expiry_s": STATUS_EXPIRY_S}).encode()  # fmt: skip

    bus = PahoBus(BrokerAddress.parse(mosquitto.url))
    bus.connect(timeout=10)
    try:
        now = time.time()
        bus.publish("edge/behind/status", status("behind", now - 3 * 3600), retain=True,
                    timeout=10, expiry=STATUS_EXPIRY_S)  # fmt: skip
        bus.publish("edge/held/status", status("held", now), retain=True, timeout=10,
                    expiry=STATUS_EXPIRY_S - 1000)  # fmt: skip
        delivered: list[int | None] = []
        got = threading.Event()

        def on_status(message: Any) -> None:
            delivered.append(message.expiry)
            got.set()

        bus.subscribe("edge/held/status", on_status, qos=1)
        assert got.wait(10)
        assert delivered[0] is not None and STATUS_EXPIRY_S - 1005 <= delivered[0] <= (
            STATUS_EXPIRY_S - 1000
        )
    finally:
        bus.close()

    code, doc = status_json(mosquitto)
    assert code == 1
    by_name = rows(doc)
    assert by_name["behind"]["state"] == "degraded"
    assert by_name["behind"]["errors"] == ["its clock is 3h behind this machine's"]
    assert by_name["held"]["state"] == "offline"
    assert by_name["held"]["errors"][0].startswith("silent for 17m")

    inventory = tmp_path / "devices"
    inventory.mkdir()
    (inventory / "behind.yaml").write_text(
        "name: behind\nclass: raspberry-pi\nthing_name: behind\n"
        f"broker:\n  url: {mosquitto.url}\n"
    )
    shown = edgectl("device", "show", "behind", "--json", "--devices-dir", str(inventory))
    assert json.loads(shown.stdout)["row"]["state"] == "degraded", shown.stderr
