"""Fixtures: a moto server over real HTTP, a sandboxed boto3 session, edge AWS clients.

One moto server per test session (starting it costs about a second); tests
stay independent by using a fresh bucket or table name each (``unique_name``)
instead of resetting the server. The session has dummy credentials and never
reads the developer's ~/.aws files, so a test cannot reach a real account.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class MotoServer:
    url: str
    host: str
    port: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str = "edge") -> str:
    """A bucket/table name no other test uses (lowercase, S3-valid)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(url=f"http://127.0.0.1:{port}", host="127.0.0.1", port=port)
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Cut botocore off from the developer's AWS config and credentials for one test."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def boto_session(aws_env: None) -> Any:
    import boto3.session

    return boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_client(moto_server: MotoServer, boto_session: Any) -> Any:
    from edge.aws.s3 import S3Client
    from edge.aws.session import make_client

    return S3Client(make_client(boto_session, "s3", endpoint_url=moto_server.url))


@pytest.fixture
def ddb_client(moto_server: MotoServer, boto_session: Any) -> Any:
    from edge.aws.dynamodb import DynamoDBClient
    from edge.aws.session import make_client

    client = make_client(boto_session, "dynamodb", endpoint_url=moto_server.url)
    return DynamoDBClient(client, sleep=lambda _seconds: None)


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh, empty bucket on the moto server."""
    name = unique_name("bucket")
    s3_client.ensure_bucket(name, "us-east-1")
    return name


@pytest.fixture
def ddb_table(ddb_client: Any) -> str:
    """A fresh results table (pk/sk) on the moto server."""
    name = unique_name("table")
    ddb_client.ensure_table(name)
    return name
