"""Recipes: the published schema (lower-cased keys) as a second opinion, and our own rules."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import ALIASES, DEFAULT_PLATFORMS, MUSL_AARCH64, parse_platforms
from edge.build.recipe import RUNTIME_COMPONENT, recipe_bytes, runtime_version_requirement
from edge.build.validate import MAX_RECIPE_BYTES, validate_recipe
from edge.errors import BuildError, ValidationError
from tests.unit.test_build_component import make_component

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_IN_SHARED = Path("shared") / "reference" / "greengrass-recipe-schema.json"


def schema_candidates() -> list[Path]:
    """Where the reference schema may be: ``$EDGECTL_RECIPE_SCHEMA``; ``shared/`` beside
    this checkout (how CI lays it out); or beside the checkout this one was cloned
    from (a throwaway clone in a temporary folder)."""
    found = [Path(p) for p in [os.environ.get("EDGECTL_RECIPE_SCHEMA")] if p]
    found.append(ROOT.parent / SCHEMA_IN_SHARED)
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "remote", "get-url", "origin"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if origin and "://" not in origin and Path(origin).is_dir():
        found.append(Path(origin).resolve().parent / SCHEMA_IN_SHARED)
    return found
SAMPLES = sorted(ROOT.glob("components/*/component.yaml"))


def lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    candidates = schema_candidates()
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        pytest.fail(f"reference schema missing; looked at {', '.join(map(str, candidates))}")
    return json.loads(path.read_text())


def check_schema(schema: dict[str, Any], recipe: dict[str, Any]) -> None:
    jsonschema.validate(lower_keys(recipe), schema)
    assert len(recipe_bytes(recipe)) < MAX_RECIPE_BYTES


ALL_PLATFORM_SETS = [["raspberry-pi"], ["snowball-edge"], ["linux/armv7l"], list(ALIASES)]


@pytest.mark.parametrize("platforms", ALL_PLATFORM_SETS, ids=lambda p: "+".join(p)[:40])
def test_generated_recipe_validates_against_the_published_schema(tmp_path, schema, platforms):
    folder = make_component(tmp_path)
    opts = BuildOptions(parse_platforms(platforms), cache_dir=tmp_path / "cache")
    result = build_component(folder, opts)
    check_schema(schema, result.recipe)
    on_disk = json.loads(result.recipe_path.read_text())
    assert on_disk == result.recipe


@pytest.mark.parametrize("manifest", SAMPLES, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("platform", sorted(ALIASES))
def test_every_sample_component_builds_and_validates_for_every_platform(
    tmp_path, schema, manifest, platform
):
    opts = BuildOptions(
        parse_platforms([platform]), out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"
    )
    result = build_component(manifest.parent, opts, lambda *_: None)
    check_schema(schema, result.recipe)
    validate_recipe(result.recipe, result.recipe_size, source=str(manifest))


def test_there_is_at_least_one_sample_component():
    assert SAMPLES, "components/*/component.yaml: none found"


def test_runtime_component_recipe_validates(schema):
    path = ROOT / "recipes" / "com.edgectl.Runtime.yaml"
    recipe = yaml.safe_load(path.read_text())
    check_schema(schema, recipe)
    validate_recipe(recipe, len(path.read_bytes()), source=str(path))
    assert recipe["ComponentName"] == RUNTIME_COMPONENT
    import edge

    assert recipe["ComponentVersion"] == edge.__version__


def test_recipe_shape(tmp_path):
    folder = make_component(tmp_path)
    opts = BuildOptions(
        (*DEFAULT_PLATFORMS, MUSL_AARCH64), cache_dir=tmp_path / "cache", bucket="my-bucket"
    )
    recipe = build_component(folder, opts).recipe
    assert list(recipe)[:3] == ["RecipeFormatVersion", "ComponentName", "ComponentVersion"]
    deps = recipe["ComponentDependencies"]
    assert deps[RUNTIME_COMPONENT]["VersionRequirement"] == runtime_version_requirement()
    assert "aws.greengrass.TokenExchangeService" in deps  # results go to S3
    manifests = recipe["Manifests"]
    assert manifests[0]["Platform"] == {"os": "linux", "architecture": "aarch64", "libc": "musl"}
    artifact = manifests[1]["Artifacts"][0]
    assert artifact["Uri"].startswith("s3://my-bucket/com.example.Test/1.0.0/")
    assert artifact["Unarchive"] == "ZIP" and artifact["Algorithm"] == "SHA-256"
    script = manifests[1]["Lifecycle"]["Run"]["Script"]
    assert script.startswith(f"{{{RUNTIME_COMPONENT}:work:path}}/venv/bin/python3 -m edge.agent")
    assert "--greengrass --component {artifacts:decompressedPath}/com.example.Test" in script
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    policies = config["accessControl"]["aws.greengrass.ipc.pubsub"]
    sub = policies["com.example.Test:pubsub:subscribe"]
    pub = policies["com.example.Test:pubsub:publish"]
    assert sub["operations"] == ["aws.greengrass#SubscribeToTopic"]
    assert sub["resources"] == ["sensors/+/temp"]
    assert pub["resources"] == sorted(
        ["out/{iot:thingName}/com.example.Test", "edge/{iot:thingName}/com.example.Test/errors"]
    )
    assert config["function"]["handler"] == "app.handler"


def good_recipe() -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Ok",
        "ComponentVersion": "1.0.0",
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Artifacts": [
                    {
                        "Uri": "s3://bucket-a/key.zip",
                        "Digest": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                        "Algorithm": "SHA-256",
                    }
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("ComponentName",), "com example", "ComponentName"),
        (("ComponentVersion",), "1.0", "ComponentVersion"),
        # ``$`` would accept a trailing newline; the rules match the whole value.
        (("ComponentName",), "com.example\n", "ComponentName"),
        (("ComponentVersion",), "1.0.0\n", "ComponentVersion"),
        (("Manifests", 0, "Platform"), {}, "Manifests[0].Platform.os"),
        (("Manifests", 0, "Artifacts", 0, "Uri"), "https://x/y", "Manifests[0].Artifacts[0].Uri"),
        (("Manifests", 0, "Artifacts", 0, "Digest"), "abc", "Manifests[0].Artifacts[0].Digest"),
        (("Manifests",), [], "Manifests"),
    ],
)
def test_validator_names_recipe_field_and_value(path, value, field):
    recipe = good_recipe()
    validate_recipe(recipe, 100, source="r.json")
    target: Any = recipe
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError) as info:
        validate_recipe(recipe, 100, source="r.json")
    message = str(info.value)
    assert message.startswith(f"r.json: {field}: ")
    assert "\n" not in message


def test_missing_required_key():
    recipe = good_recipe()
    del recipe["Manifests"]
    with pytest.raises(ValidationError, match="Manifests: required"):
        validate_recipe(recipe, 100, source="r.json")


def test_recipe_over_16000_bytes_is_refused(tmp_path):
    big = {f"VAR_{i}": "x" * 200 for i in range(80)}
    env = "environment:\n" + "".join(f"  {k}: {v}\n" for k, v in big.items())
    folder = make_component(tmp_path)
    with (folder / "component.yaml").open("a") as fh:
        fh.write(env)
    with pytest.raises(BuildError, match=r"recipe is \d+ bytes, over Greengrass's 16000-byte"):
        build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))


def test_component_name_outside_the_pattern_is_refused(tmp_path):
    folder = make_component(tmp_path, name="com/example")
    with pytest.raises(ValidationError, match="name"):
        build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))


def test_version_that_is_not_semver_is_refused(tmp_path):
    folder = make_component(tmp_path, version="1.0")
    with pytest.raises(ValidationError, match="version"):
        build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))


def test_runtime_version_requirement():
    assert runtime_version_requirement("0.1.3") == ">=0.1.0 <0.2.0"
    assert runtime_version_requirement("2.4.0") == ">=2.4.0 <3.0.0"
