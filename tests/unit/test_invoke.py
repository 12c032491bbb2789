"""``edgectl invoke``: the core function, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge.errors import EventError, UsageError, ValidationError
from edge.local.invoke import default_topic, invoke, read_event
from edge.model.component import load_component

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "components" / "hello"
FIXTURES = Path(__file__).parent / "fixtures" / "workers"


def component(tmp_path: Path, handler: str, triggers: str = "[{topic: sensors/+/in}]") -> Path:
    folder = tmp_path / "comp"
    folder.mkdir()
    shutil.copy(FIXTURES / "app.py", folder / "app.py")
    (folder / "component.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: com.example.Fixture
            version: 0.1.0
            runtime: python3.11
            handler: {handler}
            triggers: {triggers}
            limits: {{timeout: 5s}}
            environment: {{GREETING: hi}}
            """
        )
    )
    return folder


def event_file(tmp_path: Path, content: bytes, name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# -- the core ------------------------------------------------------------------------


def test_invoke_hello() -> None:
    lines: list[str] = []
    logged = threading.Event()

    def on_log(line: str) -> None:
        lines.append(line)
        if "greeting Ada from local" in line:
            logged.set()

    result = invoke(HELLO, HELLO / "events" / "hello.json", on_log=on_log)
    assert result.outcome.ok
    assert result.component == "com.example.Hello"
    assert result.version == "1.0.0"
    assert result.topic == "sensors/local/hello"
    assert result.cold_start_ms > 0
    doc = result.to_json()
    assert doc["result"] == {
        "greeting": "Hello, Ada!",
        "sensor": "local",
        "request_id": result.request_id,
        "function": "com.example.Hello:1.0.0",
    }
    assert doc["content_type"] == "application/json"
    assert logged.wait(5)


def test_topic_and_thing_options(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.describe")
    result = invoke(folder, None, topic="sensors/s42/in", thing="pi07")
    assert result.topic == "sensors/s42/in"
    assert result.to_json()["result"]["subject"] == "sensors/s42/in"


def test_manifest_environment_reaches_the_handler(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.env")
    result = invoke(folder, event_file(tmp_path, b'{"name": "GREETING"}'))
    assert result.to_json()["result"] == "hi"
    thing = invoke(folder, event_file(tmp_path, b'{"name": "AWS_IOT_THING_NAME"}'), thing="pi9")
    assert thing.to_json()["result"] == "pi9"


def test_invoke_gives_the_handler_the_agents_lambda_environment(tmp_path: Path) -> None:
    """What passes under ``edgectl invoke`` must see what the agent's workers see."""
    from edge.agent.worker import lambda_environment, worker_spec
    from edge.model.component import load_component

    folder = component(tmp_path, "app.env")
    manifest = load_component(folder)
    expected = lambda_environment(manifest, thing="pi9", device="pi9")
    assert expected["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == str(manifest.limits.memory_mb)
    for name, value in expected.items():
        got = invoke(folder, event_file(tmp_path, json.dumps({"name": name}).encode()),
                     thing="pi9")
        assert got.to_json()["result"] == value, name
    (tmp_path / "d").mkdir()
    arn = invoke(component(tmp_path / "d", "app.describe"), None).to_json()["result"]
    assert arn["invoked_function_arn"] == worker_spec(
        manifest, thing="local", device="local"
    ).invoked_function_arn


def test_no_event_sends_an_empty_object(tmp_path: Path) -> None:
    result = invoke(component(tmp_path, "app.echo"), None)
    assert result.to_json()["result"] == {}


def test_binary_trigger_accepts_any_event_file_and_reports_result_bytes(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.to_bytes", "[{topic: cams/+/frames, encoding: binary}]")
    result = invoke(folder, event_file(tmp_path, b"\x89PNG\x00", "frame.bin"))
    assert result.topic == "cams/local/frames"
    doc = result.to_json()
    assert doc["content_type"] == "application/octet-stream"
    assert doc["result_bytes"] == len(b"\x00\x01binary\xff")
    assert "result" not in doc


def test_none_result(tmp_path: Path) -> None:
    doc = invoke(component(tmp_path, "app.returns_none"), None).to_json()
    assert doc["ok"] is True
    assert doc["result"] is None
    assert doc["content_type"] == "none"


def test_handler_error_is_in_the_invocation(tmp_path: Path) -> None:
    result = invoke(component(tmp_path, "app.boom"), event_file(tmp_path, b'{"sensor": "s1"}'))
    assert not result.outcome.ok
    doc = result.to_json()
    assert doc["ok"] is False
    assert doc["error"]["errorType"] == "KeyError"
    assert "result" not in doc


def test_timeout_option(tmp_path: Path) -> None:
    result = invoke(component(tmp_path, "app.hang"), None, timeout=0.3)
    assert result.to_json()["error"]["errorType"] == "Runtime.Timeout"


def test_import_failure_is_in_the_invocation(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.echo")
    (folder / "app.py").write_text(
        "import edge_tests_no_such_module\n\ndef echo(e, c):\n    pass\n"
    )
    result = invoke(folder, None)
    assert result.to_json()["error"]["errorType"] == "Runtime.ImportModuleError"


def test_default_topic_without_triggers(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.echo", triggers="[]")
    manifest = load_component(folder)
    assert default_topic(manifest, "pi01") == "edge/pi01/com.example.Fixture/invoke"


def test_default_topic_fills_wildcards() -> None:
    assert default_topic(load_component(HELLO), "pi01") == "sensors/local/hello"


def test_event_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    path = event_file(tmp_path, b"{'name': 'Ada'}", "bad.json")
    with pytest.raises(EventError) as info:
        invoke(HELLO, path)
    message = str(info.value)
    assert message.startswith(f"{path}: not JSON")
    assert "\n" not in message
    assert isinstance(info.value, ValidationError)
    assert info.value.exit_code == 2


def test_missing_event_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(UsageError, match="nope.json: event file not found"):
        invoke(HELLO, path)


def test_read_event_returns_the_raw_bytes(tmp_path: Path) -> None:
    path = event_file(tmp_path, b' {"a": 1} \n')
    assert read_event(path, "json") == b' {"a": 1} \n'
    assert read_event(event_file(tmp_path, b"\xff", "x.bin"), "binary") == b"\xff"


# -- the real CLI ----------------------------------------------------------------------


def edgectl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_invoke_hello_json() -> None:
    proc = edgectl(
        "invoke", "components/hello", "--event", "components/hello/events/hello.json", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert doc["component"] == "com.example.Hello"
    assert doc["result"]["greeting"] == "Hello, Ada!"
    assert doc["result"]["request_id"] == doc["request_id"]
    assert "greeting Ada from local" in proc.stderr  # the handler's print, not in the JSON


def test_cli_handler_error_exits_1(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.boom")
    event = event_file(tmp_path, b'{"sensor": "s1"}')
    proc = edgectl("invoke", str(folder), "--event", str(event), "--json")
    assert json.loads(proc.stdout)["error"]["errorType"] == "KeyError"
    assert proc.returncode == 1


def test_cli_malformed_manifest_exits_2_with_one_line(tmp_path: Path) -> None:
    folder = component(tmp_path, "app.echo")
    manifest = folder / "component.yaml"
    manifest.write_text(manifest.read_text().replace("triggers:", "trigers:"))
    proc = edgectl("invoke", str(folder), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "component.yaml" in lines[0]
    assert "trigers" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_bad_event_exits_2_naming_the_file(tmp_path: Path) -> None:
    event = event_file(tmp_path, b"not json", "broken.json")
    proc = edgectl("invoke", "components/hello", "--event", str(event))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "broken.json" in proc.stderr
