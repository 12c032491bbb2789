"""Rollout plans are data: batches per strategy, merges, unchanged devices, dry-run text."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.deploy.direct import LocalArtifact, NewComponent, batches_for, plan_rollout
from edge.errors import DeployError, UsageError
from edge.model.deployment import (
    ArtifactRef,
    ComponentSpec,
    DeploymentReport,
    DesiredState,
)
from edge.model.device import parse_device

NAMES = [f"d{i}" for i in range(7)]


@pytest.mark.parametrize(
    ("strategy", "batch", "canary", "sizes"),
    [
        ("all-at-once", None, None, [7]),
        ("rolling", 3, None, [3, 3, 1]),
        ("canary", None, 2, [2, 5]),
        ("canary", 2, 1, [1, 2, 2, 2]),
    ],
)
def test_batches(strategy, batch, canary, sizes):
    batches = batches_for(NAMES, strategy, batch=batch, canary=canary)
    assert [len(b) for b in batches] == sizes
    assert [n for b in batches for n in b] == NAMES


def test_unknown_strategy_is_a_usage_error():
    with pytest.raises(UsageError, match="--strategy: 'yolo'"):
        batches_for(NAMES, "yolo", batch=None, canary=None)


def device(name: str, tmp_path: Path):
    data = {"name": name, "class": "generic-linux",
            "platform": {"os": "linux", "architecture": "x86_64"},
            "broker": {"url": "mqtt://localhost"}}  # fmt: skip
    return parse_device(data, source=f"{name}.yaml", path=tmp_path / "devices" / f"{name}.yaml")


def comp(version: str, sha: str) -> NewComponent:
    art = LocalArtifact(Path("x.zip"), ArtifactRef(sha, 10))
    return NewComponent("c", version, {"linux-x86_64": art})


def current(thing: str, version: str, sha: str, ident: str = "d-old") -> DesiredState:
    spec = ComponentSpec("c", version, ArtifactRef(sha, 10))
    other = ComponentSpec("keep", "3.0.0", ArtifactRef("e" * 64, 5))
    return DesiredState(thing, ident, 100, 1.0, {"c": spec, "keep": other},
                        previous={"c": ComponentSpec("c", "0.1.0", ArtifactRef("9" * 64, 1))})


def test_merge_keeps_other_components_and_uploads_only_what_changed(tmp_path):
    devs = [device("a", tmp_path), device("b", tmp_path)]
    now = {"a": current("a", "1.0.0", "1" * 64), "b": current("b", "2.0.0", "2" * 64)}
    reports = {"b": DeploymentReport("b", "d-old", 100, "SUCCEEDED")}
    plan = plan_rollout(devs, components=[comp("2.0.0", "2" * 64)], current=now, reports=reports)
    a, b = plan.devices["a"], plan.devices["b"]
    assert a.send and set(a.desired.components) == {"c", "keep"}
    assert a.desired.sequence > 100 and a.desired.previous == now["a"].components
    assert a.changes == ("~ c 1.0.0 -> 2.0.0",)
    assert not b.send  # already runs it and said so
    assert [u.ref.sha256 for u in plan.uploads] == ["2" * 64]
    text = "\n".join(plan.lines())
    assert "b: up to date, nothing sent" in text and "~ c 1.0.0 -> 2.0.0" in text


def test_remove_and_rollback(tmp_path):
    devs = [device("a", tmp_path)]
    now = {"a": current("a", "1.0.0", "1" * 64)}
    plan = plan_rollout(devs, remove=["keep"], current=now, reports={})
    assert set(plan.devices["a"].desired.components) == {"c"}
    with pytest.raises(UsageError, match="not deployed on a"):
        plan_rollout(devs, remove=["nope"], current=now, reports={})
    back = plan_rollout(devs, restore_previous=True, current=now, reports={})
    assert back.devices["a"].desired.components["c"].version == "0.1.0"
    with pytest.raises(DeployError, match="nothing to roll back to"):
        plan_rollout(devs, restore_previous=True, current={}, reports={})
