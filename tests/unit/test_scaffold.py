"""``edgectl init`` and ``generate-event``: the core and the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.errors import EventError, UsageError
from edge.local.invoke import invoke
from edge.local.scaffold import example_topic, generate_event, init_component
from edge.model.component import load_component

REPO = Path(__file__).resolve().parents[2]


def edgectl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args], cwd=cwd, capture_output=True,
        text=True, timeout=120,
    )


def test_init_python_writes_a_component_that_invoke_runs_at_once(tmp_path: Path) -> None:
    made = init_component("greeter", directory=tmp_path)
    names = sorted(p.relative_to(made.folder).as_posix() for p in made.files)
    assert names == ["app.py", "component.yaml", "events/sample.json", "tests/test_greeter.py"]
    manifest = load_component(made.folder)
    assert (manifest.name, manifest.runtime, manifest.triggers[0].topic) == (
        "greeter", "python3.11", "sensors/+/greeter"
    )
    result = invoke(made.folder, made.folder / "events" / "sample.json", topic=made.topic)
    assert result.outcome.ok
    body = json.loads(result.outcome.body)
    assert body["received"] == {"message": "hello from greeter"}
    assert body["topic"] == "sensors/s1/greeter"


def test_the_scaffolds_own_test_passes(tmp_path: Path) -> None:
    made = init_component("com.example.Counter", directory=tmp_path, trigger="plant/+/count/#")
    assert made.topic == "plant/s1/count/demo"
    test_file = made.folder / "tests" / "test_counter.py"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed" in proc.stdout


@pytest.mark.skipif(shutil.which("node") is None, reason="no `node` binary on PATH")
def test_init_nodejs_writes_a_component_whose_node_test_passes(tmp_path: Path) -> None:
    made = init_component("alerts", runtime="nodejs20.x", directory=tmp_path)
    names = sorted(p.relative_to(made.folder).as_posix() for p in made.files)
    assert names == ["component.yaml", "events/sample.json", "index.js", "test/handler.test.js"]
    assert load_component(made.folder).handler == "index.handler"
    proc = subprocess.run(
        ["node", "--test", str(made.folder / "test")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_init_refuses_an_existing_folder_unless_forced(tmp_path: Path) -> None:
    made = init_component("greeter", directory=tmp_path)
    (made.folder / "app.py").write_text("broken = (\n")
    with pytest.raises(UsageError, match=r"greeter: already exists; pass --force"):
        init_component("greeter", directory=tmp_path)
    init_component("greeter", directory=tmp_path, force=True)
    assert "def handler" in (made.folder / "app.py").read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "NAME: 'a/b' is not a component name"),
        ({"name": "ok", "runtime": "python2.7"}, "--runtime: 'python2.7' is not one of"),
        ({"name": "ok", "trigger": "a/#/b"}, "--trigger: 'a/#/b': '#' must be the last level"),
        ({"name": "ok", "trigger": "a/{thng}"}, "--trigger: 'a/{thng}': unknown placeholder"),
    ],
)
def test_init_bad_input(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        init_component(directory=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_example_topic_fills_wildcards() -> None:
    assert example_topic("a/+/b/#") == "a/s1/b/demo"
    assert example_topic("x/{thing}/y", thing="pi01") == "x/pi01/y"


def test_generate_event_is_the_payload_the_handler_receives() -> None:
    data = generate_event("sensors/s1/hello", '{"name": "Ada", "n": [1, 2]}')
    assert json.loads(data) == {"name": "Ada", "n": [1, 2]}
    assert data.endswith(b"\n")


@pytest.mark.parametrize(
    ("topic", "payload", "error", "message"),
    [
        ("a/+", "{}", UsageError, "--topic: 'a/+': topic may not contain MQTT wildcards"),
        ("a/b", "{nope", EventError, "--payload: not JSON: Expecting property name"),
    ],
)
def test_generate_event_bad_input(
    topic: str, payload: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("+", r"\+")):
        generate_event(topic, payload)


def test_cli_init_invoke_and_generate_event(tmp_path: Path) -> None:
    made = edgectl("init", "greeter", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["folder"] == "components/greeter" and doc["topic"] == "sensors/s1/greeter"
    again = edgectl("init", "greeter", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "edgectl: error: components/greeter: already exists; pass --force to write the "
        "template over it"
    ]
    gen = edgectl(
        "generate-event", "mqtt", "--topic", "sensors/s2/greeter", "--payload", '{"message": "x"}',
        "--out", "components/greeter/events/x.json", cwd=tmp_path,
    )
    assert gen.returncode == 0, gen.stderr
    run = edgectl(
        "invoke", "components/greeter", "--event", "components/greeter/events/x.json",
        "--topic", "sensors/s2/greeter", "--json", cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["result"]["received"] == {"message": "x"}
    bad = edgectl("generate-event", "mqtt", "--topic", "t", "--payload", "{", cwd=tmp_path)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_cli_starts_without_importing_what_invoke_does_not_need() -> None:
    """The cold ``edgectl invoke`` target (at most 3x ``import boto3``, bench/bench_cli.py)
    holds only while building the CLI imports no AWS, MQTT or imaging library."""
    code = (
        "import sys\nfrom edge.cli.main import build_app\nbuild_app()\n"
        "print([m for m in ('boto3', 'botocore', 'moto', 'paho', 'PIL', 'amqtt') "
        "if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.skipif(
    not (REPO / "edge" / "runtime" / "node").exists() or shutil.which("node") is None,
    reason="needs the Node.js worker runtime (edge/runtime/node) and a `node` binary",
)
def test_the_nodejs_scaffold_runs_in_the_nodejs_runtime(tmp_path: Path) -> None:
    made = init_component("alerts", runtime="nodejs20.x", directory=tmp_path)
    result = invoke(made.folder, made.folder / "events" / "sample.json", topic=made.topic)
    assert result.outcome.ok, result.outcome.error
    body = json.loads(result.outcome.body)
    assert body["received"] == {"message": "hello from alerts"}
    assert body["topic"] == made.topic and body["request_id"] == result.request_id
