"""Artifacts through an object store (``artifacts.s3`` in a device file).

``edgectl deploy`` puts each artifact once at ``<prefix><sha256>.zip`` in the
device's bucket, on AWS or on the S3-compatible endpoint of its ``cloud``
(``cloud.s3_endpoint``, ``cloud.ca_bundle``, ``cloud.region``). The key is the
digest, so an object already there is not uploaded again; what the device
runs is decided by the signed digest in the desired state, never by the
object, so a tampered or replaced object fails the deployment on the device
before anything is activated.

The desired state names the object and a presigned GET (``S3Source.url``,
``PRESIGN_EXPIRY`` seconds); a device that comes back after the URL expired
fetches it with its own credentials instead (``edge.agent.deploy_host``).

The clients are built from an injected session factory (``edge.aws.session``);
presigning is local (no request), uploading uses ``edge.aws.s3.S3Client``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.aws.s3 import S3Client, s3_uri
from edge.errors import DeployError, EdgeError
from edge.model.deployment import ArtifactRef, S3Source
from edge.model.device import CloudConfig

log = logging.getLogger(__name__)

#: How long a presigned GET in a desired state stays valid (SigV4 allows at most 7 days).
PRESIGN_EXPIRY = 24 * 3600
#: Artifacts above this size go up in parts.
MULTIPART_THRESHOLD = 16 * 1024 * 1024
CONTENT_TYPE = "application/zip"

SessionFactory = Callable[[str], Any]  # region -> boto3 session


def _default_session(region: str) -> Any:
    from edge.aws.session import make_session

    return make_session(region)


@dataclass(frozen=True)
class Endpoint:
    """Where an object store answers: the device's ``cloud`` settings that matter to S3."""

    region: str
    url: str | None = None
    ca_bundle: Path | None = None

    @classmethod
    def of(cls, cloud: CloudConfig) -> Endpoint:
        return cls(cloud.region, cloud.s3_endpoint, cloud.ca_bundle)

    def describe(self) -> str:
        return self.url or f"S3 in {self.region}"


class ArtifactStore:
    """Uploads artifacts to, and presigns them on, the object stores of the devices."""

    def __init__(
        self,
        *,
        session: SessionFactory = _default_session,
        expiry: int = PRESIGN_EXPIRY,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._session = session
        self._expiry = expiry
        self._progress = progress
        self._clients: dict[Endpoint, Any] = {}
        self._lock = threading.Lock()

    def _raw(self, endpoint: Endpoint) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                from edge.aws.session import client_config, make_client

                client = make_client(
                    self._session(endpoint.region), "s3", endpoint_url=endpoint.url,
                    ca_bundle=endpoint.ca_bundle, region=endpoint.region,
                    # An S3-compatible endpoint (a Snowball Edge, MinIO, moto) wants path style.
                    config=client_config(s3_path_style=endpoint.url is not None),
                )  # fmt: skip
                self._clients[endpoint] = client
            return client

    def upload(self, path: Path, ref: ArtifactRef, endpoint: Endpoint) -> bool:
        """Put ``path`` at ``ref.s3`` unless an object is already there; True if uploaded."""
        if ref.s3 is None:
            raise DeployError(f"{path.name}: no S3 location to upload to")
        bucket, key = ref.s3.bucket, ref.s3.key
        where = f"{s3_uri(bucket, key)} on {endpoint.describe()}"
        s3 = S3Client(self._raw(endpoint))
        try:
            if s3.exists(bucket, key):
                log.info("artifact %s already at %s", ref.sha256[:12], where)
                self._report(1, 1)
                return False
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != ref.sha256:
                raise DeployError(f"{path}: changed since it was built (digest differs); "
                                  "build again")  # fmt: skip
            self._report(0, 1)
            put = s3.put_object_multipart if len(data) > MULTIPART_THRESHOLD else s3.put_object
            put(bucket, key, data, content_type=CONTENT_TYPE, metadata={"sha256": ref.sha256})
        except DeployError:
            raise
        except EdgeError as exc:
            raise DeployError(f"uploading {path.name} to {where}: {exc}") from exc
        self._report(1, 1)
        return True

    def presign(self, source: S3Source, endpoint: Endpoint) -> S3Source:
        """``source`` with a presigned GET valid for the store's expiry (no request is made)."""
        try:
            url: str = self._raw(endpoint).generate_presigned_url(
                "get_object", Params={"Bucket": source.bucket, "Key": source.key},
                ExpiresIn=self._expiry,
            )  # fmt: skip
        except Exception as exc:  # botocore: no credentials, bad endpoint
            raise DeployError(
                f"cannot presign {s3_uri(source.bucket, source.key)}: {exc}"
            ) from exc
        return S3Source(source.bucket, source.key, url)

    def _report(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress("upload", done, total)
