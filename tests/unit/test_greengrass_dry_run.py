"""``--dry-run``: the exact calls as JSON lines, reads marked, nothing sent, no credentials."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.cli.main import main
from tests.unit.test_build_component import make_component

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted(p.parent for p in ROOT.glob("components/*/component.yaml"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No credentials, no config: a dry run must not need them."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("EDGECTL_CACHE_DIR", str(tmp_path / "cache"))


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def copy_component(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_publish_dry_run_prints_every_call(sample, tmp_path, capsys):
    folder = copy_component(sample, tmp_path)
    code = main(["publish", str(folder), "--bucket", "art-bucket", "--dry-run"])
    assert code == 0
    calls = lines(capsys.readouterr().out)
    ops = [(c["service"], c["operation"], c.get("read", False)) for c in calls]
    assert ops[0] == ("s3", "HeadBucket", True)
    assert ("greengrassv2", "ListComponents", True) in ops
    assert ("s3", "PutObject", False) in ops
    assert ops[-1] == ("greengrassv2", "CreateComponentVersion", False)
    recipe = json.loads(calls[-1]["params"]["inlineRecipe"])
    assert recipe["ComponentName"]
    put = next(c for c in calls if c["operation"] == "PutObject")
    assert put["params"]["Body"]["$bytes"] > 0
    assert set(calls[0]) == {"service", "operation", "params", "read"}


def test_deploy_dry_run_to_a_device(tmp_path, capsys):
    folder = make_component(tmp_path)
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "pi01.yaml").write_text(
        "name: pi01\nclass: raspberry-pi\nthing_name: pi01-thing\n"
        "broker: {url: mqtt://localhost:1883}\ncloud: {region: eu-west-1}\n"
    )
    code = main(
        ["deploy", str(folder), "--device", "pi01", "--devices-dir", str(devices), "--dry-run",
         "--backend", "greengrass"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    calls = lines(out.out)
    assert [c["operation"] for c in calls] == [
        "GetCoreDevice", "DescribeThing", "ListDeployments", "CreateDeployment",
    ]  # fmt: skip
    assert all(c.get("read") for c in calls[:-1]) and "read" not in calls[-1]
    params = calls[-1]["params"]
    assert params["targetArn"] == "arn:aws:iot:eu-west-1:<account-id>:thing/pi01-thing"
    assert params["components"] == {"com.example.Test": {"componentVersion": "1.0.0"}}
    assert params["deploymentPolicies"]["failureHandlingPolicy"] == "ROLLBACK"


def test_deploy_dry_run_to_a_group_with_rollout(tmp_path, capsys):
    code = main(
        ["deploy", "--backend", "greengrass", "--group", "pis",
         "--component", "com.example.Test=1.2.3",
         "--max-per-minute", "20", "--abort-threshold", "5", "--dry-run"]
    )  # fmt: skip
    assert code == 0
    create = lines(capsys.readouterr().out)[-1]
    job = create["params"]["iotJobConfiguration"]
    assert job["jobExecutionsRolloutConfig"] == {"maximumPerMinute": 20}
    assert job["abortConfig"]["criteriaList"][0]["thresholdPercentage"] == 5.0


def test_publish_without_bucket_exits_2(tmp_path, capsys):
    folder = make_component(tmp_path)
    assert main(["publish", str(folder), "--dry-run"]) == 2
    assert "--bucket" in capsys.readouterr().err


def test_build_json(tmp_path, capsys):
    folder = make_component(tmp_path)
    assert main(["build", str(folder), "--platform", "linux/aarch64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["artifacts"][0]["platforms"] == ["linux-aarch64"]


def test_build_bad_platform_exits_2(tmp_path, capsys):
    folder = make_component(tmp_path)
    assert main(["build", str(folder), "--platform", "sparc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'sparc'" in err
