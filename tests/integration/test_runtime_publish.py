"""Publishing the toolkit's own runtime component: the wheel goes to S3 (moto server over
HTTP), the recipe names it by digest, and CreateComponentVersion gets exactly that recipe."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3.session
import pytest
from botocore.stub import ANY, Stubber

from edge import __version__
from edge.aws.greengrassv2 import GreengrassV2Client
from edge.aws.iot import IotClient
from edge.deploy.greengrass import GreengrassClients
from edge.deploy.runtime_component import (
    RUNTIME_COMPONENT,
    load_template,
    publish_runtime,
    render_runtime_recipe,
)
from edge.errors import UsageError
from tests.unit.test_recipe import check_schema, schema  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARN = f"arn:aws:greengrass:us-east-1:123456789012:components:{RUNTIME_COMPONENT}"


def fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / f"edgectl-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("edge/__init__.py", "__version__ = 'x'\n")
    return wheel


def test_runtime_recipe_points_at_the_bucket_and_pins_the_digest(schema: Any) -> None:  # noqa: F811
    template = load_template(ROOT)
    digest = hashlib.sha256(b"wheel").digest()
    recipe, key = render_runtime_recipe(
        template, bucket="my-artifacts", wheel=Path("edgectl-0.1.0-py3-none-any.whl"),
        sha256=digest,
    )
    artifact = recipe["Manifests"][0]["Artifacts"][0]
    assert artifact["Uri"] == f"s3://my-artifacts/{key}"
    assert digest.hex() in key
    assert artifact["Digest"] == base64.b64encode(digest).decode()
    assert artifact["Algorithm"] == "SHA-256"
    assert "your-artifact-bucket" not in json.dumps(recipe)
    check_schema(schema, recipe)


def test_publish_runtime_uploads_the_wheel_and_creates_the_version(
    tmp_path: Path, s3_client: Any, s3_bucket: str
) -> None:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    gg = session.client("greengrassv2")
    wheel = fake_wheel(tmp_path)
    with Stubber(gg) as stub:
        stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
        stub.add_response(
            "create_component_version",
            {"arn": f"{ARN}:versions:{__version__}", "componentName": RUNTIME_COMPONENT,
             "componentVersion": __version__, "creationTimestamp": 0,
             "status": {"componentState": "REQUESTED"}},
            {"inlineRecipe": ANY},
        )
        clients = GreengrassClients(GreengrassV2Client(gg), s3_client, IotClient(None), "us-east-1")
        result = publish_runtime(ROOT, clients, bucket=s3_bucket, wheel=wheel)
        stub.assert_no_pending_responses()
    assert result.uploaded and result.created
    key = result.uri.split(f"s3://{s3_bucket}/", 1)[1]
    assert s3_client.get_object(s3_bucket, key) == wheel.read_bytes()

    # Publishing again with the version already there uploads and creates nothing.
    with Stubber(gg) as stub:
        stub.add_response(
            "list_components",
            {"components": [{"componentName": RUNTIME_COMPONENT, "arn": ARN}]},
            {"scope": "PRIVATE"},
        )
        stub.add_response(
            "list_component_versions",
            {"componentVersions": [{"componentVersion": __version__}]}, {"arn": ARN},
        )
        again = publish_runtime(ROOT, clients, bucket=s3_bucket, wheel=wheel)
    assert not again.uploaded and not again.created


def test_publish_runtime_refuses_a_bucket_in_another_region(
    tmp_path: Path, s3_client: Any
) -> None:
    s3_client.ensure_bucket("far-away-bucket", "eu-west-1")
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    clients = GreengrassClients(
        GreengrassV2Client(session.client("greengrassv2")), s3_client, IotClient(None),
        "us-east-1",
    )
    with pytest.raises(UsageError, match="far-away-bucket"):
        publish_runtime(ROOT, clients, bucket="far-away-bucket", wheel=fake_wheel(tmp_path))
