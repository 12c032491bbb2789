"""Greengrass calls with botocore's Stubber: exact request shapes, pagination, merge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3.session
import pytest
from botocore.stub import Stubber

from edge.aws.greengrassv2 import GreengrassV2Client
from edge.aws.iot import IotClient
from edge.aws.s3 import S3Client
from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import DEFAULT_PLATFORMS
from edge.build.recipe import artifact_key, recipe_bytes, render_recipe
from edge.deploy.greengrass import (
    DeployRequest,
    DeployTarget,
    GreengrassClients,
    Rollout,
    deploy,
    fleet_status,
    next_patch,
    publish,
)
from edge.errors import UsageError
from tests.unit.test_build_component import make_component

REGION = "us-east-1"
ACCOUNT = "123456789012"
COMP_ARN = f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:com.example.Test"
THING_ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/pi01"
GROUP_ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:thinggroup/pis"


@pytest.fixture
def session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture
def stubs(session):
    gg = session.client("greengrassv2")
    s3 = session.client("s3")
    iot = session.client("iot")
    stubbers = {"gg": Stubber(gg), "s3": Stubber(s3), "iot": Stubber(iot)}
    for stub in stubbers.values():
        stub.activate()
    clients = GreengrassClients(GreengrassV2Client(gg), S3Client(s3), IotClient(iot), REGION)
    yield clients, stubbers
    for stub in stubbers.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def built(tmp_path, version="1.0.0"):
    folder = make_component(tmp_path, version=version)
    return build_component(folder, BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c"))


def test_next_patch():
    assert next_patch([]) == "1.0.0"
    assert next_patch(["1.0.0", "1.0.10", "1.0.9", "0.9.0", "1.0.11-rc.1"]) == "1.0.11"


def test_publish_next_patch_reads_all_pages_uploads_and_creates(tmp_path, stubs):
    clients, stub = stubs
    build = built(tmp_path, version="NEXT_PATCH")
    stub["s3"].add_response("head_bucket", {"BucketRegion": REGION}, {"Bucket": "art"})
    stub["gg"].add_response(
        "list_components",
        {"components": [{"componentName": "other", "arn": "arn:x"}], "nextToken": "t1"},
        {"scope": "PRIVATE"},
    )
    stub["gg"].add_response(
        "list_components",
        {"components": [{"componentName": "com.example.Test", "arn": COMP_ARN}]},
        {"scope": "PRIVATE", "nextToken": "t1"},
    )
    stub["gg"].add_response(
        "list_component_versions",
        {"componentVersions": [{"componentVersion": "1.0.4"}], "nextToken": "p2"},
        {"arn": COMP_ARN},
    )
    stub["gg"].add_response(
        "list_component_versions",
        {"componentVersions": [{"componentVersion": "1.0.9"}, {"componentVersion": "1.0.2"}]},
        {"arn": COMP_ARN, "nextToken": "p2"},
    )
    stub["gg"].add_response(
        "get_component",
        {"recipe": b'{"Manifests": []}', "recipeOutputFormat": "JSON"},
        {"arn": f"{COMP_ARN}:versions:1.0.9", "recipeOutputFormat": "JSON"},
    )
    artifact = build.artifacts[0]
    key = artifact_key("com.example.Test", "1.0.10", artifact)
    stub["s3"].add_client_error(
        "head_object", "404", "Not Found", 404, expected_params={"Bucket": "art", "Key": key}
    )
    stub["s3"].add_response(
        "put_object",
        {},
        {
            "Bucket": "art",
            "Key": key,
            "Body": artifact.path.read_bytes(),
            "ContentType": "application/zip",
            "Metadata": {"sha256": artifact.sha256},
        },
    )
    recipe = recipe_bytes(
        render_recipe(build.manifest, build.artifacts, version="1.0.10", bucket="art")
    )
    stub["gg"].add_response(
        "create_component_version",
        {
            "arn": f"{COMP_ARN}:versions:1.0.10",
            "componentName": "com.example.Test",
            "componentVersion": "1.0.10",
            "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "status": {"componentState": "DEPLOYABLE", "errors": {}},
        },
        {"inlineRecipe": recipe},
    )
    result = publish(build, clients, bucket="art")
    assert result.created and result.version == "1.0.10"
    assert result.uploaded == (f"s3://art/{key}",)
    assert json.loads(recipe)["ComponentVersion"] == "1.0.10"


def test_publish_of_already_published_artifacts_is_a_no_op(tmp_path, stubs):
    clients, stub = stubs
    build = built(tmp_path)
    published = render_recipe(build.manifest, build.artifacts, version="1.0.0", bucket="art")
    stub["s3"].add_response("head_bucket", {"BucketRegion": REGION}, {"Bucket": "art"})
    stub["gg"].add_response(
        "list_components",
        {
            "components": [
                {"componentName": "com.example.Test", "arn": f"{COMP_ARN}:versions:1.0.0"}
            ]
        },
        {"scope": "PRIVATE"},
    )
    stub["gg"].add_response(
        "list_component_versions", {"componentVersions": [{"componentVersion": "1.0.0"}]},
        {"arn": COMP_ARN},
    )  # fmt: skip
    stub["gg"].add_response(
        "get_component",
        {"recipe": recipe_bytes(published), "recipeOutputFormat": "JSON"},
        {"arn": f"{COMP_ARN}:versions:1.0.0", "recipeOutputFormat": "JSON"},
    )
    result = publish(build, clients, bucket="art")
    assert not result.created and result.uploaded == ()


def test_bucket_in_another_region_fails_before_any_upload(tmp_path, stubs):
    clients, stub = stubs
    build = built(tmp_path)
    stub["s3"].add_response("head_bucket", {"BucketRegion": "eu-west-1"}, {"Bucket": "art"})
    with pytest.raises(UsageError) as info:
        publish(build, clients, bucket="art")
    message = str(info.value)
    assert "'art' is in eu-west-1, not us-east-1" in message
    assert "Specified artifact resource cannot be accessed" in message


CURRENT = {
    "targetArn": THING_ARN,
    "deploymentId": "d-old",
    "deploymentName": "pi01 functions",
    "deploymentStatus": "ACTIVE",
    "components": {
        "com.example.Keep": {"componentVersion": "2.0.0", "configurationUpdate": {"merge": "{}"}},
        "com.example.Test": {"componentVersion": "0.9.0"},
    },
    "deploymentPolicies": {
        "failureHandlingPolicy": "DO_NOTHING",
        "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
    },
}


def stub_thing_reads(stub, current):
    stub["gg"].add_response(
        "get_core_device", {"coreDeviceThingName": "pi01", "status": "HEALTHY"},
        {"coreDeviceThingName": "pi01"},
    )  # fmt: skip
    stub["iot"].add_response(
        "describe_thing", {"thingName": "pi01", "thingArn": THING_ARN}, {"thingName": "pi01"}
    )
    stub["gg"].add_response(
        "list_deployments",
        {
            "deployments": [
                {"targetArn": THING_ARN, "deploymentId": "d-old", "isLatestForTarget": True}
            ]
        },
        {"targetArn": THING_ARN, "historyFilter": "LATEST_ONLY"},
    )
    stub["gg"].add_response("get_deployment", current, {"deploymentId": "d-old"})


def test_thing_deployment_merges_with_the_current_one_and_rolls_back(stubs):
    clients, stub = stubs
    stub_thing_reads(stub, CURRENT)
    expected = {
        "targetArn": THING_ARN,
        "deploymentName": "pi01 functions",
        "components": {
            "com.example.Keep": {
                "componentVersion": "2.0.0",
                "configurationUpdate": {"merge": "{}"},
            },
            "com.example.Test": {"componentVersion": "1.0.0"},
        },
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
        },
    }
    stub["gg"].add_response(
        "create_deployment", {"deploymentId": "d-new", "iotJobId": "j"}, expected
    )
    request = DeployRequest(DeployTarget("thing", "pi01"), {"com.example.Test": "1.0.0"})
    result = deploy(request, clients)
    assert result.sent and result.deployment_id == "d-new" and result.previous_id == "d-old"


def test_unchanged_merge_is_not_sent(stubs):
    clients, stub = stubs
    current = json.loads(json.dumps(CURRENT))
    current["deploymentPolicies"]["failureHandlingPolicy"] = "ROLLBACK"
    stub_thing_reads(stub, current)
    request = DeployRequest(DeployTarget("thing", "pi01"), {"com.example.Test": "0.9.0"})
    result = deploy(request, clients)
    assert not result.sent


def test_group_deployment_carries_rollout_and_abort(stubs):
    clients, stub = stubs
    stub["iot"].add_response(
        "describe_thing_group", {"thingGroupName": "pis", "thingGroupArn": GROUP_ARN},
        {"thingGroupName": "pis"},
    )  # fmt: skip
    stub["gg"].add_response(
        "list_components",
        {"components": [{"componentName": "com.example.Test", "arn": COMP_ARN}]},
        {"scope": "PRIVATE"},
    )
    stub["gg"].add_response(
        "list_component_versions",
        {"componentVersions": [{"componentVersion": "1.2.0"}, {"componentVersion": "1.10.0"}]},
        {"arn": COMP_ARN},
    )
    stub["gg"].add_response(
        "list_deployments", {"deployments": []},
        {"targetArn": GROUP_ARN, "historyFilter": "LATEST_ONLY"},
    )  # fmt: skip
    expected = {
        "targetArn": GROUP_ARN,
        "deploymentName": "edgectl-group-pis",
        "components": {"com.example.Test": {"componentVersion": "1.10.0"}},
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
        },
        "iotJobConfiguration": {
            "jobExecutionsRolloutConfig": {
                "exponentialRate": {
                    "baseRatePerMinute": 5,
                    "incrementFactor": 2.0,
                    "rateIncreaseCriteria": {"numberOfSucceededThings": 10},
                },
                "maximumPerMinute": 50,
            },
            "abortConfig": {
                "criteriaList": [
                    {
                        "failureType": "ALL",
                        "action": "CANCEL",
                        "thresholdPercentage": 10.0,
                        "minNumberOfExecutedThings": 5,
                    }
                ]
            },
        },
    }
    stub["gg"].add_response("create_deployment", {"deploymentId": "d-g"}, expected)
    request = DeployRequest(
        DeployTarget("group", "pis"),
        {"com.example.Test": "LATEST"},
        rollout=Rollout(
            maximum_per_minute=50, exponential_base=5, abort_threshold=10.0, abort_min_executed=5
        ),
    )
    assert deploy(request, clients).deployment_id == "d-g"


def test_rollout_flags_on_a_thing_are_a_usage_error(stubs):
    clients, _ = stubs
    request = DeployRequest(
        DeployTarget("thing", "pi01"), {"a": "1.0.0"}, rollout=Rollout(maximum_per_minute=5)
    )
    with pytest.raises(UsageError, match="--group"):
        deploy(request, clients)


def test_fleet_status_reads_every_page(stubs):
    clients, stub = stubs
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    recent = now - timedelta(minutes=5)
    stub["gg"].add_response(
        "list_core_devices",
        {
            "coreDevices": [
                {"coreDeviceThingName": "pi01-thing", "status": "HEALTHY",
                 "lastStatusUpdateTimestamp": recent},
            ],
            "nextToken": "n",
        },
        {},
    )  # fmt: skip
    stub["gg"].add_response(
        "list_core_devices",
        {
            "coreDevices": [
                {"coreDeviceThingName": "pi02", "status": "UNHEALTHY",
                 "lastStatusUpdateTimestamp": recent},
                {"coreDeviceThingName": "old", "status": "HEALTHY",
                 "lastStatusUpdateTimestamp": now - timedelta(days=3)},
            ]
        },
        {"nextToken": "n"},
    )  # fmt: skip
    installed: dict[str, Any] = {
        "pi01-thing": [
            {"componentName": "com.example.Test", "componentVersion": "1.0.1",
             "lifecycleState": "RUNNING"},
            {"componentName": "aws.greengrass.Nucleus", "componentVersion": "2.12.0",
             "lifecycleState": "FINISHED"},
        ],
        "pi02": [
            {"componentName": "com.example.Test", "componentVersion": "1.0.1",
             "lifecycleState": "BROKEN", "lifecycleStatusCodes": ["RUN_ERROR"]},
        ],
        "old": [],
    }  # fmt: skip
    for thing in ("pi01-thing", "pi02", "old"):
        items = installed[thing]
        first, rest = items[:1], items[1:]
        if rest:
            stub["gg"].add_response(
                "list_installed_components",
                {"installedComponents": first, "nextToken": "x"},
                {"coreDeviceThingName": thing},
            )
            stub["gg"].add_response(
                "list_installed_components",
                {"installedComponents": rest},
                {"coreDeviceThingName": thing, "nextToken": "x"},
            )
        else:
            stub["gg"].add_response(
                "list_installed_components", {"installedComponents": first},
                {"coreDeviceThingName": thing},
            )  # fmt: skip
        stub["gg"].add_response(
            "list_effective_deployments",
            {
                "effectiveDeployments": [
                    {"deploymentId": "d1", "deploymentName": "fns", "targetArn": THING_ARN,
                     "coreDeviceExecutionStatus": "SUCCEEDED", "creationTimestamp": recent,
                     "modifiedTimestamp": recent},
                ]
            },
            {"coreDeviceThingName": thing},
        )  # fmt: skip
    status = fleet_status(
        clients.greengrass, now=now, inventory={"pi01": "pi01-thing", "pi09": "pi09"}
    )
    rows = {row.name: row for row in status.devices}
    assert rows["pi01"].state == "online"
    assert rows["pi01"].components["com.example.Test"].state == "running"
    assert "aws.greengrass.Nucleus" not in rows["pi01"].components
    assert rows["pi02"].state == "degraded"
    assert rows["pi02"].errors == ("com.example.Test: broken (RUN_ERROR)",)
    assert rows["old"].state == "offline"
    assert rows["pi09"].state == "never-seen"
    data = status.to_json()
    assert data["backend"] == "greengrass"
    assert data["devices"][0]["name"] == "old"
    assert data["devices"][1]["backlog"] is None
