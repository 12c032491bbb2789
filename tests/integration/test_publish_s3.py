"""Publishing against a real (moto) S3 server: upload once, skip the second time."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3.session
import pytest
from botocore.stub import ANY, Stubber

from edge.aws.greengrassv2 import GreengrassV2Client
from edge.aws.iot import IotClient
from edge.build.builder import BuildOptions, build_component
from edge.build.platforms import DEFAULT_PLATFORMS
from edge.build.recipe import artifact_key
from edge.deploy.greengrass import GreengrassClients, publish
from edge.errors import UsageError
from tests.harness.moto import unique_name
from tests.unit.test_build_component import make_component

pytestmark = pytest.mark.integration


def greengrass_stub(session: boto3.session.Session, creates: int) -> tuple[Stubber, object]:
    client = session.client("greengrassv2", region_name="us-east-1")
    stub = Stubber(client)
    for _ in range(creates):
        stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
        stub.add_response(
            "create_component_version",
            {"arn": "arn:aws:greengrass:us-east-1:1:components:c:versions:1.0.0",
             "componentName": "com.example.Test", "componentVersion": "1.0.0",
             "creationTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
             "status": {"componentState": "DEPLOYABLE"}},
            {"inlineRecipe": ANY},
        )  # fmt: skip
    stub.activate()
    return stub, client


def test_upload_then_skip_when_the_digest_is_already_there(
    tmp_path, s3_client, s3_bucket, boto_session
):
    build = build_component(
        make_component(tmp_path), BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c")
    )
    stub, gg = greengrass_stub(boto_session, creates=2)
    clients = GreengrassClients(GreengrassV2Client(gg), s3_client, IotClient(None), "us-east-1")
    first = publish(build, clients, bucket=s3_bucket)
    key = artifact_key("com.example.Test", "1.0.0", build.artifacts[0])
    assert first.uploaded == (f"s3://{s3_bucket}/{key}",)
    assert s3_client.get_object(s3_bucket, key) == build.artifacts[0].path.read_bytes()
    second = publish(build, clients, bucket=s3_bucket)
    assert second.uploaded == () and second.skipped_uploads == first.uploaded
    stub.assert_no_pending_responses()


def test_bucket_in_another_region_is_refused_before_upload(tmp_path, s3_client, boto_session):
    bucket = unique_name("eu")
    s3_client.ensure_bucket(bucket, "eu-west-1")
    build = build_component(
        make_component(tmp_path), BuildOptions(DEFAULT_PLATFORMS, cache_dir=tmp_path / "c")
    )
    stub, gg = greengrass_stub(boto_session, creates=0)
    clients = GreengrassClients(GreengrassV2Client(gg), s3_client, IotClient(None), "us-east-1")
    with pytest.raises(UsageError, match="is in eu-west-1, not us-east-1"):
        publish(build, clients, bucket=bucket)
    assert s3_client.list_keys(bucket) == []
