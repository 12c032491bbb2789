"""Temporary AWS credentials from the AWS IoT credentials provider.

A device that already has an X.509 certificate for AWS IoT needs no long-lived
AWS keys: it calls ``https://<credentials endpoint>/role-aliases/<alias>/credentials``
with its certificate (mutual TLS) and its thing name in the
``x-amzn-iot-thingname`` header, and gets back temporary credentials for the
IAM role the role alias points to (``{"credentials": {"accessKeyId",
"secretAccessKey", "sessionToken", "expiration"}}``).

``iot_session`` puts that exchange first in a boto3 session's credential chain
as botocore ``RefreshableCredentials``: the credentials are fetched on first
use and fetched again ``refresh_margin`` seconds before they expire (and, at
the latest, ``refresh_margin / 2`` before, blocking), so a long-running agent
never signs with expired keys. The exchange has its own timeout and its errors
are the project's ``CloudError`` family: 401/403 is ``AccessDenied`` (a
certificate that is not attached, a role alias without permission), anything
else retryable, so the outbox waits it out.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edge.aws.errors import cloud_error
from edge.errors import AccessDenied, CloudError

if TYPE_CHECKING:
    import boto3.session

METHOD = "iot-credentials-provider"


@dataclass(frozen=True)
class IotCredentialsConfig:
    endpoint: str  # host[:port] of the account's credentials provider endpoint
    role_alias: str
    thing_name: str
    cert: Path
    key: Path
    ca: Path | None = None  # None: the system's trust store (Amazon Root CA)


class IotCredentialsProvider:
    """Fetches one set of temporary credentials per call to ``fetch``."""

    def __init__(self, config: IotCredentialsConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self.fetches = 0

    @property
    def resource(self) -> str:
        return f"https://{self.config.endpoint}/role-aliases/{self.config.role_alias}"

    def _context(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.create_default_context(cafile=str(cfg.ca) if cfg.ca else None)
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
        return ctx

    def fetch(self) -> dict[str, str]:
        """Credentials as botocore metadata: access_key, secret_key, token, expiry_time."""
        cfg = self.config
        host, _, port = cfg.endpoint.partition(":")
        path = f"/role-aliases/{quote(cfg.role_alias, safe='')}/credentials"
        try:
            conn = http.client.HTTPSConnection(
                host, int(port) if port else 443, timeout=self.timeout, context=self._context()
            )
            try:
                conn.request("GET", path, headers={"x-amzn-iot-thingname": cfg.thing_name})
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
        except ssl.SSLError as exc:
            raise cloud_error(
                f"{type(exc).__name__} on {self.resource}: {exc}",
                operation="AssumeRoleWithCertificate", resource=self.resource, retryable=False,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise cloud_error(
                f"{type(exc).__name__} on {self.resource}: {exc}",
                operation="AssumeRoleWithCertificate", resource=self.resource, retryable=True,
            ) from exc
        self.fetches += 1
        return self._parse(response.status, body)

    def _parse(self, status: int, body: bytes) -> dict[str, str]:
        if status in (401, 403):
            raise AccessDenied(
                f"HTTP {status} on {self.resource}: {_message(body)} (is the certificate "
                f"attached to thing {self.config.thing_name!r} and allowed to assume the role?)",
                operation="AssumeRoleWithCertificate", resource=self.resource,
            )
        if status != 200:
            raise cloud_error(
                f"HTTP {status} on {self.resource}: {_message(body)}",
                operation="AssumeRoleWithCertificate", resource=self.resource,
                retryable=status >= 500 or status == 429,
            )
        try:
            creds = json.loads(body)["credentials"]
            return {
                "access_key": str(creds["accessKeyId"]),
                "secret_key": str(creds["secretAccessKey"]),
                "token": str(creds["sessionToken"]),
                "expiry_time": str(creds["expiration"]),
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise cloud_error(
                f"malformed answer from {self.resource}: {exc!r}",
                operation="AssumeRoleWithCertificate", resource=self.resource, retryable=True,
            ) from exc


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", "")) or body[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def refreshable(
    provider: IotCredentialsProvider,
    *,
    refresh_margin: float = 300.0,
    clock: Callable[[], float] = time.time,
) -> Any:
    """botocore ``RefreshableCredentials`` backed by ``provider`` (first fetch now)."""
    from botocore.credentials import RefreshableCredentials

    metadata = provider.fetch()
    return RefreshableCredentials(
        access_key=metadata["access_key"],
        secret_key=metadata["secret_key"],
        token=metadata["token"],
        expiry_time=_parse_time(metadata["expiry_time"]),
        refresh_using=provider.fetch,
        method=METHOD,
        time_fetcher=lambda: dt.datetime.fromtimestamp(clock(), dt.UTC),
        advisory_timeout=int(refresh_margin),
        mandatory_timeout=int(refresh_margin / 2),
    )


def _parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def iot_session(
    provider: IotCredentialsProvider,
    region: str,
    *,
    refresh_margin: float = 300.0,
    clock: Callable[[], float] = time.time,
) -> boto3.session.Session:
    """A boto3 session whose credentials come from ``provider`` and refresh before expiry.

    The exchange happens when a client first signs a request, not here, so an
    agent starts while the uplink is down and the outbox waits for it.
    """
    import boto3.session
    import botocore.credentials
    import botocore.session

    class _Provider(botocore.credentials.CredentialProvider):  # type: ignore[misc]
        METHOD = METHOD
        CANONICAL_NAME = "AwsIotCredentialsProvider"

        def load(self) -> Any:
            try:
                return refreshable(provider, refresh_margin=refresh_margin, clock=clock)
            except CloudError:
                raise
            except Exception as exc:  # a bad key file: say which
                raise cloud_error(
                    f"cannot use the device certificate for {provider.resource}: {exc}",
                    operation="AssumeRoleWithCertificate", resource=provider.resource,
                    retryable=False,
                ) from exc

    core = botocore.session.Session()
    core.get_component("credential_provider").insert_before("env", _Provider())
    return boto3.session.Session(botocore_session=core, region_name=region)
