"""The agent's command line: its two modes and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.agent.main import greengrass_device, parse_args
from edge.errors import EdgeError


def test_direct_mode_needs_config_and_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--component", "components/hello"])
    assert exc.value.code == 2
    assert "--config and --data-dir are required" in capsys.readouterr().err


def test_greengrass_mode_needs_a_component(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--greengrass"])
    assert "--greengrass needs at least one --component" in capsys.readouterr().err


def test_greengrass_device_comes_from_the_nucleus_environment() -> None:
    device = greengrass_device({"AWS_IOT_THING_NAME": "core-7", "AWS_REGION": "eu-west-1"})
    assert device.name == device.thing_name == "core-7"
    assert device.cloud.region == "eu-west-1"
    assert device.cloud.s3_endpoint is None  # AWS itself, credentials via the TES


def test_greengrass_device_without_thing_name_is_a_clear_error() -> None:
    with pytest.raises(EdgeError, match="AWS_IOT_THING_NAME is not set"):
        greengrass_device({})


def test_bad_device_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "pi01.yaml"
    bad.write_text("name: pi01\nclass: raspberry-pi\nbroker: {url: 'tcp:/x'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge.agent.main", "--config", str(bad),
         "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "broker.url: 'tcp:/x' is not an mqtt:// or mqtts:// URL" in lines[0]
    assert "pi01.yaml" in lines[0]
