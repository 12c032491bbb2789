"""Which sinks a component's results go to on one device, and how they reach the cloud.

The device class decides the profile:

* every class: S3 and DynamoDB through the device file's endpoints (or boto3's
  ``AWS_ENDPOINT_URL_*`` variables), checked against ``cloud.ca_bundle``;
* ``snowball-edge``: S3 is the box's own S3-compatible endpoint (``https``,
  port 8443 when the URL names none, the box's CA bundle, requests signed for
  region ``snow``, path-style addressing). The box has no DynamoDB, so unless
  the device file gives a ``cloud.dynamodb_endpoint`` (a link to the cloud),
  DynamoDB results are kept on the box's S3 as DynamoDB JSON import files
  under ``import/dynamodb/<table>/`` (``DynamoDBImportSink``).

One boto3 client per service is shared by all components: a client costs
megabytes and a device runs many components.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from edge.errors import ValidationError
from edge.sync.sinks import DynamoDBImportSink, DynamoDBSink, LocalDirSink, S3Sink, Sink

SNOWBALL_S3_PORT = 8443
#: BatchWriteItem requests in flight per batch: hides the round trip without
#: flooding a table (a batch of 500 rows is 20 requests).
DYNAMODB_CONCURRENCY = 4
SNOWBALL_REGION = "snow"


class _Cloud(Protocol):
    @property
    def region(self) -> str: ...
    @property
    def s3_endpoint(self) -> str | None: ...
    @property
    def dynamodb_endpoint(self) -> str | None: ...
    @property
    def ca_bundle(self) -> Path | None: ...


class _Device(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def device_class(self) -> str: ...
    @property
    def thing_name(self) -> str: ...
    @property
    def cloud(self) -> _Cloud: ...


@dataclass(frozen=True)
class Profile:
    """How one device reaches S3 and DynamoDB."""

    s3_endpoint: str | None
    s3_region: str
    s3_path_style: bool
    dynamodb_endpoint: str | None
    dynamodb_region: str
    ca_bundle: Path | None
    dynamodb_in_s3: bool  # no DynamoDB link: keep DynamoDB results as import files in S3


def profile_for(device: _Device) -> Profile:
    cloud = device.cloud
    if device.device_class != "snowball-edge":
        return Profile(
            s3_endpoint=cloud.s3_endpoint,
            s3_region=cloud.region,
            s3_path_style=False,
            dynamodb_endpoint=cloud.dynamodb_endpoint,
            dynamodb_region=cloud.region,
            ca_bundle=cloud.ca_bundle,
            dynamodb_in_s3=False,
        )
    return Profile(
        s3_endpoint=snowball_s3_endpoint(cloud.s3_endpoint),
        s3_region=SNOWBALL_REGION,
        s3_path_style=True,
        dynamodb_endpoint=cloud.dynamodb_endpoint,
        dynamodb_region=cloud.region if cloud.region != SNOWBALL_REGION else "us-east-1",
        ca_bundle=cloud.ca_bundle,
        dynamodb_in_s3=cloud.dynamodb_endpoint is None,
    )


def snowball_s3_endpoint(url: str | None) -> str | None:
    """``https://box`` becomes ``https://box:8443``; a URL with a port stays as it is."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.port is None and parts.hostname:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit(parts._replace(netloc=f"{host}:{SNOWBALL_S3_PORT}"))
    return url


SessionFactory = Callable[[str], Any]


class SinkFactory:
    """``factory(manifest)`` -> {sink name: Sink}; what ``edge.agent.Agent`` calls per
    component. ``session`` builds a boto3 session for a region (the credential
    chain, or the AWS IoT credentials provider)."""

    def __init__(
        self,
        device: _Device,
        *,
        results_dir: Path | None = None,
        session: SessionFactory | None = None,
    ) -> None:
        self.device = device
        self.profile = profile_for(device)
        self._results_dir = results_dir
        self._session = session
        self._clients: dict[str, Any] = {}
        self._sessions: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service in self._clients:
            return self._clients[service]
        from edge.aws.dynamodb import DynamoDBClient
        from edge.aws.s3 import S3Client
        from edge.aws.session import client_config, make_client, make_session

        p = self.profile
        region = p.s3_region if service == "s3" else p.dynamodb_region
        # One session per region for every client: each boto3 session loads its own
        # copy of the service models and credential chain (about 7 MB measured).
        session = self._sessions.get(region)
        if session is None:
            session = self._session(region) if self._session else make_session(region)
            self._sessions[region] = session
        raw = make_client(
            session,
            service,
            endpoint_url=p.s3_endpoint if service == "s3" else p.dynamodb_endpoint,
            ca_bundle=p.ca_bundle,
            region=region,
            config=client_config(s3_path_style=p.s3_path_style) if service == "s3" else None,
        )
        client = S3Client(raw) if service == "s3" else DynamoDBClient(raw)
        self._clients[service] = client
        return client

    def __call__(self, manifest: Any) -> Mapping[str, Sink]:
        results = manifest.results
        sinks: dict[str, Sink] = {}
        if results.s3 is not None:
            sinks["s3"] = S3Sink(
                self._client("s3"),
                bucket=results.s3.bucket,
                prefix_template=results.s3.prefix,
                thing=self.device.thing_name,
                component=manifest.name,
                layout=results.s3.layout,
            )
        ddb = results.dynamodb
        if ddb is not None and self.profile.dynamodb_in_s3:
            bucket = ddb.import_bucket or (results.s3.bucket if results.s3 else None)
            if bucket is None:
                raise ValidationError(
                    f"{manifest.name}: device {self.device.name!r} has no DynamoDB link "
                    "(snowball-edge without cloud.dynamodb_endpoint); give "
                    "results.dynamodb.import_bucket or results.s3 for the import files",
                    field="results.dynamodb.import_bucket",
                )
            sinks["dynamodb"] = DynamoDBImportSink(
                self._client("s3"),
                bucket=bucket,
                table=ddb.table,
                thing=self.device.thing_name,
                component=manifest.name,
                partition_key=ddb.partition_key,
                sort_key=ddb.sort_key,
            )
        elif ddb is not None:
            sinks["dynamodb"] = DynamoDBSink(
                self._client("dynamodb"),
                table=ddb.table,
                partition_key=ddb.partition_key,
                sort_key=ddb.sort_key,
                conditional=ddb.conditional,
                concurrency=DYNAMODB_CONCURRENCY,
            )
        if self._results_dir is not None:
            sinks["local"] = LocalDirSink(self._results_dir)
        return sinks
