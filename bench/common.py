"""What every benchmark shares: brokers, percentiles, result tables, machine facts.

Benchmarks are only comparable when they run the same way: against the same
kind of broker (the test harness's Mosquitto, Nagle off on both ends), reported
with the same statistics, and stamped with the machine they ran on. Keeping
that here means a new benchmark is just its measurement loop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from tests.harness.mosquitto import MosquittoBroker

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def tcp_nodelay(client: mqtt.Client) -> mqtt.Client:
    """Disable Nagle on every socket ``client`` opens, reconnects included.

    Without it a QoS 1 round trip on loopback costs ~88 ms of delayed-ACK wait
    instead of ~0.4 ms, and every latency number would measure the kernel.
    Same helper as ``tests.harness.mosquitto.tcp_nodelay``, kept here so the
    relay subprocess does not import pytest.
    """

    def _on_socket_open(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = _on_socket_open
    return client


def percentiles(samples: Sequence[float], ps: Sequence[float]) -> list[float]:
    """Percentiles of ``samples`` (linear interpolation, numpy's default), one per ``ps``.

    Written out rather than imported so the bench has no numpy dependency.
    """
    if not samples:
        raise ValueError("percentiles of an empty sample")
    ordered = sorted(samples)
    last = len(ordered) - 1
    result = []
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside 0..100")
        rank = p / 100 * last
        low, high = math.floor(rank), math.ceil(rank)
        result.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mosquitto_version() -> str:
    try:
        from tests.harness.mosquitto import find_mosquitto

        out = subprocess.run(
            [find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except Exception:  # a missing broker must not stop a report from being written
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ").strip() or "unknown"


def machine_info() -> dict[str, str]:
    """The facts a reader needs before comparing two result files."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": _cpu_model(),
        "nproc": str(os.cpu_count() or 0),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": _mosquitto_version(),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def write_table(
    name: str,
    rows: list[dict[str, Any]],
    *,
    title: str,
    notes: Sequence[str] = (),
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write ``rows`` as ``<results_dir>/<name>.md`` (for people) and ``.json`` (for tools).

    Columns are the union of the rows' keys in first-seen order, so a row may
    leave a cell empty (a baseline with no "agent" column, say).
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    lines = [f"# {title}", ""]
    if columns:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
        lines.append("")
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".")
    md_path = results_dir / f"{name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    payload = {"name": name, "title": title, "notes": list(notes), "machine": info, "rows": rows}
    (results_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return md_path


@contextlib.contextmanager
def Broker(**options: Any) -> Iterator[MosquittoBroker]:  # noqa: N802 - reads as a resource
    """A started test-harness Mosquitto in a temp folder, stopped and removed on exit.

    Benchmarks use the very broker config the integration tests use (Nagle off,
    large queues, loopback only), so a number here and a test there describe the
    same system. ``options`` are ``MosquittoBroker``'s (``persistence=True``, ...).
    """
    from tests.harness.mosquitto import MosquittoBroker

    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        broker = MosquittoBroker(Path(tmp), **options)
        with broker:
            yield broker
