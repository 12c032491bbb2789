"""Publishing the toolkit's own Greengrass component, ``com.edgectl.Runtime``.

Every function component depends on it: it installs this package (from a
wheel shipped as its artifact) into a virtualenv on the core device, and
function components start their host from there. ``recipes/`` holds its
recipe with a placeholder artifact URI; publishing fills in the user's bucket
and the wheel's digest, so what Greengrass receives names exactly the bytes
that were uploaded.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge import __version__
from edge.aws.s3 import s3_uri
from edge.build.recipe import recipe_bytes
from edge.build.validate import validate_recipe
from edge.deploy.greengrass import GreengrassClients, check_bucket_region
from edge.errors import BuildError, DeployError, UsageError

RUNTIME_COMPONENT = "com.edgectl.Runtime"
RECIPE_FILE = Path("recipes") / f"{RUNTIME_COMPONENT}.yaml"
# Zip timestamps inside the wheel: fixed, so fewer rebuilds differ (setuptools still
# varies a little, hence the digest in the S3 key).
_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can say

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RuntimePublishResult:
    version: str
    wheel: Path
    uri: str
    uploaded: bool
    created: bool
    arn: str

    def to_json(self) -> dict[str, Any]:
        return {
            "component": RUNTIME_COMPONENT,
            "version": self.version,
            "wheel": str(self.wheel),
            "artifact": self.uri,
            "uploaded": self.uploaded,
            "created": self.created,
            "arn": self.arn,
        }


def build_wheel(project_root: Path, out_dir: Path) -> Path:
    """Build this package's wheel with pip (no dependencies: the device resolves them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--wheel-dir", str(out_dir), str(project_root)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"{project_root}: building the edgectl wheel failed: {tail[0]}")
    wheels = sorted(out_dir.glob(f"edgectl-{__version__}-*.whl"))
    if not wheels:
        raise BuildError(f"{out_dir}: pip reported success but wrote no edgectl wheel")
    return wheels[-1]


def load_template(project_root: Path) -> dict[str, Any]:
    path = project_root / RECIPE_FILE
    try:
        recipe = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"{path}: the runtime recipe is missing (run from the project root)"
        ) from None
    if not isinstance(recipe, dict):
        raise UsageError(f"{path}: not a recipe mapping")
    return recipe


def render_runtime_recipe(
    template: dict[str, Any], *, bucket: str, wheel: Path, sha256: bytes
) -> tuple[dict[str, Any], str]:
    """The template with its one artifact pointed at ``bucket`` and pinned by digest."""
    recipe = copy.deepcopy(template)
    version = str(recipe.get("ComponentVersion", ""))
    # The digest in the key: a rebuilt wheel never hides behind an older object that
    # the recipe's digest would not match (the device would refuse the artifact).
    key = f"{RUNTIME_COMPONENT}/{version}/{sha256.hex()}/{wheel.name}"
    uri = f"s3://{bucket}/{key}"
    manifests = recipe.get("Manifests") or []
    artifacts = [a for m in manifests for a in (m.get("Artifacts") or [])]
    if len(artifacts) != 1:
        raise UsageError(f"{RECIPE_FILE}: Manifests: expected exactly one artifact (the wheel)")
    artifacts[0]["Uri"] = uri
    artifacts[0]["Digest"] = base64.b64encode(sha256).decode()
    artifacts[0]["Algorithm"] = "SHA-256"
    return recipe, key


def publish_runtime(
    project_root: Path,
    clients: GreengrassClients,
    *,
    bucket: str,
    progress: Progress = lambda _step: None,
    wheel: Path | None = None,
) -> RuntimePublishResult:
    template = load_template(project_root)
    version = str(template.get("ComponentVersion", ""))
    if version != __version__:
        raise UsageError(
            f"{RECIPE_FILE}: ComponentVersion: {version!r} differs from the package version "
            f"{__version__!r}; the runtime component ships this package"
        )
    check_bucket_region(clients, bucket)
    if wheel is None:
        progress("building the edgectl wheel")
        wheel = build_wheel(project_root, Path(tempfile.mkdtemp(prefix="edgectl-wheel-")))
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).digest()
    recipe, key = render_runtime_recipe(template, bucket=bucket, wheel=wheel, sha256=digest)
    body = recipe_bytes(recipe)
    validate_recipe(recipe, len(body), source=f"{RUNTIME_COMPONENT} {version} recipe")
    uploaded = False
    if not clients.s3.exists(bucket, key):
        progress(f"uploading {wheel.name} to {s3_uri(bucket, key)}")
        clients.s3.put_object(bucket, key, data, content_type="application/zip",
                              metadata={"sha256": digest.hex()})
        uploaded = True
    arn = clients.greengrass.find_component_arn(RUNTIME_COMPONENT)
    if arn and version in clients.greengrass.list_component_versions(arn):
        return RuntimePublishResult(version, wheel, s3_uri(bucket, key), uploaded, False,
                                    f"{arn}:versions:{version}")
    progress(f"creating {RUNTIME_COMPONENT} {version}")
    response = clients.greengrass.create_component_version(body, RUNTIME_COMPONENT, version)
    status = response.get("status", {}) or {}
    if status.get("componentState") == "FAILED":
        raise DeployError(
            f"CreateComponentVersion on {RUNTIME_COMPONENT} {version}: {status.get('message', '')}"
        )
    return RuntimePublishResult(version, wheel, s3_uri(bucket, key), uploaded, True,
                                str(response.get("arn", "")))
