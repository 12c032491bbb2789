"""The recipe rules this project relies on, checked before anything is uploaded.

Greengrass validates a recipe only when ``CreateComponentVersion`` is called,
after the artifact is already in S3, and some faults (a digest that does not
decode, an artifact URI without a key) only surface on the device. So the
rules that matter are checked here, locally, each failing with one line that
names the recipe, the field and the value. This is deliberately not a full
JSON Schema: the tests check generated recipes against the published schema
as an independent second opinion.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from edge.errors import BuildError, ValidationError
from edge.model.component import COMPONENT_NAME_MAX as NAME_MAX
from edge.model.component import COMPONENT_NAME_RE as NAME_RE
from edge.model.component import SEMVER_RE

MAX_RECIPE_BYTES = 16_000
S3_URI_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(.+)$")
DOCKER_URI_RE = re.compile(r"^docker:\S+$")
REQUIRED = ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests")


def _fail(source: str, field: str, message: str, value: object) -> ValidationError:
    return ValidationError(message, source=source, field=field, value=value)


def validate_recipe(recipe: Mapping[str, Any], size: int, *, source: str) -> None:
    """Raise on the first broken rule; ``size`` is the byte length of what will be sent."""
    for key in REQUIRED:
        if key not in recipe:
            raise _fail(source, key, "required key is missing", None)
    if recipe["RecipeFormatVersion"] != "2020-01-25":
        value = recipe["RecipeFormatVersion"]
        raise _fail(source, "RecipeFormatVersion", f"{value!r} is not '2020-01-25'", value)
    name = recipe["ComponentName"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise _fail(
            source, "ComponentName",
            f"{name!r} does not match ^[a-zA-Z0-9-_.]+$ (at most {NAME_MAX} characters)", name,
        )  # fmt: skip
    version = recipe["ComponentVersion"]
    if not isinstance(version, str) or not SEMVER_RE.fullmatch(version) or len(version) > 64:
        raise _fail(
            source, "ComponentVersion", f"{version!r} is not a semantic version (1.2.3)", version
        )
    _validate_dependencies(recipe.get("ComponentDependencies", {}), source)
    manifests = recipe["Manifests"]
    if not isinstance(manifests, list) or not manifests:
        raise _fail(source, "Manifests", "needs at least one platform manifest", manifests)
    for index, item in enumerate(manifests):
        _validate_manifest(item, f"Manifests[{index}]", source)
    if size >= MAX_RECIPE_BYTES:
        raise BuildError(
            f"{source}: recipe is {size} bytes, over Greengrass's {MAX_RECIPE_BYTES}-byte "
            "limit; shorten the description, environment or topic lists"
        )


def _validate_dependencies(deps: object, source: str) -> None:
    if not isinstance(deps, Mapping):
        raise _fail(source, "ComponentDependencies", "must be a mapping", deps)
    for dep_name, dep in deps.items():
        field = f"ComponentDependencies.{dep_name}"
        if not NAME_RE.fullmatch(str(dep_name)):
            raise _fail(source, field, f"{dep_name!r} is not a component name", dep_name)
        if not isinstance(dep, Mapping) or not str(dep.get("VersionRequirement", "")).strip():
            raise _fail(source, field + ".VersionRequirement", "required", dep)
        kind = dep.get("DependencyType", "HARD")
        if kind not in ("HARD", "SOFT"):
            raise _fail(source, field + ".DependencyType", f"{kind!r} is not HARD or SOFT", kind)


def _validate_manifest(item: object, field: str, source: str) -> None:
    if not isinstance(item, Mapping):
        raise _fail(source, field, "must be a mapping", item)
    platform = item.get("Platform")
    if not isinstance(platform, Mapping) or not platform.get("os"):
        raise _fail(source, field + ".Platform.os", "every manifest names its platform", platform)
    for key, value in platform.items():
        if not isinstance(value, str):
            raise _fail(source, f"{field}.Platform.{key}", "must be a string", value)
    artifacts = item.get("Artifacts", [])
    if not isinstance(artifacts, list):
        raise _fail(source, field + ".Artifacts", "must be a list", artifacts)
    for index, artifact in enumerate(artifacts):
        _validate_artifact(artifact, f"{field}.Artifacts[{index}]", source)


def _validate_artifact(artifact: object, field: str, source: str) -> None:
    if not isinstance(artifact, Mapping):
        raise _fail(source, field, "must be a mapping", artifact)
    uri = artifact.get("Uri")
    if not isinstance(uri, str) or not (S3_URI_RE.match(uri) or DOCKER_URI_RE.match(uri)):
        raise _fail(source, field + ".Uri", f"{uri!r} is not an s3://bucket/key URI", uri)
    unarchive = artifact.get("Unarchive", "NONE")
    if unarchive not in ("ZIP", "NONE"):
        raise _fail(source, field + ".Unarchive", f"{unarchive!r} is not ZIP or NONE", unarchive)
    digest = artifact.get("Digest")
    if digest is not None:
        if artifact.get("Algorithm") != "SHA-256":
            value = artifact.get("Algorithm")
            raise _fail(source, field + ".Algorithm", f"{value!r} is not SHA-256", value)
        try:
            raw = base64.b64decode(str(digest), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise _fail(source, field + ".Digest", f"{digest!r} is not a base64 SHA-256", digest)
