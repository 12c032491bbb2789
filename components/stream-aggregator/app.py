"""Stream aggregator: minute windows per sensor, exactly once across restarts.

A reading: ``{"sensor": "t1", "ts": 1767225600.5, "value": 21.5}`` on
``telemetry/<site>/readings`` (``sensor`` defaults to ``<site>``, ``ts`` to
the time of arrival). Each sensor has one open window (``WINDOW_SECONDS``,
default 60, aligned to the epoch). A reading for a later window closes the
open one; the invocation returns the closed window::

    {"sensor": "t1", "window_start": "2026-01-01T00:00:00Z", "window_seconds": 60,
     "count": 3, "min": 20.5, "max": 22.0, "mean": 21.33}

and returns ``None`` (nothing published, nothing stored) otherwise. A reading
for an already closed window is late: it is counted in the state and dropped.

Exactly once across a crash: the agent keeps a record until its invocation
completes and runs it again after a restart, with the same
``aws_request_id`` (derived from the intake sequence number). The state file
remembers the outcome of the last requests it applied, so a re-run returns
the same window instead of applying the reading twice; the agent's result id
is keyed by the same sequence number, so the window lands in DynamoDB once.
The state is written to a temporary file, fsynced and renamed over the old
one: after a power cut it is either the old state or the new, never half.
"""

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

REMEMBERED = 64  # request ids whose outcome is kept for re-runs


def _state_path():
    folder = os.environ.get("EDGE_STATE_DIR")
    if not folder:
        raise RuntimeError("EDGE_STATE_DIR is not set (the agent sets it for every component)")
    return Path(folder) / "windows.json"


def load_state(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"windows": {}, "applied": [], "late": 0}


def save_state(path, state):
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(state, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _reading(event, topic):
    if not isinstance(event, dict):
        raise ValueError("a reading is a JSON object")
    value = event.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"value: {value!r} is not a number")
    sensor = event.get("sensor", topic.split("/")[1])
    if not isinstance(sensor, str) or not sensor:
        raise ValueError(f"sensor: {sensor!r} is not a non-empty string")
    ts = event.get("ts", time.time())
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise ValueError(f"ts: {ts!r} is not a number of seconds")
    return sensor, float(ts), float(value)


def _closed(sensor, window, width):
    start = datetime.fromtimestamp(window["start"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "sensor": sensor,
        "window_start": start,
        "window_seconds": width,
        "count": window["count"],
        "min": window["min"],
        "max": window["max"],
        "mean": round(window["sum"] / window["count"], 6),
    }


def apply(state, sensor, ts, value, width):
    """Fold one reading into ``state``; return the window it closed, or None."""
    start = int(ts // width) * width
    windows = state["windows"]
    open_window = windows.get(sensor)
    closed = None
    if open_window is not None and start < open_window["start"]:
        state["late"] = state.get("late", 0) + 1
        return None
    if open_window is not None and start > open_window["start"]:
        closed = _closed(sensor, open_window, width)
        open_window = None
    if open_window is None:
        open_window = {"start": start, "count": 0, "min": value, "max": value, "sum": 0.0}
    open_window["count"] += 1
    open_window["min"] = min(open_window["min"], value)
    open_window["max"] = max(open_window["max"], value)
    open_window["sum"] += value
    windows[sensor] = open_window
    return closed


def handler(event, context):
    width = int(os.environ.get("WINDOW_SECONDS", "60"))
    path = _state_path()
    state = load_state(path)
    request_id = context.aws_request_id
    for done in state["applied"]:
        if done["request_id"] == request_id:
            return done["closed"]  # a re-run after a crash: same answer, no second count
    sensor, ts, value = _reading(event, context.client_context.custom["subject"])
    closed = apply(state, sensor, ts, value, width)
    state["applied"] = [*state["applied"], {"request_id": request_id, "closed": closed}][
        -REMEMBERED:
    ]
    save_state(path, state)
    if closed is not None:
        print(f"closed {sensor} {closed['window_start']}: {closed['count']} reading(s)")
    return closed
