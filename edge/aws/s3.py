"""The S3 calls the project makes, and nothing else.

Wrapping the client keeps botocore's response shapes and exceptions out of the
sinks: every method takes and returns plain values and raises only the
``CloudError`` family (see ``edge.aws.errors``). The client is injected, so the
same class talks to AWS, to a Snowball Edge's S3 endpoint, to a moto server or
to a ``Stubber``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from edge.aws.errors import error_code, translate
from edge.errors import NotFound

# GetBucketLocation's legacy answers: no constraint means us-east-1, "EU" means eu-west-1.
_LEGACY_LOCATIONS = {"": "us-east-1", "EU": "eu-west-1"}


def s3_uri(bucket: str, key: str = "") -> str:
    """``s3://bucket/key``: how errors and logs name an object."""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


class S3Client:
    """A typed wrapper around a boto3 S3 client (built with ``edge.aws.session.make_client``)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write ``body`` at ``key``; a second put of the same key replaces the object."""
        try:
            self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=dict(metadata or {}),
            )
        except Exception as exc:
            raise translate(exc, operation="PutObject", resource=s3_uri(bucket, key)) from exc

    def put_object_multipart(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        """Write a large ``body`` at ``key`` in parts of ``part_size`` bytes.

        A failed upload is aborted so no parts linger (and cost) in the bucket;
        completing it replaces the object as a plain put would.
        """
        resource = s3_uri(bucket, key)
        try:
            upload = self._client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType=content_type, Metadata=dict(metadata or {})
            )
        except Exception as exc:
            raise translate(exc, operation="CreateMultipartUpload", resource=resource) from exc
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), part_size), start=1):
                answer = self._client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body[start : start + part_size],
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as exc:
            # The first error is the one to report; a failed abort changes nothing.
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise translate(exc, operation="UploadPart", resource=resource) from exc

    def get_object(self, bucket: str, key: str) -> bytes:
        """Return the object's bytes (the read is bounded by the client's read timeout)."""
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
            stream = response["Body"]
            try:
                return bytes(stream.read())
            finally:
                stream.close()
        except Exception as exc:
            raise translate(exc, operation="GetObject", resource=s3_uri(bucket, key)) from exc

    def exists(self, bucket: str, key: str) -> bool:
        """True when ``key`` exists; a missing bucket or a denied HEAD still raises.

        Only a 404 on the key means "absent"; treating a 403 as absent would
        make a caller re-upload forever under a policy that forbids reads.
        """
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            err = translate(exc, operation="HeadObject", resource=s3_uri(bucket, key))
            if isinstance(err, NotFound) and error_code(exc) != "NoSuchBucket":
                return False
            raise err from exc
        return True

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, across as many ListObjectsV2 pages as it takes."""
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as exc:
            raise translate(
                exc, operation="ListObjectsV2", resource=s3_uri(bucket, prefix)
            ) from exc
        return keys

    def ensure_bucket(self, bucket: str, region: str) -> None:
        """Create ``bucket`` in ``region`` unless it is already there; safe to call every start.

        HEAD first, because in us-east-1 CreateBucket on a bucket someone else
        owns is not always an error, and a 403 on HEAD is the clear signal that
        the name is taken by another account.
        """
        try:
            self._client.head_bucket(Bucket=bucket)
            return
        except Exception as exc:
            err = translate(exc, operation="HeadBucket", resource=s3_uri(bucket))
            if not isinstance(err, NotFound):
                raise err from exc
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            # us-east-1 rejects an explicit LocationConstraint; every other region needs one.
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except Exception as exc:
            if error_code(exc) == "BucketAlreadyOwnedByYou":
                return  # another process won the race; the bucket is ours either way
            raise translate(exc, operation="CreateBucket", resource=s3_uri(bucket)) from exc

    def bucket_region(self, bucket: str) -> str:
        """The region ``bucket`` lives in.

        S3 answers HEAD with an ``x-amz-bucket-region`` header even on the 301
        and 403 it returns for a bucket in another region or account, so that
        header is read first; GetBucketLocation is the fallback for S3
        compatible endpoints that do not send it.
        """
        try:
            response = self._client.head_bucket(Bucket=bucket)
        except Exception as exc:
            region = _region_header(getattr(exc, "response", None))
            if region:
                return region
            raise translate(exc, operation="HeadBucket", resource=s3_uri(bucket)) from exc
        region = response.get("BucketRegion") or _region_header(response)
        if region:
            return str(region)
        try:
            location = self._client.get_bucket_location(Bucket=bucket)
        except Exception as exc:
            raise translate(exc, operation="GetBucketLocation", resource=s3_uri(bucket)) from exc
        constraint = location.get("LocationConstraint") or ""
        return _LEGACY_LOCATIONS.get(constraint, constraint)


def _region_header(response: object) -> str:
    if not isinstance(response, dict):
        return ""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(headers.get("x-amz-bucket-region", ""))
