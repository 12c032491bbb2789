"""``edgectl publish``: an MQTT message (TOPIC PAYLOAD) or a component to Greengrass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.devproc import REPO, edgectl, project
from tests.harness.agent import Probe, write_device

pytestmark = pytest.mark.e2e


def test_topic_and_payload_go_to_the_named_broker(
    tmp_path: Path, mosquitto: Any, probe: Probe
) -> None:
    probe.follow("sensors/#")
    frame = tmp_path / "frame.bin"
    frame.write_bytes(bytes(range(256)))
    proc = edgectl("publish", "sensors/s1/hello", '{"name": "Ada"}', "--broker", mosquitto.url,
                   "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "topic": "sensors/s1/hello", "bytes": 15, "broker": mosquitto.url,
        "broker_from": "--broker", "retain": False,
    }
    binary = edgectl("publish", "sensors/s1/frame", f"@{frame}", "--broker", mosquitto.url,
                     cwd=tmp_path)
    assert binary.returncode == 0, binary.stderr
    msgs = probe.wait_count("sensors/s1/", 2)
    assert msgs[0].payload == b'{"name": "Ada"}'
    assert msgs[1].payload == bytes(range(256))


def test_without_a_dev_session_the_device_files_broker_is_used(
    tmp_path: Path, mosquitto: Any, probe: Probe
) -> None:
    root = project(tmp_path)
    write_device(root / "devices" / "local.yaml", mosquitto.url, name="local")
    probe.follow("a/b")
    proc = edgectl("publish", "a/b", cwd=root)  # no payload: {}
    assert proc.returncode == 0, proc.stderr
    assert f"to {mosquitto.url} (devices/local.yaml)" in proc.stderr
    assert probe.wait_count("a/b", 1)[0].payload == b"{}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "a/+/b", "{}"), "TOPIC: 'a/+/b': topic may not contain MQTT wildcards"),
        (("publish", "a/b", "@missing.bin", "--broker", "mqtt://127.0.0.1:1"),
         "PAYLOAD: missing.bin: No such file or directory"),
        (("publish", "a/b", "{}"), "no broker: pass --broker URL, start `edgectl dev`"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = edgectl(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_a_component_folder_still_publishes_to_greengrass() -> None:
    proc = edgectl("publish", "components/hello", cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "edgectl: error: --bucket: required; name the S3 bucket for artifacts"
    )


def test_greengrass_options_never_turn_a_mistyped_folder_into_a_topic(tmp_path: Path) -> None:
    proc = edgectl("publish", "components/helo", "--bucket", "b", "--dry-run", cwd=REPO)
    assert proc.returncode == 2
    assert "components/helo" in proc.stderr and "published" not in proc.stderr
