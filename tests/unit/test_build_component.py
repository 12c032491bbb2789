"""Building a component: determinism, the rebuild cache, bad input."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest

from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import DEFAULT_PLATFORMS, LINUX_AARCH64, parse_platforms
from edge.errors import UsageError, ValidationError

MANIFEST = """\
name: {name}
version: {version}
runtime: {runtime}
handler: {handler}
triggers:
  - topic: sensors/+/temp
outputs:
  - topic: out/{{thing}}/{{component}}
results:
  s3: {{bucket: results-bucket}}
"""


def make_component(
    root: Path,
    *,
    name: str = "com.example.Test",
    version: str = "1.0.0",
    runtime: str = "python3.11",
    handler: str = "app.handler",
    files: dict[str, str] | None = None,
) -> Path:
    folder = root / "component"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "component.yaml").write_text(
        MANIFEST.format(name=name, version=version, runtime=runtime, handler=handler)
    )
    default = {"app.py": "def handler(event, context):\n    return event\n"}
    if runtime.startswith("nodejs"):
        default = {"index.js": "exports.handler = async (event) => event;\n"}
    for rel, text in (files if files is not None else default).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def options(tmp_path: Path, **kw: object) -> BuildOptions:
    return BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "cache", **kw)  # type: ignore[arg-type]


def test_component_without_dependencies_builds_one_artifact_for_all_platforms(tmp_path):
    folder = make_component(tmp_path)
    result = build_component(folder, options(tmp_path))
    assert len(result.artifacts) == 1
    artifact = result.artifacts[0]
    assert set(artifact.platforms) == set(DEFAULT_PLATFORMS)
    assert artifact.pure
    with zipfile.ZipFile(artifact.path) as zf:
        assert zf.namelist() == ["app.py", "component.yaml"]
    assert result.recipe_path.is_file()
    assert len(result.recipe["Manifests"]) == 3


def test_same_inputs_in_different_folders_give_the_same_digest(tmp_path):
    a = make_component(tmp_path / "a")
    b = make_component(tmp_path / "b")
    os.utime(b / "app.py", (1_000_000, 1_000_000))  # another mtime must not matter
    ra = build_component(a, options(tmp_path))
    rb = build_component(b, options(tmp_path))
    assert ra.artifacts[0].sha256 == rb.artifacts[0].sha256
    assert ra.artifacts[0].path.read_bytes() == rb.artifacts[0].path.read_bytes()
    assert str(tmp_path) not in ra.artifacts[0].path.read_bytes().decode("latin-1")


def test_unchanged_rebuild_is_a_cache_hit_that_writes_nothing_and_is_fast(tmp_path):
    folder = make_component(tmp_path)
    first = build_component(folder, options(tmp_path))
    stamp = first.artifacts[0].path.stat().st_mtime_ns
    started = time.perf_counter()
    second = build_component(folder, options(tmp_path))
    elapsed = time.perf_counter() - started
    assert second.cached and not first.cached
    assert elapsed < 1.0
    assert second.artifacts[0].sha256 == first.artifacts[0].sha256
    assert second.artifacts[0].path.stat().st_mtime_ns == stamp


def test_changed_source_gives_a_new_digest(tmp_path):
    folder = make_component(tmp_path)
    first = build_component(folder, options(tmp_path))
    (folder / "app.py").write_text("def handler(event, context):\n    return 1\n")
    second = build_component(folder, options(tmp_path))
    assert not second.cached
    assert second.artifacts[0].sha256 != first.artifacts[0].sha256


def test_tampered_artifact_is_rebuilt(tmp_path):
    folder = make_component(tmp_path)
    first = build_component(folder, options(tmp_path))
    first.artifacts[0].path.write_bytes(b"garbage")
    second = build_component(folder, options(tmp_path))
    assert not second.cached
    assert second.artifacts[0].sha256 == first.artifacts[0].sha256


def test_build_output_sample_events_and_caches_stay_out_of_the_artifact(tmp_path):
    folder = make_component(
        tmp_path,
        files={
            "app.py": "def handler(e, c):\n    return e\n",
            "lib/util.py": "X = 1\n",
            "lib/build/keep.py": "Y = 2\n",
            "events/sample.json": "{}",
            "__pycache__/app.cpython-311.pyc": "",
            "node_modules/x/index.js": "",
        },
    )
    result = build_component(folder, options(tmp_path))
    with zipfile.ZipFile(result.artifacts[0].path) as zf:
        names = zf.namelist()
        infos = zf.infolist()
    assert names == ["app.py", "component.yaml", "lib/build/keep.py", "lib/util.py"]
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos)
    assert all((info.external_attr >> 16) & 0o777 == 0o644 for info in infos)


def test_executable_bit_is_kept_as_0755(tmp_path):
    folder = make_component(tmp_path, files={"app.py": "def handler(e, c): pass\n", "run.sh": ""})
    (folder / "run.sh").chmod(0o700)
    result = build_component(folder, options(tmp_path))
    with zipfile.ZipFile(result.artifacts[0].path) as zf:
        assert (zf.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755


def test_missing_handler_file_is_a_one_line_validation_error(tmp_path):
    folder = make_component(tmp_path, files={"other.py": ""})
    with pytest.raises(ValidationError) as info:
        build_component(folder, options(tmp_path))
    message = str(info.value)
    assert "component.yaml" in message and "handler" in message and "app.py" in message
    assert "\n" not in message


def test_nodejs_component_without_package_json_builds(tmp_path):
    folder = make_component(tmp_path, runtime="nodejs20.x", handler="index.handler")
    result = build_component(folder, options(tmp_path))
    with zipfile.ZipFile(result.artifacts[0].path) as zf:
        assert "index.js" in zf.namelist()


def test_next_patch_builds_with_the_unpublished_version(tmp_path):
    folder = make_component(tmp_path, version="NEXT_PATCH")
    result = build_component(folder, options(tmp_path))
    assert result.version == "0.0.0"
    assert result.recipe["ComponentVersion"] == "0.0.0"


def test_platform_aliases_and_unknown_platform():
    assert parse_platforms(["linux/aarch64", "linux/arm64"]) == (LINUX_AARCH64,)
    assert len(parse_platforms(["raspberry-pi"])) == 2
    with pytest.raises(UsageError, match="'sparc'"):
        parse_platforms(["sparc"])


def test_build_json_lists_artifacts_digests_and_recipe(tmp_path):
    folder = make_component(tmp_path)
    data = build_component(folder, options(tmp_path)).to_json()
    assert data["component"] == "com.example.Test"
    assert data["recipe"].endswith(".recipe.json")
    assert len(data["artifacts"][0]["sha256"]) == 64
    assert data["artifacts"][0]["platforms"] == ["linux-aarch64", "linux-armv7l", "linux-x86_64"]
