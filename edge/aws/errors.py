"""Turn botocore exceptions into the project's ``CloudError`` family.

Callers above ``edge.aws`` never see botocore: they catch ``AccessDenied``
(fix credentials or policy, do not retry), ``NotFound`` (create the bucket or
table, do not retry), ``Throttled`` (back off and retry) or a plain
``CloudError`` whose ``retryable`` says whether the sync loop should try again:
connection failures, timeouts and 5xx are retryable, other 4xx are not, since
sending the same bad request again cannot succeed.

The message names the AWS error code, the resource and AWS's own words, e.g.
``AccessDenied on s3://thumbs/pi01/x.json: Access Denied`` or
``ResourceNotFoundException on dynamodb:table/thumbs: Requested resource not found``.
"""

from __future__ import annotations

import http
from typing import Any

from edge.errors import AccessDenied, CloudError, NotFound, Throttled

ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "MissingAuthenticationToken",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "UnauthorizedOperation",
    }
)
NOT_FOUND_CODES = frozenset(
    {
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchUpload",
        "NotFound",
        "ResourceNotFoundException",
        "TableNotFoundException",
    }
)
THROTTLED_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "TransactionInProgressException",
    }
)


def cloud_error(message: str, *, operation: str, resource: str, retryable: bool) -> CloudError:
    """A plain ``CloudError`` whose ``retryable`` is set per instance, not per class."""
    err = CloudError(message, operation=operation, resource=resource)
    err.retryable = retryable
    return err


def error_code(exc: Exception) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, *, operation: str, resource: str) -> CloudError:
    """Return the ``CloudError`` that says what went wrong with ``operation`` on ``resource``.

    The caller raises it ``from exc`` so the botocore traceback stays attached
    for debugging while the message stays one readable line.
    """
    if isinstance(exc, CloudError):
        return exc
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        return _from_client_error(exc.response, operation=operation, resource=resource)
    name = type(exc).__name__
    text = f"{name} on {resource}: {exc}"
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return AccessDenied(text, operation=operation, resource=resource)
    if isinstance(exc, bce.SSLError):
        # A certificate the CA bundle does not trust will not start trusting it on retry.
        return cloud_error(text, operation=operation, resource=resource, retryable=False)
    if isinstance(exc, bce.HTTPClientError | ConnectionError | TimeoutError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError:
        # the uplink is down or slow, which is exactly what the outbox waits out.
        return cloud_error(text, operation=operation, resource=resource, retryable=True)
    if isinstance(exc, bce.ParamValidationError):
        return cloud_error(text, operation=operation, resource=resource, retryable=False)
    return cloud_error(text, operation=operation, resource=resource, retryable=True)


def _from_client_error(response: dict[str, Any], *, operation: str, resource: str) -> CloudError:
    error = response.get("Error", {})
    code = str(error.get("Code", "") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code.isdigit():
        # HEAD requests carry no body, so S3 reports the bare status ("404").
        status = status or int(code)
        code = _status_name(int(code))
    message = str(error.get("Message", "") or "") or _status_phrase(status)
    text = f"{code or _status_name(status)} on {resource}: {message}"
    if code in THROTTLED_CODES or status in (429, 503):
        return Throttled(text, operation=operation, resource=resource)
    if code in ACCESS_DENIED_CODES or status == 403:
        return AccessDenied(text, operation=operation, resource=resource)
    if code in NOT_FOUND_CODES or status == 404:
        return NotFound(text, operation=operation, resource=resource)
    retryable = status >= 500 or status == 0
    return cloud_error(text, operation=operation, resource=resource, retryable=retryable)


def _status_name(status: int) -> str:
    """``404`` -> ``NotFound``: a code-like name for a bare HTTP status."""
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"HTTP{status}"


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP status {status}"
