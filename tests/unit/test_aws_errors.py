"""botocore exceptions become AccessDenied / NotFound / Throttled / CloudError."""

from __future__ import annotations

import pytest
from botocore import exceptions as bce
from botocore.stub import Stubber

from edge.aws.errors import translate
from edge.aws.s3 import S3Client
from edge.aws.session import make_client
from edge.errors import AccessDenied, CloudError, NotFound, Throttled


def client_error(code: str, status: int, message: str = "boom") -> bce.ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bce.ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, AccessDenied),
        ("AccessDeniedException", 400, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("ExpiredToken", 400, AccessDenied),
        ("UnrecognizedClientException", 400, AccessDenied),
        ("NoSuchBucket", 404, NotFound),
        ("NoSuchKey", 404, NotFound),
        ("ResourceNotFoundException", 400, NotFound),
        ("ThrottlingException", 400, Throttled),
        ("ProvisionedThroughputExceededException", 400, Throttled),
        ("SlowDown", 503, Throttled),
        ("RequestLimitExceeded", 400, Throttled),
        ("ServiceUnavailable", 503, Throttled),
    ],
)
def test_codes_map_to_error_classes(code: str, status: int, expected: type) -> None:
    err = translate(client_error(code, status), operation="PutObject", resource="s3://b/k")
    assert type(err) is expected
    assert err.operation == "PutObject"
    assert err.resource == "s3://b/k"


def test_message_names_code_resource_and_aws_message() -> None:
    err = translate(
        client_error("AccessDenied", 403, "Access Denied"),
        operation="PutObject",
        resource="s3://thumbs/pi01/a.json",
    )
    assert str(err) == "AccessDenied on s3://thumbs/pi01/a.json: Access Denied"
    assert err.retryable is False


def test_dynamodb_resource_message() -> None:
    err = translate(
        client_error("ResourceNotFoundException", 400, "Requested resource not found"),
        operation="BatchWriteItem",
        resource="dynamodb:table/thumbs",
    )
    assert str(err) == (
        "ResourceNotFoundException on dynamodb:table/thumbs: Requested resource not found"
    )


def test_bare_http_status_from_head_requests() -> None:
    err = translate(client_error("404", 404, ""), operation="HeadObject", resource="s3://b/k")
    assert isinstance(err, NotFound)
    assert str(err) == "NotFound on s3://b/k: Not Found"
    denied = translate(client_error("403", 403, ""), operation="HeadObject", resource="s3://b/k")
    assert isinstance(denied, AccessDenied)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (502, True), (400, False)])
def test_other_errors_retryable_only_for_5xx(status: int, retryable: bool) -> None:
    err = translate(client_error("Whatever", status), operation="X", resource="r")
    assert type(err) is CloudError
    assert err.retryable is retryable


def test_instance_retryable_does_not_leak_to_the_class() -> None:
    translate(client_error("ValidationException", 400), operation="X", resource="r")
    assert CloudError.retryable is True


@pytest.mark.parametrize(
    "exc",
    [
        bce.EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"),
        bce.ConnectTimeoutError(endpoint_url="https://s3.amazonaws.com"),
        bce.ReadTimeoutError(endpoint_url="https://s3.amazonaws.com"),
        bce.ConnectionClosedError(endpoint_url="https://s3.amazonaws.com"),
        ConnectionResetError("reset"),
    ],
)
def test_connection_failures_are_retryable(exc: Exception) -> None:
    err = translate(exc, operation="PutObject", resource="s3://b/k")
    assert type(err) is CloudError
    assert err.retryable is True
    assert str(err).startswith(f"{type(exc).__name__} on s3://b/k: ")


def test_tls_failure_is_not_retryable() -> None:
    exc = bce.SSLError(endpoint_url="https://10.0.0.5:8443", error="CERTIFICATE_VERIFY_FAILED")
    err = translate(exc, operation="PutObject", resource="s3://b/k")
    assert err.retryable is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(err)


def test_missing_credentials_is_access_denied() -> None:
    err = translate(bce.NoCredentialsError(), operation="PutObject", resource="s3://b/k")
    assert isinstance(err, AccessDenied)


def test_cloud_error_passes_through() -> None:
    original = Throttled("x", operation="o", resource="r")
    assert translate(original, operation="other", resource="other") is original


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [("AccessDenied", 403, AccessDenied), ("NoSuchBucket", 404, NotFound)],
)
def test_stubbed_s3_errors_are_translated_and_chained(boto_session, code, status, expected):
    client = make_client(boto_session, "s3")
    with Stubber(client) as stub:
        stub.add_client_error(
            "get_object", service_error_code=code, service_message="nope", http_status_code=status
        )
        with pytest.raises(expected) as info:
            S3Client(client).get_object("thumbs", "a.json")
    assert str(info.value) == f"{code} on s3://thumbs/a.json: nope"
    assert isinstance(info.value.__cause__, bce.ClientError)
