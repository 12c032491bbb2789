"""The function runtime's costs, each next to its baseline measured in the same run.

- **Cold start**: from ``Worker.start()`` (component loaded) to the first
  invocation's result, for Python and Node.js, against ``python3 -c pass`` and
  ``node -e 0`` (target: at most 3x).
- **Channel overhead**: one invocation of an echo handler with a 100-byte event
  through the worker protocol, against a bare pipe round trip of the same 100
  bytes between two Python processes (target: p50 at most 2x).
- **Idle memory**: RSS of a pinned Python worker, against a bare interpreter
  that imported the same (nothing); and the agent plus its workers for three
  components, against a real broker.

``python -m bench runtime`` writes ``bench/results/runtime.md`` and ``.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Broker, percentiles, write_table
from edge.agent.worker import Worker, WorkerSpec

COLD_RUNS = 15
ROUND_TRIPS = 2000
# The channel and its bare-pipe baseline take turns in this many rounds (samples pooled):
# on a shared VM a process wake-up costs 3 µs or 60 µs depending on where the scheduler
# puts the two processes, and one long run of each would compare two different machines.
CHANNEL_ROUNDS = 4
ONE_CPU_TRIPS = 1000
EVENT = json.dumps({"pad": "x" * 89}).encode()
assert len(EVENT) == 100

PY_APP = "def handler(event, context):\n    return event\n"
JS_APP = "exports.handler = async (event) => event;\n"

PIPE_ECHO = textwrap.dedent(
    """
    import os
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        os.write(1, data)
    """
)


def _time(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t


def _cold(spec: WorkerSpec) -> float:
    t = time.perf_counter()
    worker = Worker(spec, on_log=lambda line: None)
    worker.start()
    out = worker.invoke(request_id="r", topic="t", payload=EVENT, encoding="json", timeout=10)
    elapsed = time.perf_counter() - t
    worker.stop()
    assert out.ok, out.error
    return elapsed


def _median(fn: Any, runs: int = COLD_RUNS) -> float:
    fn()  # warm the page cache
    return float(statistics.median(fn() for _ in range(runs)))


def _spec(folder: Path, language: str) -> WorkerSpec:
    return WorkerSpec(folder=folder, handler="app.handler" if language == "python"
                      else "index.handler", function_name="bench", function_version="1.0.0",
                      language=language, enforce_memory=True)


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[Callable[[int], None]]:
    """With ``cpu``: this thread (and the threads it starts) runs on that CPU only,
    and the function yielded puts a child process there too; without, nothing moves."""
    if cpu is None:
        yield lambda pid: None
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield lambda pid: os.sched_setaffinity(pid, {cpu})
    finally:
        os.sched_setaffinity(0, before)


def _pipe_round_trips(n: int, cpu: int | None = None) -> list[float]:
    with _pinned(cpu) as pin:
        proc = subprocess.Popen([sys.executable, "-c", PIPE_ECHO], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        pin(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
        samples = []
        for i in range(n + 100):
            t = time.perf_counter()
            os.write(wfd, EVENT)
            got = b""
            while len(got) < len(EVENT):
                got += os.read(rfd, 65536)
            if i >= 100:
                samples.append(time.perf_counter() - t)
        proc.stdin.close()
        proc.wait()
    return samples


def _channel_round_trips(spec: WorkerSpec, n: int, cpu: int | None = None) -> list[float]:
    with _pinned(cpu) as pin:
        worker = Worker(spec, on_log=lambda line: None)
        worker.start()
        assert worker.pid is not None
        pin(worker.pid)
        samples = []
        for i in range(n + 100):
            t = time.perf_counter()
            worker.invoke(request_id=f"r{i}", topic="t", payload=EVENT, encoding="json",
                          timeout=10)
            if i >= 100:
                samples.append(time.perf_counter() - t)
        worker.stop()
    return samples


def _channel_rounds(
    spec: WorkerSpec, trips: int, rounds: int, cpu: int | None = None
) -> tuple[list[float], list[float], list[str]]:
    """The bare pipe and the channel, taking turns; samples pooled, and each round's
    p50s (bare/ours, µs) to show how the machine's wake-up cost moved."""
    pipe: list[float] = []
    chan: list[float] = []
    per_round: list[str] = []
    for _ in range(rounds):
        p = _pipe_round_trips(trips // rounds, cpu)
        c = _channel_round_trips(spec, trips // rounds, cpu)
        pipe += p
        chan += c
        (p50_pipe,), (p50_chan,) = percentiles(p, [50]), percentiles(c, [50])
        per_round.append(f"{p50_pipe * 1e6:.1f}/{p50_chan * 1e6:.1f}")
    return pipe, chan, per_round


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _idle_worker_rss(spec: WorkerSpec) -> float:
    worker = Worker(spec, on_log=lambda line: None)
    worker.start()
    worker.invoke(request_id="r", topic="t", payload=EVENT, encoding="json", timeout=10)
    assert worker.pid is not None
    rss = _rss_mb(worker.pid)
    worker.stop()
    return rss


def _bare_python_rss() -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    time.sleep(0.3)  # let it reach its read; nothing to await from outside
    rss = _rss_mb(proc.pid)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    return rss


def _agent_three_components(tmp: Path) -> tuple[float, float, int]:
    import psutil

    from tests.harness.agent import AgentRunner, write_component

    comps = [
        write_component(tmp / "c", f"idle{i}", PY_APP, triggers=f"  - topic: idle/{i}\n")
        for i in range(3)
    ]
    (tmp / "agent").mkdir()
    with Broker() as broker:
        agent = AgentRunner(tmp / "agent", broker, comps)
        agent.start()
        assert agent.proc is not None
        proc = psutil.Process(agent.proc.pid)
        deadline = time.monotonic() + 20
        while len(proc.children(recursive=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # pinned workers start in the background
        time.sleep(0.5)
        children = proc.children(recursive=True)
        agent_rss = proc.memory_info().rss / 2**20
        workers_rss = sum(c.memory_info().rss for c in children) / 2**20
        agent.terminate()
    return agent_rss, workers_rss, len(children)


def _compile_bytecode(handler_dir: Path) -> None:
    """Compile what a worker imports, as an install does (pip writes the bytecode of
    what it installs; a device's first start of a component writes the handler's).
    A checkout run with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile the
    runtime's modules from source in every cold start, which no device does."""
    import compileall

    import edge.runtime

    runtime = Path(edge.runtime.__file__).parent
    compileall.compile_file(str(runtime.parent / "__init__.py"), quiet=1)
    for folder in (runtime, handler_dir):
        compileall.compile_dir(str(folder), maxlevels=0, quiet=1)


def run() -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-runtime-") as tmp_name:
        tmp = Path(tmp_name)
        py_dir, js_dir = tmp / "py", tmp / "js"
        py_dir.mkdir()
        js_dir.mkdir()
        (py_dir / "app.py").write_text(PY_APP)
        (js_dir / "index.js").write_text(JS_APP)
        py_spec, js_spec = _spec(py_dir, "python"), _spec(js_dir, "nodejs")
        _compile_bytecode(py_dir)

        base_py = _median(lambda: _time([sys.executable, "-c", "pass"]))
        cold_py = _median(lambda: _cold(py_spec))
        rows.append({"measure": "cold start, Python", "baseline": "python3 -c pass",
                     "baseline ms": base_py * 1e3, "ours ms": cold_py * 1e3,
                     "ratio": cold_py / base_py, "target": "<= 3x"})
        node = shutil.which("node")
        if node:
            base_js = _median(lambda: _time([node, "-e", "0"]))
            cold_js = _median(lambda: _cold(js_spec))
            rows.append({"measure": "cold start, Node.js", "baseline": "node -e 0",
                         "baseline ms": base_js * 1e3, "ours ms": cold_js * 1e3,
                         "ratio": cold_js / base_js, "target": "<= 3x"})

        pipe_samples, chan_samples, per_round = _channel_rounds(
            py_spec, ROUND_TRIPS, CHANNEL_ROUNDS
        )
        pipe = percentiles(pipe_samples, [50, 99])
        chan = percentiles(chan_samples, [50, 99])
        rows.append({"measure": "channel round trip p50, 100 B", "baseline": "bare pipe",
                     "baseline ms": pipe[0] * 1e3, "ours ms": chan[0] * 1e3,
                     "ratio": chan[0] / pipe[0], "target": "<= 2x"})
        rows.append({"measure": "channel round trip p99, 100 B", "baseline": "bare pipe",
                     "baseline ms": pipe[1] * 1e3, "ours ms": chan[1] * 1e3,
                     "ratio": chan[1] / pipe[1], "target": ""})
        cpus = sorted(os.sched_getaffinity(0))
        one_cpu_round = ""
        if len(cpus) > 1:
            # No wake-up to hide behind: what the Python at both ends costs.
            one_pipe, one_chan, one_rounds = _channel_rounds(
                py_spec, ONE_CPU_TRIPS, 2, cpu=cpus[-1]
            )
            (p50_pipe,), (p50_chan,) = percentiles(one_pipe, [50]), percentiles(one_chan, [50])
            rows.append({"measure": "channel round trip p50, both on one CPU",
                         "baseline": "bare pipe, one CPU", "baseline ms": p50_pipe * 1e3,
                         "ours ms": p50_chan * 1e3, "ratio": p50_chan / p50_pipe,
                         "target": ""})
            one_cpu_round = ", ".join(one_rounds)
        if node:
            jchan = percentiles(_channel_round_trips(js_spec, ROUND_TRIPS), [50])
            rows.append({"measure": "channel round trip p50, Node.js", "baseline": "bare pipe",
                         "baseline ms": pipe[0] * 1e3, "ours ms": jchan[0] * 1e3,
                         "ratio": jchan[0] / pipe[0], "target": ""})

        bare = _bare_python_rss()
        idle = _idle_worker_rss(py_spec)
        rows.append({"measure": "idle pinned Python worker RSS (MB)", "baseline": "bare python3",
                     "baseline ms": "", "baseline MB": bare, "ours MB": idle,
                     "beyond baseline MB": idle - bare, "target": "<= 20 MB beyond"})
        agent_rss, workers_rss, n = _agent_three_components(tmp)
        rows.append({"measure": f"agent + {n} pinned workers, 3 components (MB)",
                     "baseline": "", "ours MB": agent_rss + workers_rss,
                     "agent MB": agent_rss, "workers MB": workers_rss})
    write_table(
        "runtime", rows, title="Function runtime: cold start, channel overhead, idle memory",
        notes=[
            f"cold start: median of {COLD_RUNS} runs after one warm-up; from Worker.start() "
            "to the first result (interpreter, bootstrap, handler import, one invocation), "
            "with the bytecode of the runtime and the handler compiled first, as an install "
            "and a component's first start leave them",
            f"channel: {ROUND_TRIPS} sequential round trips in {CHANNEL_ROUNDS} rounds that "
            "alternate with the baseline's (each after 100 warm-up), pooled; 100-byte JSON "
            "event through the length-prefixed frames on the worker's socket pair (Worker."
            "invoke, as edgectl invoke), echo handler; baseline is the same "
            "100 bytes written to and read back from a child Python process over two pipes",
            "channel p50 per round, bare pipe/ours in µs (shows how the VM's wake-up cost "
            "moves): " + ", ".join(per_round),
            f"one CPU: both processes of each pair pinned to the same CPU ({ONE_CPU_TRIPS} "
            "round trips in 2 alternating rounds; no wake-up of an idle CPU in the loop, so "
            "the Python at both ends is most of the difference); per round: "
            + (one_cpu_round or "not measured (one CPU only)"),
            "memory: VmRSS after one invocation; workers run with the rlimit (no cgroup here)",
        ],
    )


if __name__ == "__main__":
    run()
