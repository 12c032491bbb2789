"""Client construction: timeouts always set, endpoint and CA bundle honoured, boto3 lazy."""

from __future__ import annotations

import subprocess
import sys

from edge.aws.session import client_config, make_client, make_session


def test_client_config_has_timeouts_and_few_retries() -> None:
    config = client_config()
    assert config.connect_timeout == 5
    assert config.read_timeout == 15
    assert config.retries == {"max_attempts": 2, "mode": "standard"}


def test_client_config_overrides() -> None:
    config = client_config(connect_timeout=1, read_timeout=2, max_attempts=1)
    assert (config.connect_timeout, config.read_timeout) == (1, 2)
    assert config.retries["max_attempts"] == 1


def test_make_session_sets_region(aws_env: None) -> None:
    assert make_session("eu-west-1").region_name == "eu-west-1"


def test_make_client_defaults_to_timeouts(boto_session) -> None:
    client = make_client(boto_session, "s3")
    assert client.meta.config.connect_timeout == 5
    assert client.meta.config.read_timeout == 15


def test_make_client_endpoint_and_ca_bundle(boto_session, tmp_path) -> None:
    bundle = tmp_path / "snowball-ca.pem"
    bundle.write_text("")
    client = make_client(
        boto_session,
        "s3",
        endpoint_url="https://192.0.2.10:8443",
        ca_bundle=str(bundle),
        config=client_config(read_timeout=3),
    )
    assert client.meta.endpoint_url == "https://192.0.2.10:8443"
    assert client.meta.config.read_timeout == 3
    # botocore keeps ``verify`` on the endpoint's HTTP session; no public accessor exists.
    assert client._endpoint.http_session._verify == str(bundle)


def test_importing_the_aws_and_sync_modules_does_not_import_boto3() -> None:
    code = (
        "import sys, edge.aws.session, edge.aws.errors, edge.aws.s3, edge.aws.dynamodb, "
        "edge.sync.records, edge.sync.sinks, edge.sync.retry;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_make_client_region_overrides_session(boto_session) -> None:
    assert make_client(boto_session, "dynamodb", region="ap-south-1").meta.region_name == (
        "ap-south-1"
    )
