"""``edgectl build``: a component folder in, artifacts and a recipe out.

The steps: load the manifest; vendor dependencies for every target platform
(in parallel, cached); group platforms whose vendored trees are identical, so
a pure-Python component yields one zip for all of them; write one
deterministic zip per group; render and validate the recipe.

A rebuild of an unchanged component is a cache hit: the fingerprint of the
inputs (every source file's bytes, the dependency files, the platforms, this
builder's version) is compared with the one stored beside the artifacts, and
when it matches and the zips still have their recorded digests nothing is
written. That is what keeps an unchanged component from being uploaded or
redeployed twice, and a rebuild well under a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edge
from edge.build import vendor
from edge.build.platforms import TargetPlatform
from edge.build.recipe import (
    UNPUBLISHED_BUCKET,
    UNPUBLISHED_VERSION,
    BuiltArtifact,
    recipe_bytes,
    render_recipe,
)
from edge.build.validate import validate_recipe
from edge.build.zipper import TOP_LEVEL_EXCLUDED, Entry, iter_tree, sha256_file, write_zip
from edge.errors import BuildError
from edge.model.component import ComponentManifest, load_component

log = logging.getLogger(__name__)

BUILD_FORMAT = "1"
STATE_FILE = "build.json"

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: how the CLI shows vendoring and zipping."""


def _no_progress(step: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class BuildOptions:
    platforms: tuple[TargetPlatform, ...]
    out_dir: Path | None = None  # default: <component>/.edge/build
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "edgectl")
    refresh: bool = False  # re-run pip/npm even when a vendored tree is cached
    bucket: str | None = None  # shown in the local recipe; publish renders its own
    max_workers: int = 4


@dataclass(frozen=True)
class BuildResult:
    manifest: ComponentManifest
    version: str
    artifacts: tuple[BuiltArtifact, ...]
    recipe: dict[str, Any]
    recipe_path: Path
    recipe_size: int
    cached: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.manifest.name,
            "version": self.version,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "recipe": str(self.recipe_path),
            "recipe_bytes": self.recipe_size,
            "artifacts": [
                {
                    "path": str(a.path),
                    "sha256": a.sha256,
                    "bytes": a.size,
                    "platforms": [p.label for p in a.platforms],
                    "pure": a.pure,
                }
                for a in self.artifacts
            ],
        }


def default_out_dir(folder: Path) -> Path:
    return folder / ".edge" / "build"


def python_version(runtime: str) -> str:
    """``python3.11`` -> ``3.11``."""
    return runtime.removeprefix("python")


def source_entries(manifest: ComponentManifest) -> list[Entry]:
    return list(iter_tree(manifest.path, top_level_excluded=TOP_LEVEL_EXCLUDED))


def fingerprint(
    manifest: ComponentManifest, entries: Sequence[Entry], platforms: Sequence[TargetPlatform]
) -> str:
    digest = hashlib.sha256(f"{BUILD_FORMAT}\0{edge.__version__}\0".encode())
    for platform in platforms:
        digest.update(repr(platform).encode() + b"\0")
    for entry in entries:
        digest.update(entry.arcname.encode() + (b"\0x" if entry.executable else b"\0-"))
        digest.update(hashlib.sha256(entry.source.read_bytes()).digest())
    return digest.hexdigest()


def build_component(
    folder: Path | str, options: BuildOptions, progress: Progress = _no_progress
) -> BuildResult:
    """Build ``folder`` for ``options.platforms``; see the module docstring for the steps."""
    started = time.perf_counter()
    manifest = load_component(folder)
    out_dir = options.out_dir or default_out_dir(manifest.path)
    entries = source_entries(manifest)
    key = fingerprint(manifest, entries, options.platforms)
    artifacts = None if options.refresh else _cached_artifacts(out_dir, key)
    cached = artifacts is not None
    if artifacts is None:
        trees = _vendor_all(manifest, options, progress)
        artifacts = _write_artifacts(manifest, entries, trees, out_dir, progress)
        _save_state(out_dir, key, artifacts)
    version = UNPUBLISHED_VERSION if manifest.version == "NEXT_PATCH" else manifest.version
    recipe = render_recipe(
        manifest, artifacts, version=version, bucket=options.bucket or UNPUBLISHED_BUCKET
    )
    data = recipe_bytes(recipe)
    recipe_path = out_dir / f"{manifest.name}.recipe.json"
    validate_recipe(recipe, len(data), source=str(recipe_path))
    if not recipe_path.is_file() or recipe_path.read_bytes() != data:
        recipe_path.write_bytes(data)
    return BuildResult(
        manifest=manifest,
        version=version,
        artifacts=tuple(artifacts),
        recipe=recipe,
        recipe_path=recipe_path,
        recipe_size=len(data),
        cached=cached,
        seconds=time.perf_counter() - started,
    )


def _vendor_all(
    manifest: ComponentManifest, options: BuildOptions, progress: Progress
) -> list[vendor.VendoredTree]:
    platforms = options.platforms
    requirements = manifest.path / "requirements.txt"
    package_json = manifest.path / "package.json"
    cache = options.cache_dir / "vendor"

    def one(platform: TargetPlatform) -> vendor.VendoredTree:
        if manifest.language == "python" and requirements.is_file():
            return vendor.vendor_python(
                requirements, platform, python_version(manifest.runtime), cache,
                refresh=options.refresh,
            )  # fmt: skip
        if manifest.language == "nodejs" and package_json.is_file():
            return vendor.vendor_node(package_json, platform, cache, refresh=options.refresh)
        return vendor.no_dependencies(platform)

    total = len(platforms)
    progress("vendor", 0, total)
    results: list[vendor.VendoredTree] = []
    # npm shares one cache directory and is not safe to run concurrently; pip is.
    workers = 1 if manifest.language == "nodejs" else max(1, min(options.max_workers, total))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, tree in enumerate(pool.map(one, platforms), start=1):
            results.append(tree)
            progress("vendor", done, total)
    return results


def _artifact_name(
    manifest: ComponentManifest,
    groups: list[list[vendor.VendoredTree]],
    group: list[vendor.VendoredTree],
) -> str:
    if len(groups) == 1:
        return f"{manifest.name}.zip"
    labels = "_".join(tree.platform.label for tree in group)
    return f"{manifest.name}-{labels}.zip"


def _write_artifacts(
    manifest: ComponentManifest,
    entries: list[Entry],
    trees: list[vendor.VendoredTree],
    out_dir: Path,
    progress: Progress,
) -> list[BuiltArtifact]:
    groups: dict[str, list[vendor.VendoredTree]] = {}
    for tree in trees:
        groups.setdefault(tree.digest, []).append(tree)
    ordered = list(groups.values())
    source_names = {entry.arcname for entry in entries}
    artifacts: list[BuiltArtifact] = []
    progress("zip", 0, len(ordered))
    for done, group in enumerate(ordered, start=1):
        tree = group[0]
        deps = list(iter_tree(tree.path)) if tree.path is not None else []
        for dep in deps:
            if dep.arcname in source_names:
                raise BuildError(
                    f"{manifest.path / dep.arcname}: a vendored dependency installs the same "
                    f"path {dep.arcname!r}; rename the component's file"
                )
        dest = out_dir / _artifact_name(manifest, ordered, group)
        sha = write_zip([*entries, *deps], dest)
        artifacts.append(
            BuiltArtifact(
                path=dest,
                sha256=sha,
                size=dest.stat().st_size,
                platforms=tuple(t.platform for t in group),
                pure=all(t.pure for t in group),
            )
        )
        progress("zip", done, len(ordered))
    keep = {a.path.name for a in artifacts}
    for stale in out_dir.glob("*.zip"):
        if stale.name not in keep:
            stale.unlink()
    return artifacts


def _save_state(out_dir: Path, key: str, artifacts: Sequence[BuiltArtifact]) -> None:
    state = {
        "fingerprint": key,
        "artifacts": [
            {
                "file": a.path.name,
                "sha256": a.sha256,
                "size": a.size,
                "platforms": [p.label for p in a.platforms],
                "platform_fields": [[p.os, p.architecture, p.machine, p.libc] for p in a.platforms],
                "pure": a.pure,
            }
            for a in artifacts
        ],
    }
    (out_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _cached_artifacts(out_dir: Path, key: str) -> list[BuiltArtifact] | None:
    """The recorded artifacts when the fingerprint matches and every zip is intact."""
    try:
        state = json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != key:
        return None
    artifacts: list[BuiltArtifact] = []
    for item in state.get("artifacts", []):
        path = out_dir / item["file"]
        if not path.is_file() or path.stat().st_size != item["size"]:
            return None
        if sha256_file(path) != item["sha256"]:
            return None
        platforms = tuple(TargetPlatform(*fields) for fields in item["platform_fields"])
        artifacts.append(
            BuiltArtifact(path, item["sha256"], item["size"], platforms, bool(item["pure"]))
        )
    return artifacts or None
