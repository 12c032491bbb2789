"""Vendoring a component's dependencies for one target platform.

Python requirements are installed with pip for the *target's* wheel tags
(``--only-binary=:all: --platform ... --target``), never for the build
machine, so a Pi artifact built on an x86_64 laptop carries aarch64 wheels.
Binary wheels only: building from source would compile for the wrong CPU. A
requirement with no wheel for the target fails with its name and the platform.

Node.js dependencies are installed with ``npm install --omit=dev`` into a
staging copy of ``package.json``; install scripts are not run (they would run
on the build machine) and ``--cpu``/``--os``/``--libc`` select the target's
optional binaries.

Each vendored tree is cached under a key of (dependency file bytes, platform
tags, interpreter), so rebuilding an unchanged component does not call pip or
npm again. Unpinned requirements therefore stay at what was first resolved
until ``--refresh``; pin them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.build.platforms import TargetPlatform
from edge.build.zipper import iter_tree
from edge.errors import BuildError, ToolMissing

log = logging.getLogger(__name__)

CACHE_FORMAT = "1"
PIP_TIMEOUT_S = 600.0
NPM_TIMEOUT_S = 600.0

_NODE_CPU = {"aarch64": "arm64", "armv7l": "arm", "x86_64": "x64"}
_NO_MATCH = re.compile(r"No matching distribution found for ([^\s;]+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement ([^\s;]+)")


@dataclass(frozen=True)
class VendoredTree:
    """Dependencies installed for one platform: where they are, their digest, and purity."""

    platform: TargetPlatform
    path: Path | None  # None: the component has no dependencies
    digest: str  # content digest of the tree; equal digests share one artifact
    pure: bool  # every installed wheel is py3-none-any (or no native node addon)


def cache_key(*parts: bytes | str) -> str:
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def tree_digest(root: Path) -> str:
    """Digest of every file's path, mode bit and bytes; independent of timestamps."""
    digest = hashlib.sha256()
    for entry in iter_tree(root):
        digest.update(entry.arcname.encode() + b"\0" + (b"x" if entry.executable else b"-"))
        digest.update(hashlib.sha256(entry.source.read_bytes()).digest())
    return digest.hexdigest()


def _finish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def vendor_python(
    requirements: Path,
    platform: TargetPlatform,
    python_version: str,
    cache_dir: Path,
    *,
    refresh: bool = False,
) -> VendoredTree:
    """Install ``requirements`` for ``platform`` into a cached tree and return it."""
    key = cache_key("python", requirements.read_bytes(), python_version, *platform.pip_platforms)
    final = cache_dir / "python" / key
    if final.is_dir() and not refresh:
        return _describe(platform, final, _wheels_pure(final))
    tmp = final.with_name(key + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    nodot = python_version.replace(".", "")
    cmd = [
        sys.executable, "-m", "pip", "install",
        "--only-binary=:all:",
        "--python-version", python_version,
        "--implementation", "cp",
        "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none",
        "--target", str(tmp),
        "--no-compile", "--no-input", "--disable-pip-version-check", "--quiet",
        "-r", str(requirements),
    ]  # fmt: skip
    for tag in reversed(platform.pip_platforms):
        cmd[4:4] = ["--platform", tag]
    log.debug("vendoring %s for %s", requirements, platform.label)
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
            cwd=requirements.parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"{requirements}: pip did not finish within {PIP_TIMEOUT_S:.0f} s for {platform.label}"
        ) from exc
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(_pip_error(requirements, platform, python_version, proc.stderr))
    _scrub(tmp)
    pure = _wheels_pure(tmp)
    _finish(tmp, final)
    return _describe(platform, final, pure)


def _pip_error(requirements: Path, platform: TargetPlatform, python: str, stderr: str) -> str:
    match = _NO_MATCH.search(stderr) or _NO_VERSION.search(stderr)
    if match:
        return (
            f"{requirements}: {match.group(1)}: no binary wheel for {platform.label} "
            f"(python {python}, {platform.pip_platforms[0]} or older); pick a version that "
            f"publishes one or drop that platform"
        )
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    detail = last[-1] if last else "pip failed"
    return f"{requirements}: pip install for {platform.label} failed: {detail}"


def _scrub(root: Path) -> None:
    """Drop what would carry build-machine paths: console scripts and direct_url.json."""
    shutil.rmtree(root / "bin", ignore_errors=True)
    for path in root.glob("*.dist-info/direct_url.json"):
        path.unlink()


def _wheels_pure(root: Path) -> bool:
    """True when every installed wheel's tags are ``*-none-any``."""
    for wheel in root.glob("*.dist-info/WHEEL"):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.startswith("Tag:")
        ]
        if not tags or not all(tag.endswith("-none-any") for tag in tags):
            return False
    return True


def _describe(platform: TargetPlatform, root: Path, pure: bool) -> VendoredTree:
    return VendoredTree(platform, root, tree_digest(root), pure)


def vendor_node(
    package_json: Path, platform: TargetPlatform, cache_dir: Path, *, refresh: bool = False
) -> VendoredTree:
    """Install ``package.json``'s production dependencies for ``platform`` into a cached tree."""
    lock = package_json.with_name("package-lock.json")
    cpu = _NODE_CPU[platform.machine]
    key = cache_key(
        "node",
        package_json.read_bytes(),
        lock.read_bytes() if lock.is_file() else b"",
        platform.os,
        cpu,
        platform.libc,
    )
    final = cache_dir / "node" / key
    if final.is_dir() and not refresh:
        return _describe_node(platform, final)
    npm = shutil.which("npm")
    if npm is None:
        raise ToolMissing(f"{package_json}: npm is not on PATH; install Node.js to vendor it")
    tmp = final.with_name(key + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copyfile(package_json, tmp / "package.json")
    if lock.is_file():
        shutil.copyfile(lock, tmp / "package-lock.json")
    cmd = [
        npm, "install", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
        "--no-update-notifier", "--loglevel=error", f"--os={platform.os}", f"--cpu={cpu}",
    ]  # fmt: skip
    if platform.libc == "musl":
        cmd.append("--libc=musl")
    try:
        proc = subprocess.run(
            cmd, cwd=tmp, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"{package_json}: npm did not finish within {NPM_TIMEOUT_S:.0f} s"
        ) from exc
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        detail = " ".join(lines[-2:]) if lines else "npm failed"
        raise BuildError(f"{package_json}: npm install for {platform.label} failed: {detail}")
    out = tmp / "out"
    modules = tmp / "node_modules"
    out.mkdir()
    if modules.is_dir():
        modules.replace(out / "node_modules")
    _finish(out, final)
    shutil.rmtree(tmp, ignore_errors=True)
    return _describe_node(platform, final)


def _describe_node(platform: TargetPlatform, root: Path) -> VendoredTree:
    pure = not any(root.rglob("*.node"))
    return VendoredTree(platform, root, tree_digest(root), pure)


def no_dependencies(platform: TargetPlatform) -> VendoredTree:
    return VendoredTree(platform, None, cache_key("none"), True)
