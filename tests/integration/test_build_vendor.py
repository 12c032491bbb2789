"""Vendoring with pip for target platforms (needs the package index, as a user's build does)."""

from __future__ import annotations

import zipfile

import pytest

from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import DEFAULT_PLATFORMS, LINUX_AARCH64, LINUX_AMD64, parse_platforms
from edge.errors import BuildError
from tests.unit.test_build_component import make_component

pytestmark = pytest.mark.integration

ELF_MACHINE = {"aarch64": 183, "x86_64": 62, "armv7l": 40}


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def with_requirements(tmp_path, requirements: str):
    folder = make_component(tmp_path)
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_compiled_wheel_for_aarch64_is_vendored_from_this_machine(tmp_path):
    folder = with_requirements(tmp_path, "charset-normalizer==3.4.0\n")
    opts = BuildOptions((LINUX_AARCH64, LINUX_AMD64), cache_dir=tmp_path / "cache")
    result = build_component(folder, opts)
    assert len(result.artifacts) == 2  # compiled: one artifact per platform
    for artifact in result.artifacts:
        (platform,) = artifact.platforms
        assert not artifact.pure
        with zipfile.ZipFile(artifact.path) as zf:
            shared = [n for n in zf.namelist() if n.endswith(".so")]
            assert shared, zf.namelist()
            for name in shared:
                assert elf_machine(zf.read(name)) == ELF_MACHINE[platform.machine]
            assert not any(n.startswith("bin/") for n in zf.namelist())
    manifests = result.recipe["Manifests"]
    uris = {m["Platform"]["architecture"]: m["Artifacts"][0]["Uri"] for m in manifests}
    assert uris["aarch64"] != uris["amd64"]


def test_pure_dependency_for_three_platforms_gives_one_zip(tmp_path):
    folder = with_requirements(tmp_path, "six==1.16.0\n")
    result = build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))
    assert len(result.artifacts) == 1
    assert result.artifacts[0].pure
    with zipfile.ZipFile(result.artifacts[0].path) as zf:
        assert "six.py" in zf.namelist()
    again = build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))
    assert again.cached and again.artifacts[0].sha256 == result.artifacts[0].sha256


def test_vendored_build_is_deterministic_across_caches(tmp_path):
    a = build_component(
        with_requirements(tmp_path / "a", "six==1.16.0\n"),
        BuildOptions((LINUX_AARCH64,), cache_dir=tmp_path / "ca"),
    )
    b = build_component(
        with_requirements(tmp_path / "b", "six==1.16.0\n"),
        BuildOptions((LINUX_AARCH64,), cache_dir=tmp_path / "cb"),
    )
    assert a.artifacts[0].sha256 == b.artifacts[0].sha256


def test_requirement_without_a_wheel_for_the_platform_names_package_and_platform(tmp_path):
    folder = with_requirements(tmp_path, "psutil==6.1.0\n")
    with pytest.raises(BuildError) as info:
        build_component(
            folder, BuildOptions(parse_platforms(["linux/armv7l"]), cache_dir=tmp_path / "c")
        )
    message = str(info.value)
    assert "requirements.txt: psutil==6.1.0: no binary wheel for linux-armv7l" in message
    assert "\n" not in message


def test_node_dependencies_are_vendored_with_npm(tmp_path):
    folder = make_component(tmp_path, runtime="nodejs20.x", handler="index.handler")
    (folder / "package.json").write_text(
        '{"name": "t", "version": "1.0.0", "dependencies": {"ms": "2.1.3"},'
        ' "devDependencies": {"left-pad": "1.3.0"}}'
    )
    result = build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))
    assert len(result.artifacts) == 1
    with zipfile.ZipFile(result.artifacts[0].path) as zf:
        names = zf.namelist()
    assert "node_modules/ms/index.js" in names
    assert not any(n.startswith("node_modules/left-pad/") for n in names)
