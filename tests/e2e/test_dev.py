"""``edgectl dev``: a local device with real MQTT triggers, reloading on save."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.local.dev import DevEvent, DevSession, changed_files, running_session, snapshot
from edge.local.scaffold import init_component
from tests.e2e.devproc import DevProcess, edgectl, project

pytestmark = pytest.mark.e2e


def test_dev_runs_reloads_survives_a_broken_manifest_and_stops_cleanly(tmp_path: Path) -> None:
    root = project(tmp_path)
    made = init_component("greeter", directory=root / "components")
    dev = DevProcess(root)
    try:
        loaded = dev.wait_kind("loaded", component="greeter")  # reported before "ready"
        assert loaded["example_topic"] == "sensors/s1/greeter"
        ready = dev.wait_kind("ready")
        assert ready["broker"].startswith("mqtt://127.0.0.1:")
        assert json.loads((root / ".edge" / "dev.json").read_text())["broker"] == ready["broker"]

        # A real MQTT message, fired from another process, runs the handler.
        sent = edgectl("publish", "sensors/s1/greeter", '{"n": 1}', cwd=root)
        assert sent.returncode == 0, sent.stderr
        assert "(the running edgectl dev (.edge/dev.json))" in sent.stderr
        first = dev.wait_kind("invocation", component="greeter")
        assert first["ok"] is True and first["topic"] == "sensors/s1/greeter"
        assert first["result"]["received"] == {"n": 1}
        assert first["request_id"] and first["duration_ms"] >= 0
        log = dev.wait_kind("log", component="greeter")
        assert "received {'n': 1} on sensors/s1/greeter" in log["line"]

        # Saving new code reloads the component; the next message runs the new code.
        app = made.folder / "app.py"
        app.write_text(app.read_text().replace('"received": event', '"received": event, "v": 2'))
        reloaded = dev.wait_kind("reloaded", component="greeter")
        assert reloaded["changed"] == ["app.py"] and reloaded["reload_ms"] < 1000
        edgectl("publish", "sensors/s2/greeter", '{"n": 2}', cwd=root)
        second = dev.wait_kind("invocation", component="greeter")
        assert second["result"]["v"] == 2 and second["topic"] == "sensors/s2/greeter"

        # A manifest that fails validation: one error, the old version keeps running.
        manifest = made.folder / "component.yaml"
        good = manifest.read_text()
        manifest.write_text(good.replace("runtime: python3.11", "runtime: python2.7"))
        invalid = dev.wait_kind("invalid")
        assert "runtime: 'python2.7' is not a supported runtime" in invalid["error"]
        assert invalid["running"] == "greeter 0.1.0"
        edgectl("publish", "sensors/s3/greeter", '{"n": 3}', cwd=root)
        assert dev.wait_kind("invocation", component="greeter")["result"]["received"] == {"n": 3}
        manifest.write_text(good.replace("version: 0.1.0", "version: 0.2.0"))
        assert dev.wait_kind("reloaded", component="greeter")["version"] == "0.2.0"

        # A handler error is printed as a Lambda-style error record.
        edgectl("publish", "sensors/s4/greeter", "not json", cwd=root)
        failed = dev.wait_kind("invocation", component="greeter")
        assert failed["ok"] is False and failed["error"]["errorType"] == "Runtime.InvalidEvent"
    finally:
        code = dev.stop()
    assert code == 0, dev.stderr()
    assert not (root / ".edge" / "dev.json").exists()
    assert dev.wait_kind("stopped", timeout=5)
    assert not [e for e in dev.seen if e["event"] == "garbage"]


def test_a_component_invalid_at_start_is_loaded_once_fixed(tmp_path: Path) -> None:
    root = project(tmp_path)
    made = init_component("late", directory=root / "components")
    manifest = made.folder / "component.yaml"
    good = manifest.read_text()
    manifest.write_text(good.replace("handler: app.handler", "handler: main.handler"))
    dev = DevProcess(root, str(made.folder))
    try:
        invalid = dev.wait_kind("invalid")
        assert "handler: 'main.handler' needs main.py" in invalid["error"]
        assert invalid["running"] is None
        dev.wait_kind("ready")
        manifest.write_text(good)
        dev.wait_kind("reloaded", component="late")
        edgectl("publish", "sensors/x/late", "{}", cwd=root)
        assert dev.wait_kind("invocation", component="late")["ok"] is True
    finally:
        assert dev.stop() == 0


def test_dev_text_output_is_readable(tmp_path: Path) -> None:
    root = project(tmp_path)
    init_component("greeter", directory=root / "components")
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "dev"], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("watching for changes"):
            break
    edgectl("publish", "sensors/s1/greeter", '{"n": 7}', cwd=root)
    for line in proc.stdout:
        lines.append(line)
        if "greeter  sensors/s1/greeter" in line:
            break
    proc.send_signal(2)
    assert proc.wait(30) == 0
    text = "".join(lines)
    assert "loaded greeter 0.1.0" in text
    assert "try: edgectl publish sensors/s1/greeter '{}'" in text
    assert "greeter | received {'n': 7} on sensors/s1/greeter" in text
    assert ' ms  ok {"received": {"n": 7}' in text
    assert "edgectl: INFO" not in proc.stderr.read()  # type: ignore[union-attr]


# -- the core, in-process --------------------------------------------------------------------


SLOW = """
    import time

    VERSION = 1

    def handler(event, context):
        time.sleep(0.01)
        return {"n": event["n"], "version": VERSION}
"""


def test_a_reload_in_the_middle_of_a_burst_loses_no_message(tmp_path: Path) -> None:
    root = project(tmp_path)
    folder = root / "components" / "burst"
    folder.mkdir()
    (folder / "app.py").write_text(textwrap.dedent(SLOW))
    (folder / "component.yaml").write_text(
        "name: burst\nversion: 1.0.0\nruntime: python3.11\nhandler: app.handler\n"
        "triggers:\n  - topic: burst/in\nlimits: {max_instances: 1}\n"
    )
    seen: list[dict[str, Any]] = []
    cond = threading.Condition()

    def on_event(event: DevEvent) -> None:
        if event.kind == "invocation":
            with cond:
                seen.append(event.fields)
                cond.notify_all()

    with DevSession(root, [folder], on_event=on_event) as dev:
        from edge.cli.cmd_mqtt import publish_message

        total = 60
        for n in range(total):
            publish_message("burst/in", json.dumps({"n": n}), root=root)
        with cond:
            assert cond.wait_for(lambda: len(seen) >= 5, 20)
        (folder / "app.py").write_text(textwrap.dedent(SLOW).replace("VERSION = 1", "VERSION = 2"))
        assert dev.poll() == ["burst"]
        with cond:
            done = cond.wait_for(
                lambda: {s["result"]["n"] for s in seen if s["ok"]} == set(range(total)), 30
            )
        assert done, sorted({s["result"]["n"] for s in seen if s["ok"]})
        versions = [s["result"]["version"] for s in seen]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)  # no old code after the switch
        assert running_session(root) is not None
    assert running_session(root) is None


def test_snapshot_ignores_what_never_needs_a_reload(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    for ignored in ("events", "tests", "__pycache__", ".edge"):
        (tmp_path / ignored).mkdir()
        (tmp_path / ignored / "f.json").write_text("{}")
    before = snapshot(tmp_path)
    assert list(before) == ["app.py"]
    time.sleep(0.01)  # a distinct mtime_ns on filesystems with coarse timestamps
    (tmp_path / "app.py").write_text("x = 22\n")
    (tmp_path / "lib.py").write_text("")
    assert changed_files(before, snapshot(tmp_path)) == ["app.py", "lib.py"]


def test_a_stale_dev_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ".edge").mkdir()
    dead_pid = 2**22 + 12345  # above the default pid_max
    (tmp_path / ".edge" / "dev.json").write_text(
        json.dumps({"broker": "mqtt://x:1", "pid": dead_pid})
    )
    assert running_session(tmp_path) is None
