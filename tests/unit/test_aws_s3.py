"""S3Client request shapes and error handling, checked with botocore's Stubber."""

from __future__ import annotations

import io

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from edge.aws.s3 import S3Client
from edge.aws.session import make_client
from edge.errors import AccessDenied, CloudError, NotFound


@pytest.fixture
def stubbed(boto_session):
    client = make_client(boto_session, "s3")
    with Stubber(client) as stub:
        yield S3Client(client), stub
        stub.assert_no_pending_responses()


def test_put_object_request_shape(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response(
        "put_object",
        {},
        {
            "Bucket": "thumbs",
            "Key": "pi01/a.json",
            "Body": b"{}",
            "ContentType": "application/json",
            "Metadata": {"seq": "7"},
        },
    )
    s3.put_object(
        "thumbs", "pi01/a.json", b"{}", content_type="application/json", metadata={"seq": "7"}
    )


def test_get_object_reads_the_body(stubbed) -> None:
    s3, stub = stubbed
    body = StreamingBody(io.BytesIO(b"hello"), 5)
    stub.add_response("get_object", {"Body": body}, {"Bucket": "b", "Key": "k"})
    assert s3.get_object("b", "k") == b"hello"


def test_exists_true_false_and_denied(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response("head_object", {}, {"Bucket": "b", "Key": "k"})
    stub.add_client_error("head_object", "404", "", 404)
    stub.add_client_error("head_object", "403", "", 403)
    assert s3.exists("b", "k") is True
    assert s3.exists("b", "k") is False
    with pytest.raises(AccessDenied):
        s3.exists("b", "k")


def test_list_keys_follows_pages(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response(
        "list_objects_v2",
        {
            "Contents": [{"Key": "p/1"}, {"Key": "p/2"}],
            "IsTruncated": True,
            "NextContinuationToken": "t1",
        },
        {"Bucket": "b", "Prefix": "p/"},
    )
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "p/3"}], "IsTruncated": False},
        {"Bucket": "b", "Prefix": "p/", "ContinuationToken": "t1"},
    )
    assert s3.list_keys("b", "p/") == ["p/1", "p/2", "p/3"]


def test_ensure_bucket_outside_us_east_1_sets_location(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "404", "", 404)
    stub.add_response(
        "create_bucket",
        {},
        {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}},
    )
    s3.ensure_bucket("b", "eu-west-1")


def test_ensure_bucket_in_us_east_1_has_no_location(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "404", "", 404)
    stub.add_response("create_bucket", {}, {"Bucket": "b"})
    s3.ensure_bucket("b", "us-east-1")


def test_ensure_bucket_existing_is_a_no_op(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response("head_bucket", {}, {"Bucket": "b"})
    s3.ensure_bucket("b", "us-east-1")


def test_ensure_bucket_race_is_tolerated(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "404", "", 404)
    stub.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", "yours", 409)
    s3.ensure_bucket("b", "us-east-1")


def test_ensure_bucket_owned_by_someone_else(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "403", "", 403)
    with pytest.raises(AccessDenied, match="on s3://b"):
        s3.ensure_bucket("b", "us-east-1")


def test_ensure_bucket_name_taken(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "404", "", 404)
    stub.add_client_error("create_bucket", "BucketAlreadyExists", "taken", 409)
    with pytest.raises(CloudError, match="BucketAlreadyExists on s3://b: taken") as info:
        s3.ensure_bucket("b", "us-east-1")
    assert info.value.retryable is False


def test_bucket_region_from_header_even_on_redirect(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response(
        "head_bucket",
        {"ResponseMetadata": {"HTTPHeaders": {"x-amz-bucket-region": "eu-central-1"}}},
        {"Bucket": "b"},
    )
    stub.add_client_error(
        "head_bucket",
        "301",
        "",
        301,
        response_meta={"HTTPHeaders": {"x-amz-bucket-region": "ap-south-1"}},
    )
    assert s3.bucket_region("b") == "eu-central-1"
    assert s3.bucket_region("b") == "ap-south-1"


def test_bucket_region_falls_back_to_location(stubbed) -> None:
    s3, stub = stubbed
    stub.add_response("head_bucket", {}, {"Bucket": "b"})
    stub.add_response("get_bucket_location", {}, {"Bucket": "b"})
    stub.add_response("head_bucket", {}, {"Bucket": "b"})
    stub.add_response("get_bucket_location", {"LocationConstraint": "EU"}, {"Bucket": "b"})
    assert s3.bucket_region("b") == "us-east-1"
    assert s3.bucket_region("b") == "eu-west-1"


def test_bucket_region_missing_bucket(stubbed) -> None:
    s3, stub = stubbed
    stub.add_client_error("head_bucket", "404", "", 404)
    with pytest.raises(NotFound):
        s3.bucket_region("b")
