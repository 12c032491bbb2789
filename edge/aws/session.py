"""Sessions, client configuration and client construction for every AWS call.

This is the one place that decides how the project talks to AWS (and to
S3/DynamoDB compatible endpoints such as a Snowball Edge's S3 on port 8443), so
the rules live here once:

* Every client has explicit connect and read timeouts; an edge device on a
  flaky uplink must never hang in a socket read.
* botocore's own retries stay low (``max_attempts=2``): the outbox's sync loop
  retries with its own backoff and keeps records on disk meanwhile, and two
  nested retry loops would multiply the wait without adding safety.
* Clients are built from an injected session, never at import time, so tests
  point them at a moto server or wrap them in a ``Stubber``.
* ``boto3`` is imported inside the functions: the CLI's cold ``invoke`` path
  never touches AWS and should not pay for importing it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3.session
    import botocore.config


def make_session(region: str, *, profile: str | None = None) -> boto3.session.Session:
    """Return a session for ``region``; credentials come from the usual chain or ``profile``.

    Building the session is cheap and does no network I/O; credentials are only
    resolved when a client signs its first request.
    """
    import boto3.session

    return boto3.session.Session(region_name=region, profile_name=profile)


def client_config(
    *,
    connect_timeout: float = 5,
    read_timeout: float = 15,
    max_attempts: int = 2,
    s3_path_style: bool = False,
) -> botocore.config.Config:
    """Return the client config every edge client uses: bounded timeouts, few retries.

    ``standard`` retry mode is used because it retries throttling and transient
    5xx the same way across services; ``max_attempts`` counts the first call.
    ``s3_path_style`` puts the bucket in the path (``https://box:8443/bucket/key``),
    which S3-compatible endpoints such as a Snowball Edge's need.
    """
    import botocore.config

    extra: dict[str, Any] = {"s3": {"addressing_style": "path"}} if s3_path_style else {}
    return botocore.config.Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        **extra,
    )


def make_client(
    session: boto3.session.Session,
    service: str,
    *,
    endpoint_url: str | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
    config: botocore.config.Config | None = None,
    region: str | None = None,
) -> Any:
    """Build a low-level client for ``service`` from ``session``.

    ``endpoint_url`` points the client at an S3/DynamoDB compatible endpoint (a
    Snowball Edge, a moto server); ``ca_bundle`` is the path of the CA
    certificate that endpoint presents, passed as ``verify`` so TLS is still
    checked instead of switched off. When ``config`` is omitted the defaults of
    :func:`client_config` apply, so no client is ever built without timeouts.
    ``region`` overrides the session's region (a device's configured region
    wins over whatever the credential chain's profile says).
    """
    kwargs: dict[str, Any] = {"config": config if config is not None else client_config()}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if region:
        kwargs["region_name"] = region
    if ca_bundle:
        kwargs["verify"] = os.fspath(ca_bundle)
    return session.client(service, **kwargs)
