"""Greengrass v2 recipes for function components.

A recipe is rendered from the component manifest and the built artifacts,
with the canonical PascalCase keys: the Java nucleus reads recipe keys
case-insensitively, nucleus lite case-sensitively, so only the canonical
spelling works on both.

What a function recipe holds, and why:

* one manifest per target platform (``os``/``architecture``; manifests with
  extra attributes first, since the nucleus takes the first that matches),
  each pointing at the artifact built for that platform's set, unarchived
  (``Unarchive: ZIP``) and pinned by its SHA-256 digest;
* a lifecycle that starts this project's function host from the runtime
  component's virtualenv, hosting exactly this component over Greengrass IPC,
  with a ``ComponentDependencies`` entry on the runtime (a version range, so a
  runtime patch does not need every function republished), plus the token
  exchange service when results go to S3 or DynamoDB;
* ``DefaultConfiguration`` holding the manifest's settings (visible and
  overridable per deployment), and ``accessControl`` for
  ``aws.greengrass.ipc.pubsub`` granting exactly the trigger and output
  topics: ``{component}`` is rendered, ``{thing}`` becomes the recipe variable
  ``{iot:thingName}`` (interpolated when the nucleus runs with
  ``interpolateComponentConfiguration``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import edge
from edge.build.platforms import TargetPlatform
from edge.model.component import ComponentManifest

RECIPE_FORMAT_VERSION = "2020-01-25"
RUNTIME_COMPONENT = "com.edgectl.Runtime"
TOKEN_EXCHANGE_COMPONENT = "aws.greengrass.TokenExchangeService"  # noqa: S105
PUBLISHER = "edgectl"
# Local builds of a NEXT_PATCH component show this version until publish picks the real one.
UNPUBLISHED_VERSION = "0.0.0"
# The bucket shown in a local build's recipe when no --bucket is given; publish always
# renders again with the bucket the user names.
UNPUBLISHED_BUCKET = "unpublished-artifacts"


def runtime_version_requirement(version: str = edge.__version__) -> str:
    """``>=0.1.0 <0.2.0`` for 0.1.x: same minor before 1.0, same major after."""
    major, minor, _ = (int(part) for part in version.split("-")[0].split(".")[:3])
    upper = f"{major + 1}.0.0" if major >= 1 else f"0.{minor + 1}.0"
    return f">={major}.{minor}.0 <{upper}"


@dataclass(frozen=True)
class BuiltArtifact:
    """A zip on disk, the platforms it serves, and its digest."""

    path: Path
    sha256: str  # hex
    size: int
    platforms: tuple[TargetPlatform, ...]
    pure: bool

    @property
    def folder(self) -> str:
        """The folder the nucleus unarchives the zip into under ``{artifacts:decompressedPath}``."""
        return self.path.name.removesuffix(".zip")

    @property
    def digest_b64(self) -> str:
        """The digest as Greengrass writes it in recipes: base64 of the raw SHA-256."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")


def artifact_key(component: str, version: str, artifact: BuiltArtifact) -> str:
    """``<component>/<version>/<sha256>/<zip>``: the digest in the key makes 'already uploaded'
    a single HEAD, and keeps the zip's name (hence its unarchive folder) stable."""
    return f"{component}/{version}/{artifact.sha256}/{artifact.path.name}"


def render_topic(topic: str, component: str) -> str:
    return topic.replace("{component}", component).replace("{thing}", "{iot:thingName}")


def function_configuration(manifest: ComponentManifest) -> dict[str, Any]:
    """The manifest's settings as the recipe's ``DefaultConfiguration.function``."""
    limits = manifest.limits
    config: dict[str, Any] = {
        "runtime": manifest.runtime,
        "handler": manifest.handler,
        "triggers": [{"topic": t.topic, "encoding": t.encoding} for t in manifest.triggers],
        "outputs": [o.topic for o in manifest.outputs],
        "errorsTopic": manifest.errors_topic,
        "limits": {
            "timeoutInSeconds": limits.timeout,
            "memoryMb": limits.memory_mb,
            "maxInstancesCount": limits.max_instances,
            "maxQueueSize": limits.max_queue,
            "pinned": limits.pinned,
            "maxIdleTimeInSeconds": limits.idle_timeout,
            "queueFull": limits.queue_full,
        },
    }
    results: dict[str, Any] = {}
    if manifest.results.s3 is not None:
        results["s3"] = {
            "bucket": manifest.results.s3.bucket,
            "prefix": manifest.results.s3.prefix,
        }
    if manifest.results.dynamodb is not None:
        table = manifest.results.dynamodb
        results["dynamodb"] = {
            "table": table.table,
            "partitionKey": table.partition_key,
            "sortKey": table.sort_key,
        }
    if results:
        config["results"] = results
    if manifest.environment:
        config["environment"] = dict(sorted(manifest.environment.items()))
    return config


def access_control(manifest: ComponentManifest) -> dict[str, Any]:
    """IPC pub/sub policies granting exactly the trigger, output and errors topics."""
    name = manifest.name
    subscribe = sorted({render_topic(t.topic, name) for t in manifest.triggers})
    publish_topics = [o.topic for o in manifest.outputs] + [manifest.errors_topic]
    publish = sorted({render_topic(topic, name) for topic in publish_topics})
    policies: dict[str, Any] = {}
    if subscribe:
        policies[f"{name}:pubsub:subscribe"] = {
            "policyDescription": "Lets the function host receive the function's triggers.",
            "operations": ["aws.greengrass#SubscribeToTopic"],
            "resources": subscribe,
        }
    policies[f"{name}:pubsub:publish"] = {
        "policyDescription": "Lets the function host publish outputs and errors.",
        "operations": ["aws.greengrass#PublishToTopic"],
        "resources": publish,
    }
    return {"aws.greengrass.ipc.pubsub": policies}


def _manifest_order(platform: TargetPlatform) -> tuple[int, str, str]:
    # Stricter (more attributes) first: the nucleus picks the first manifest that matches.
    return (-len(platform.recipe_platform()), platform.architecture, platform.libc)


def render_recipe(
    manifest: ComponentManifest,
    artifacts: Sequence[BuiltArtifact],
    *,
    version: str,
    bucket: str,
    runtime_requirement: str | None = None,
) -> dict[str, Any]:
    """The recipe document (a plain dict, canonical keys) for ``manifest`` at ``version``."""
    dependencies: dict[str, Any] = {
        RUNTIME_COMPONENT: {
            "VersionRequirement": runtime_requirement or runtime_version_requirement(),
            "DependencyType": "HARD",
        }
    }
    if manifest.results.s3 is not None or manifest.results.dynamodb is not None:
        dependencies[TOKEN_EXCHANGE_COMPONENT] = {
            "VersionRequirement": ">=2.0.0 <3.0.0",
            "DependencyType": "HARD",
        }
    by_platform = [(p, a) for a in artifacts for p in a.platforms]
    by_platform.sort(key=lambda pair: _manifest_order(pair[0]))
    manifests = []
    for platform, artifact in by_platform:
        uri = f"s3://{bucket}/{artifact_key(manifest.name, version, artifact)}"
        script = (
            f"{{{RUNTIME_COMPONENT}:work:path}}/venv/bin/python3 -m edge.agent.main "
            f"--greengrass --component {{artifacts:decompressedPath}}/{artifact.folder}"
        )
        manifests.append(
            {
                "Platform": platform.recipe_platform(),
                "Lifecycle": {
                    "Setenv": {"PYTHONUNBUFFERED": "1"},
                    "Run": {"Script": script, "RequiresPrivilege": False},
                },
                "Artifacts": [
                    {
                        "Uri": uri,
                        "Digest": artifact.digest_b64,
                        "Algorithm": "SHA-256",
                        "Unarchive": "ZIP",
                        "Permission": {"Read": "OWNER", "Execute": "NONE"},
                    }
                ],
            }
        )
    description = manifest.description or (
        f"Lambda-style function {manifest.handler} ({manifest.runtime}), built by edgectl."
    )
    return {
        "RecipeFormatVersion": RECIPE_FORMAT_VERSION,
        "ComponentName": manifest.name,
        "ComponentVersion": version,
        "ComponentDescription": description,
        "ComponentPublisher": PUBLISHER,
        "ComponentDependencies": dependencies,
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "function": function_configuration(manifest),
                "accessControl": access_control(manifest),
            }
        },
        "Manifests": manifests,
    }


def recipe_bytes(recipe: Mapping[str, Any]) -> bytes:
    """The recipe as sent and as written: JSON, two-space indent, key order as rendered."""
    return (json.dumps(recipe, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
