"""The fleet view at 1,000 devices, the watch latency, and what status reporting costs an agent.

One Mosquitto (``bench.common.Broker``), one simulator process holding N
simulated devices (``edgectl fleet simulate``: one MQTT connection each, one
network thread), and the CLI run as a user runs it:

1. ``edgectl fleet status --json`` over 1,000 devices, from process start to
   the last byte of output (target < 2 s); baselines in the same run: a bare
   ``python -c pass`` and a raw paho client that reads the same 1,000 retained
   documents (subscribe + end-of-burst marker, nothing else). Also on a broker
   with Mosquitto's default queue limits (``max_inflight_messages 20``,
   ``max_queued_messages 1000``), where a QoS 1 read would lose documents.
2. ``edgectl fleet status --watch --json``: time from an event to the first
   output line that shows it (target < 2 s): a component going ``ERRORED`` on a
   simulated device, a simulated device vanishing (its last will), a real agent
   killed with SIGKILL.
3. Agent CPU on status reporting (target < 1% of a core at the default 30 s
   heartbeat): the agent's CPU per status document, measured with a 0.2 s
   heartbeat against the same agent with a 30 s heartbeat, scaled to one
   document per 30 s; and the whole idle agent's CPU at the default heartbeat.

Run: ``python -m bench.bench_fleet`` (or ``./tasks bench fleet``). Writes
``bench/results/fleet.md`` and ``fleet.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import REPO_ROOT, Broker, percentiles, tcp_nodelay, write_table

DEVICES = 1000
RUNS = 9
SCALE = 5000  # one larger fleet, to show where the single-process simulator stands
WATCH_EVENTS = 5
CPU_WINDOW = 30.0  # seconds of agent CPU sampled per heartbeat setting
NO_INVENTORY = ("--devices-dir", "/nonexistent/devices")
TICKS = os.sysconf("SC_CLK_TCK")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli.main", *args]


@contextmanager
def simulator(url: str, devices: int, prefix: str = "sim") -> Iterator[subprocess.Popen[str]]:
    """``edgectl fleet simulate`` in its own process, ready when it says so."""
    proc = subprocess.Popen(
        cli("fleet", "simulate", "--devices", str(devices), "--broker", url, "--prefix", prefix,
            "--heartbeat", "30"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready:"):
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"simulator did not start: {line}{err}")
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def time_status(url: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        cli("fleet", "status", "--json", "--broker", url, *NO_INVENTORY),
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if not done.stdout:
        raise RuntimeError(done.stderr)
    return elapsed, json.loads(done.stdout)


def time_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def raw_read(host: str, port: int) -> tuple[float, int]:
    """The least any reader can do: connect, subscribe at QoS 0, wait for the marker."""
    started = time.perf_counter()
    client = tcp_nodelay(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5))
    marker = f"bench/sync/{uuid.uuid4().hex}"
    seen: list[str] = []
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        else:
            seen.append(msg.topic)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe([("edge/+/status", 0), (marker, 0)])
        c.publish(marker, b"", qos=0)

    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(host, port)
    client.loop_start()
    done.wait(30)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed, len(seen)


def status_rows(broker_options: dict[str, Any], label: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Broker(**broker_options) as broker, simulator(broker.url, DEVICES) as sim:
        sim_rss = rss_mb(sim.pid)
        threads = len(os.listdir(f"/proc/{sim.pid}/task"))
        samples, counts = [], []
        for _ in range(RUNS):
            elapsed, doc = time_status(broker.url)
            samples.append(elapsed)
            counts.append(sum(1 for d in doc["devices"] if d["state"] == "online"))
        raw = [raw_read(broker.host, broker.port) for _ in range(RUNS)]
        python = [time_python() for _ in range(RUNS)]
        p50, p90, worst = percentiles(samples, [50, 90, 100])
        rows.append({
            "measure": f"fleet status --json, {DEVICES} devices ({label})",
            "p50 s": p50, "p90 s": p90, "max s": worst, "target": "< 2 s",
            "devices read": min(counts),
        })  # fmt: skip
        rows.append({
            "measure": f"baseline: raw paho read of the same documents ({label})",
            "p50 s": percentiles([r[0] for r in raw], [50])[0],
            "max s": max(r[0] for r in raw), "messages read": min(r[1] for r in raw),
        })  # fmt: skip
        rows.append({
            "measure": "baseline: python -c pass",
            "p50 s": percentiles(python, [50])[0], "max s": max(python),
        })  # fmt: skip
        rows.append({
            "measure": f"simulator process, {DEVICES} devices ({label})",
            "memory MB": round(sim_rss, 1), "threads": threads,
        })  # fmt: skip
    return rows


class Watch:
    """``fleet status --watch --json`` in a subprocess; lines timestamped on arrival."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            cli("fleet", "status", "--watch", "--json", "--broker", url, *NO_INVENTORY),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )  # fmt: skip
        self.lines: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            rows = {d["name"]: d for d in doc["devices"]}
            with self.cond:
                self.lines.append((time.perf_counter(), rows))
                self.cond.notify_all()

    def wait(self, check: Callable[[dict[str, dict[str, Any]]], bool], after: float) -> float:
        def found() -> float | None:
            for t, rows in self.lines:
                if t >= after and check(rows):
                    return t
            return None

        with self.cond:
            self.cond.wait_for(lambda: found() is not None, 30)
            t = found()
        if t is None:
            raise RuntimeError("the watch never showed the change")
        return t - after

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


def watch_rows() -> list[dict[str, Any]]:
    from edge.fleet.simulate import SimOptions, Simulator
    from tests.harness.agent import AgentRunner

    rows: list[dict[str, Any]] = []
    with Broker() as broker, simulator(broker.url, DEVICES):
        # A second, in-process simulator gives us handles on a few devices to poke.
        pokes = Simulator(broker.host, broker.port,
                          SimOptions(devices=WATCH_EVENTS * 2, prefix="poke"))  # fmt: skip
        pokes.start()
        with tempfile.TemporaryDirectory(prefix="edgectl-bench-fleet-") as tmp:
            agents = []
            for i in range(WATCH_EVENTS):
                (Path(tmp) / f"a{i}").mkdir()
                agents.append(AgentRunner(Path(tmp) / f"a{i}", broker, [], device=f"agent{i}"))
            for agent in agents:
                agent.args[agent.args.index("--heartbeat") + 1] = "30"
                agent.start()
            watch = Watch(broker.url)
            try:
                with watch.cond:
                    watch.cond.wait_for(lambda: bool(watch.lines), 30)
                errored, wills, kills = [], [], []
                for i in range(WATCH_EVENTS):
                    device = pokes.devices[i]
                    t0 = time.perf_counter()
                    pokes.call(lambda d=device: d.set_state("com.example.Hello", "ERRORED"))
                    errored.append(watch.wait(
                        lambda r, n=device.thing: r[n]["state"] == "degraded", t0))  # fmt: skip
                    device = pokes.devices[WATCH_EVENTS + i]
                    t0 = time.perf_counter()
                    pokes.drop(device.thing)
                    wills.append(watch.wait(
                        lambda r, n=device.thing: r[n]["state"] == "offline", t0))  # fmt: skip
                    t0 = time.perf_counter()
                    agents[i].kill()
                    kills.append(watch.wait(
                        lambda r, n=f"agent{i}": r[n]["state"] == "offline", t0))  # fmt: skip
            finally:
                watch.close()
                pokes.stop(graceful=False)
                for agent in agents:
                    if agent.alive():
                        agent.kill()
    for label, samples in (
        ("component ERRORED on a simulated device", errored),
        ("simulated device vanishes (last will)", wills),
        ("real agent killed with SIGKILL (last will)", kills),
    ):
        p50, worst = percentiles(samples, [50, 100])
        rows.append({"measure": f"--watch shows: {label}, {DEVICES + 3 * WATCH_EVENTS} devices",
                     "p50 s": p50, "max s": worst, "target": "< 2 s"})  # fmt: skip
    return rows


def cpu_rows() -> list[dict[str, Any]]:
    from tests.harness.agent import AgentRunner

    rows: list[dict[str, Any]] = []
    with Broker() as broker, tempfile.TemporaryDirectory(prefix="edgectl-bench-cpu-") as tmp:
        results: dict[float, tuple[float, int]] = {}
        for heartbeat in (30.0, 0.2):
            name = f"cpu{str(heartbeat).replace('.', '_')}"
            (Path(tmp) / name).mkdir()
            agent = AgentRunner(Path(tmp) / name, broker, [], device=name)
            agent.args[agent.args.index("--heartbeat") + 1] = str(heartbeat)
            agent.start()
            counter = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            sent = [0]
            counter.on_message = lambda *_, s=sent: s.__setitem__(0, s[0] + 1)
            counter.connect(broker.host, broker.port)
            counter.subscribe(f"edge/{name}/status", 0)
            counter.loop_start()
            time.sleep(2)  # settle: imports and the first documents are not the steady state
            assert agent.proc is not None
            before, n0, t0 = cpu_seconds(agent.proc.pid), sent[0], time.perf_counter()
            time.sleep(CPU_WINDOW)
            used, docs = cpu_seconds(agent.proc.pid) - before, sent[0] - n0
            wall = time.perf_counter() - t0
            counter.loop_stop()
            counter.disconnect()
            agent.terminate()
            results[heartbeat] = (used / wall, docs)
        idle_rate, _ = results[30.0]
        fast_rate, fast_docs = results[0.2]
        per_doc = max(fast_rate - idle_rate, 0.0) * CPU_WINDOW / max(fast_docs, 1)
        rows.append({
            "measure": "agent CPU per status document (0.2 s vs 30 s heartbeat)",
            "value": f"{per_doc * 1000:.2f} ms", "documents": fast_docs,
        })  # fmt: skip
        rows.append({
            "measure": "status reporting at the default 30 s heartbeat",
            "value": f"{per_doc / 30 * 100:.4f} % of a core", "target": "< 1 %",
        })  # fmt: skip
        rows.append({
            "measure": "whole idle agent at the default heartbeat (upper bound)",
            "value": f"{idle_rate * 100:.3f} % of a core", "target": "< 1 %",
        })  # fmt: skip
    return rows


def scale_rows() -> list[dict[str, Any]]:
    with Broker() as broker:
        started = time.perf_counter()
        with simulator(broker.url, SCALE) as sim:
            ready = time.perf_counter() - started
            rss, threads = rss_mb(sim.pid), len(os.listdir(f"/proc/{sim.pid}/task"))
            samples = [time_status(broker.url)[0] for _ in range(3)]
    return [
        {"measure": f"simulator process, {SCALE} devices: start to all connected",
         "p50 s": ready, "memory MB": round(rss, 1), "threads": threads},
        {"measure": f"fleet status --json, {SCALE} devices (no target)",
         "p50 s": percentiles(samples, [50])[0], "max s": max(samples)},
    ]  # fmt: skip


def run() -> None:
    rows = status_rows({}, "test broker config")
    rows += status_rows({"max_inflight_messages": 20, "max_queued_messages": 1000},
                        "Mosquitto default queue limits")  # fmt: skip
    rows += watch_rows()
    rows += cpu_rows()
    rows += scale_rows()
    path = write_table(
        "fleet",
        rows,
        title="Fleet status at 1,000 devices, watch latency, status reporting cost",
        notes=[
            "fleet status: wall time from spawning `python -m edge.cli.main fleet status --json` "
            f"to its exit with the output read, {RUNS} runs; devices are `edgectl fleet simulate` "
            "devices (one MQTT connection each) in one other process.",
            "raw paho read: one client in this process, connect + subscribe edge/+/status and a "
            "marker topic at QoS 0 + publish the marker, until the marker returns (messages "
            "read can exceed 1,000: live heartbeats arrive during the read).",
            "--watch: from the event (state change published, socket dropped, SIGKILL sent) to "
            "the first output line showing it, timed on arrival of the line.",
            "agent CPU: /proc/<pid>/stat utime+stime over 30 s of an idle agent (no components).",
        ],
    )
    print(path.read_text())


if __name__ == "__main__":
    run()
