"""The greengrass backend: publish components, deploy them, read fleet status.

Three operations, each reading before it writes so that it can be repeated
safely:

* ``publish`` uploads each artifact under ``s3://B/<component>/<version>/
  <sha256>/<zip>`` unless that key already exists, then registers the version
  with ``CreateComponentVersion`` and the inline recipe. ``NEXT_PATCH`` bumps
  the highest published version, unless that version already has exactly
  these artifacts (then nothing is published again). A bucket in another
  region is refused before any upload: Greengrass would accept the recipe and
  fail on the device with "Specified artifact resource cannot be accessed".
* ``deploy`` reads the target's latest deployment and merges into it, because
  a Greengrass deployment *replaces* the previous one to the same target and
  uninstalls every component it omits. The merge base is the latest
  deployment to that exact target (``ListDeployments`` + ``GetDeployment``),
  not the device's effective deployments, which also include its groups'
  deployments and would be copied into a thing deployment by mistake.
  ``failureHandlingPolicy`` is always ``ROLLBACK``; group deployments carry IoT
  job rollout and abort settings. A merge that changes nothing is not sent.
* ``fleet_status`` lists core devices, their installed components and their
  effective deployments into ``edge.model.status.FleetStatus``.

Clients are injected (``GreengrassClients``), so ``--dry-run`` is the same
code over ``edge.deploy.calls.RecordingClient``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from edge.aws.greengrassv2 import GreengrassV2Client
from edge.aws.iot import IotClient
from edge.aws.s3 import S3Client, s3_uri
from edge.build.builder import BuildResult
from edge.build.recipe import artifact_key, recipe_bytes, render_recipe
from edge.build.validate import validate_recipe
from edge.deploy.calls import CallRecorder, RecordingClient
from edge.errors import DeployError, UsageError
from edge.model.component import SEMVER_RE
from edge.model.status import (
    ComponentStatus,
    DeploymentStatus,
    DeviceState,
    DeviceStatus,
    FleetStatus,
)

Progress = Callable[[str, int, int], None]


def _no_progress(step: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class GreengrassClients:
    greengrass: GreengrassV2Client
    s3: S3Client
    iot: IotClient
    region: str


def make_clients(
    region: str, *, profile: str | None = None, recorder: CallRecorder | None = None
) -> GreengrassClients:
    """Real clients from a session, or, with ``recorder``, offline recording ones (dry run)."""
    if recorder is not None:

        def thing(params: Mapping[str, Any]) -> Mapping[str, Any]:
            return {"thingArn": f"arn:aws:iot:{region}:<account-id>:thing/{params['thingName']}"}

        def group(params: Mapping[str, Any]) -> Mapping[str, Any]:
            name = params["thingGroupName"]
            return {"thingGroupArn": f"arn:aws:iot:{region}:<account-id>:thinggroup/{name}"}

        def bucket(params: Mapping[str, Any]) -> Mapping[str, Any]:
            return {"BucketRegion": region}

        return GreengrassClients(
            GreengrassV2Client(RecordingClient("greengrassv2", recorder)),
            S3Client(
                RecordingClient(
                    "s3", recorder, responses={"head_bucket": bucket},
                    absent=frozenset({"head_object"}),
                )
            ),
            IotClient(
                RecordingClient(
                    "iot", recorder,
                    responses={"describe_thing": thing, "describe_thing_group": group},
                )
            ),
            region,
        )  # fmt: skip
    from edge.aws.session import make_client, make_session

    session = make_session(region, profile=profile)
    return GreengrassClients(
        GreengrassV2Client(make_client(session, "greengrassv2")),
        S3Client(make_client(session, "s3")),
        IotClient(make_client(session, "iot")),
        region,
    )


# Versions -------------------------------------------------------------------


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key: numeric core, and a release above its pre-releases."""
    match = SEMVER_RE.fullmatch(version)
    if not match:
        return (-1, -1, -1, 0, version)
    major, minor, patch, pre = match.group(1), match.group(2), match.group(3), match.group(4)
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def next_patch(versions: Sequence[str]) -> str:
    """The version after the highest published one; ``1.0.0`` when none is.

    A pre-release as the highest (``1.0.11-rc.1``) is followed by its release.
    """
    valid = [v for v in versions if SEMVER_RE.fullmatch(v)]
    if not valid:
        return "1.0.0"
    major, minor, patch, released, _ = semver_key(max(valid, key=semver_key))
    if not released:  # after 1.0.11-rc.1 comes the release 1.0.11
        return f"{major}.{minor}.{patch}"
    return f"{major}.{minor}.{patch + 1}"


def _artifact_digests(recipe: Mapping[str, Any]) -> set[str]:
    digests: set[str] = set()
    for manifest in recipe.get("Manifests", []) or []:
        for artifact in manifest.get("Artifacts", []) or []:
            digests.add(str(artifact.get("Digest", "")))
    return digests


def _published_digests(clients: GreengrassClients, arn: str, version: str) -> set[str]:
    raw = clients.greengrass.get_component_recipe(arn, version)
    try:
        recipe = json.loads(raw.decode("utf-8")) if raw else {}
    except ValueError:
        return set()
    return _artifact_digests(recipe) if isinstance(recipe, dict) else set()


# Publish --------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    component: str
    version: str
    uploaded: tuple[str, ...]
    skipped_uploads: tuple[str, ...]
    created: bool  # False: this exact version was already published
    arn: str = ""
    recipe_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "version": self.version,
            "arn": self.arn,
            "created": self.created,
            "uploaded": list(self.uploaded),
            "skipped_uploads": list(self.skipped_uploads),
            "recipe_bytes": self.recipe_bytes,
        }


def check_bucket_region(clients: GreengrassClients, bucket: str) -> None:
    region = clients.s3.bucket_region(bucket)
    if region != clients.region:
        raise UsageError(
            f"--bucket: {bucket!r} is in {region}, not {clients.region}; Greengrass can only "
            f"fetch artifacts from a bucket in the deployment's region (it fails on the device "
            f"with 'Specified artifact resource cannot be accessed'); use a bucket in "
            f"{clients.region} or pass --region {region}"
        )


def publish(
    build: BuildResult,
    clients: GreengrassClients,
    *,
    bucket: str,
    progress: Progress = _no_progress,
) -> PublishResult:
    """Upload ``build``'s artifacts to ``bucket`` and register its recipe with Greengrass."""
    manifest = build.manifest
    check_bucket_region(clients, bucket)
    arn = clients.greengrass.find_component_arn(manifest.name)
    published = clients.greengrass.list_component_versions(arn) if arn else []
    digests = {a.digest_b64 for a in build.artifacts}
    if manifest.version == "NEXT_PATCH":
        if arn and published:
            latest = max(published, key=semver_key)
            if _published_digests(clients, arn, latest) == digests:
                return PublishResult(
                    manifest.name, latest, (), (), False, f"{arn}:versions:{latest}"
                )
        version = next_patch(published)
    else:
        version = manifest.version
        if arn and version in published:
            if _published_digests(clients, arn, version) == digests:
                return PublishResult(
                    manifest.name, version, (), (), False, f"{arn}:versions:{version}"
                )
            raise UsageError(
                f"{manifest.source}: version: {version!r} is already published with other "
                "artifacts; bump the version or use NEXT_PATCH"
            )
    recipe = render_recipe(manifest, build.artifacts, version=version, bucket=bucket)
    data = recipe_bytes(recipe)
    validate_recipe(recipe, len(data), source=f"{manifest.name} {version} recipe")
    uploaded: list[str] = []
    skipped: list[str] = []
    total = len(build.artifacts)
    progress("upload", 0, total)
    for done, artifact in enumerate(build.artifacts, start=1):
        key = artifact_key(manifest.name, version, artifact)
        if clients.s3.exists(bucket, key):
            skipped.append(s3_uri(bucket, key))
        else:
            clients.s3.put_object(
                bucket, key, artifact.path.read_bytes(),
                content_type="application/zip", metadata={"sha256": artifact.sha256},
            )  # fmt: skip
            uploaded.append(s3_uri(bucket, key))
        progress("upload", done, total)
    response = clients.greengrass.create_component_version(data, manifest.name, version)
    status = response.get("status", {}) or {}
    if status.get("componentState") == "FAILED":
        raise DeployError(
            f"CreateComponentVersion on {manifest.name} {version}: {status.get('message', '')}"
        )
    return PublishResult(
        manifest.name, version, tuple(uploaded), tuple(skipped), True,
        str(response.get("arn", "")), len(data),
    )  # fmt: skip


# Deploy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """IoT job settings for group deployments (``iotJobConfiguration``)."""

    maximum_per_minute: int | None = None
    exponential_base: int | None = None  # baseRatePerMinute
    exponential_factor: float | None = None  # incrementFactor
    exponential_after: int | None = None  # succeeded things before each increase
    abort_threshold: float | None = None  # percent of failed executions
    abort_min_executed: int | None = None
    timeout_minutes: int | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in vars(self).values())

    def to_params(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        rollout: dict[str, Any] = {}
        if self.exponential_base is not None:
            rollout["exponentialRate"] = {
                "baseRatePerMinute": self.exponential_base,
                "incrementFactor": self.exponential_factor or 2.0,
                "rateIncreaseCriteria": {"numberOfSucceededThings": self.exponential_after or 10},
            }
        if self.maximum_per_minute is not None:
            rollout["maximumPerMinute"] = self.maximum_per_minute
        if rollout:
            config["jobExecutionsRolloutConfig"] = rollout
        if self.abort_threshold is not None:
            config["abortConfig"] = {
                "criteriaList": [
                    {
                        "failureType": "ALL",
                        "action": "CANCEL",
                        "thresholdPercentage": self.abort_threshold,
                        "minNumberOfExecutedThings": self.abort_min_executed or 1,
                    }
                ]
            }
        if self.timeout_minutes is not None:
            config["timeoutConfig"] = {"inProgressTimeoutInMinutes": self.timeout_minutes}
        return config


@dataclass(frozen=True)
class DeployTarget:
    kind: Literal["thing", "group"]
    name: str  # thing name or thing group name


@dataclass(frozen=True)
class DeployRequest:
    target: DeployTarget
    components: Mapping[str, str]  # name -> version, or "LATEST" for the highest published
    remove: tuple[str, ...] = ()
    rollout: Rollout = field(default_factory=Rollout)
    deployment_name: str | None = None


@dataclass(frozen=True)
class DeployResult:
    target_arn: str
    params: Mapping[str, Any]
    sent: bool  # False: the merged deployment equals the current one
    deployment_id: str = ""
    previous_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target_arn": self.target_arn,
            "sent": self.sent,
            "deployment_id": self.deployment_id,
            "previous_deployment_id": self.previous_id,
            "components": {
                name: spec.get("componentVersion")
                for name, spec in self.params.get("components", {}).items()
            },
        }


_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")

DEFAULT_POLICIES: dict[str, Any] = {
    "failureHandlingPolicy": "ROLLBACK",
    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
}


def _resolve_versions(clients: GreengrassClients, wanted: Mapping[str, str]) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for name, version in sorted(wanted.items()):
        if version != "LATEST":
            resolved[name] = version
            continue
        arn = clients.greengrass.find_component_arn(name)
        versions = clients.greengrass.list_component_versions(arn) if arn else []
        if not versions:
            raise UsageError(
                f"component {name!r} has no published version; run "
                "'edgectl publish --backend greengrass' first"
            )
        resolved[name] = max(versions, key=semver_key)
    return resolved


def plan_deployment(
    request: DeployRequest, clients: GreengrassClients
) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """Read the target's current deployment and return (target ARN, params, current, id)."""
    target = request.target
    if target.kind == "thing":
        if not request.rollout.is_empty():
            raise UsageError(
                "--max-per-minute/--exponential-*/--abort-*/--job-timeout apply to --group "
                "deployments only"
            )
        clients.greengrass.get_core_device(target.name)
        target_arn = clients.iot.thing_arn(target.name)
    else:
        target_arn = clients.iot.thing_group_arn(target.name)
    versions = _resolve_versions(clients, request.components)
    previous_id = clients.greengrass.latest_deployment_id(target_arn) or ""
    current: dict[str, Any] = {}
    if previous_id:
        current = clients.greengrass.get_deployment(previous_id)
    components: dict[str, Any] = {
        name: dict(spec) for name, spec in (current.get("components") or {}).items()
    }
    for name in request.remove:
        if name not in components:
            raise UsageError(f"--remove: {name!r} is not in {target.name}'s current deployment")
        del components[name]
    for name, version in versions.items():
        entry = components.get(name, {})
        entry["componentVersion"] = version
        components[name] = entry
    if not components:
        raise UsageError(f"deployment to {target.name} would hold no component")
    name = (
        request.deployment_name
        or current.get("deploymentName")
        or _NAME_OK.sub("-", f"edgectl-{target.kind}-{target.name}")
    )
    policies = dict(current.get("deploymentPolicies") or {})
    policies.update(DEFAULT_POLICIES)
    params: dict[str, Any] = {
        "targetArn": target_arn,
        "deploymentName": name,
        "components": dict(sorted(components.items())),
        "deploymentPolicies": policies,
    }
    if target.kind == "group":
        job = dict(current.get("iotJobConfiguration") or {})
        job.update(request.rollout.to_params())
        if job:
            params["iotJobConfiguration"] = job
    return target_arn, params, current, previous_id


def deploy(request: DeployRequest, clients: GreengrassClients) -> DeployResult:
    """Merge ``request`` into the target's current deployment and create it if it changed."""
    target_arn, params, current, previous_id = plan_deployment(request, clients)
    unchanged = (
        previous_id
        and current.get("components") == params["components"]
        and current.get("deploymentStatus") in ("ACTIVE", "COMPLETED")
        and (current.get("deploymentPolicies") or {}) == params["deploymentPolicies"]
    )
    if unchanged:
        return DeployResult(target_arn, params, False, previous_id, previous_id)
    response = clients.greengrass.create_deployment(params)
    return DeployResult(
        target_arn, params, True, str(response.get("deploymentId", "")), previous_id
    )


# Fleet status ---------------------------------------------------------------

# Greengrass reports on change and every 24 hours; older than this means offline.
STALE_AFTER = timedelta(hours=25)
BAD_COMPONENT_STATES = frozenset({"ERRORED", "BROKEN"})
BAD_DEPLOYMENT_STATES = frozenset({"FAILED", "TIMED_OUT", "REJECTED", "CANCELED"})
SYSTEM_COMPONENT_PREFIX = "aws.greengrass."


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def device_status(
    name: str,
    core: Mapping[str, Any],
    installed: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    stale_after: timedelta = STALE_AFTER,
    include_system: bool = False,
) -> DeviceStatus:
    """One status row from a core device's three Greengrass answers."""
    last_seen = _as_datetime(core.get("lastStatusUpdateTimestamp"))
    components: dict[str, ComponentStatus] = {}
    errors: list[str] = []
    for item in installed:
        comp = str(item.get("componentName", ""))
        state = str(item.get("lifecycleState", "UNKNOWN"))
        if state in BAD_COMPONENT_STATES:
            codes = ", ".join(item.get("lifecycleStatusCodes", []) or [])
            detail = codes or str(item.get("lifecycleStateDetails", "")) or state.lower()
            errors.append(f"{comp}: {state.lower()} ({detail})")
        if include_system or not comp.startswith(SYSTEM_COMPONENT_PREFIX):
            components[comp] = ComponentStatus(str(item.get("componentVersion", "")), state.lower())
    latest: DeploymentStatus | None = None
    ordered = sorted(
        deployments,
        key=lambda d: _as_datetime(d.get("modifiedTimestamp")) or datetime.min.replace(tzinfo=UTC),
    )
    for item in ordered:
        state = str(item.get("coreDeviceExecutionStatus", ""))
        reason = str(item.get("reason", "") or "")
        latest = DeploymentStatus(
            str(item.get("deploymentId", "")), str(item.get("deploymentName", "")),
            state.lower(), reason,
        )  # fmt: skip
    if latest is not None and latest.state.upper() in BAD_DEPLOYMENT_STATES:
        errors.append(
            f"deployment {latest.name or latest.id}: {latest.state} {latest.reason}".strip()
        )
    state_value: DeviceState
    if last_seen is None:
        state_value = "never-seen"
    elif now - last_seen > stale_after:
        state_value = "offline"
    elif core.get("status") == "UNHEALTHY" or errors:
        state_value = "degraded"
    else:
        state_value = "online"
    return DeviceStatus(
        name=name, state=state_value, last_seen=last_seen, components=components,
        errors=tuple(errors), backlog=None, deployment=latest,
    )  # fmt: skip


def fleet_status(
    gg: GreengrassV2Client,
    *,
    now: datetime,
    inventory: Mapping[str, str] | None = None,
    thing_group_arn: str | None = None,
    include_system: bool = False,
    progress: Progress = _no_progress,
) -> FleetStatus:
    """Status of every core device (of a group, when given), plus inventory devices never seen.

    ``inventory`` maps device names to thing names, so rows carry the names
    the user knows; core devices outside the inventory are listed by thing name.
    """
    by_thing = {thing: name for name, thing in (inventory or {}).items()}
    cores = gg.list_core_devices(thing_group_arn)
    rows: list[DeviceStatus] = []
    progress("devices", 0, len(cores))
    for done, core in enumerate(cores, start=1):
        thing = str(core["coreDeviceThingName"])
        installed = gg.list_installed_components(thing)
        deployments = gg.list_effective_deployments(thing)
        rows.append(
            device_status(
                by_thing.get(thing, thing),
                core,
                installed,
                deployments,
                now=now,
                include_system=include_system,
            )  # fmt: skip
        )
        progress("devices", done, len(cores))
    seen = {str(core["coreDeviceThingName"]) for core in cores}
    if thing_group_arn is None:
        for thing, name in by_thing.items():
            if thing not in seen:
                rows.append(DeviceStatus(name=name, state="never-seen"))
    rows.sort(key=lambda row: row.name)
    return FleetStatus(backend="greengrass", generated_at=now, devices=tuple(rows))
