"""The DynamoDB calls the project makes, with plain Python values in and out.

The low-level client is used (not the boto3 resource layer) so a ``Stubber``
can check exact request shapes and so there is one client type to inject.
Values cross this boundary as plain Python: ``float`` becomes ``Decimal`` on
the way in (DynamoDB numbers are decimal; ``TypeSerializer`` refuses floats),
``bytes`` become binary attributes, and binary attributes come back as
``bytes``. Numbers come back as ``Decimal`` so nothing is rounded.

Errors are translated into the ``CloudError`` family. ``batch_put`` retries
the items DynamoDB hands back as unprocessed (its way of throttling part of a
batch) with exponential backoff and full jitter; a whole-request throttle is
raised as ``Throttled`` at once, because the outbox's sync loop already backs
off between attempts and keeps the records on disk meanwhile.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from edge.aws.errors import cloud_error, error_code, translate
from edge.errors import NotFound, Throttled

BATCH_LIMIT = 25  # BatchWriteItem's hard limit per request


def table_resource(table: str) -> str:
    """``dynamodb:table/<name>``: how errors and logs name a table."""
    return f"dynamodb:table/{table}"


def to_dynamodb_value(value: Any) -> Any:
    """Prepare a plain value for ``TypeSerializer``: floats to ``Decimal``, recursively.

    ``Decimal(str(f))`` keeps the short repr (``0.1`` stays ``0.1``, not
    ``0.1000000000000000055...``). NaN and infinities have no DynamoDB
    representation; they are stored as their strings so one odd value cannot
    wedge a whole batch forever.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else str(value)
    if isinstance(value, Decimal) and not value.is_finite():
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_dynamodb_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamodb_value(v) for v in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


class DynamoDBClient:
    """A typed wrapper around a boto3 DynamoDB client.

    ``sleep`` and ``rng`` are injected so tests can run the backoff without
    waiting and check the delays it chose.
    """

    def __init__(
        self,
        client: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        max_batch_attempts: int = 8,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        table_wait: float = 120.0,
        table_poll: float = 1.0,
    ) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._client = client
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._max_batch_attempts = max_batch_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._table_wait = table_wait
        self._table_poll = table_poll
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    # -- values ------------------------------------------------------------------------------

    def serialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A plain item as DynamoDB attribute values (``{"S": ...}`` and friends)."""
        return {str(k): self._ser.serialize(to_dynamodb_value(v)) for k, v in item.items()}

    def deserialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """DynamoDB attribute values as a plain item; binary comes back as ``bytes``."""
        return {k: _plain(self._de.deserialize(v)) for k, v in item.items()}

    # -- writes ------------------------------------------------------------------------------

    def batch_put(
        self,
        table: str,
        items: Sequence[Mapping[str, Any]],
        *,
        key: Sequence[str] = (),
        concurrency: int = 1,
    ) -> None:
        """Put every item, 25 per request, retrying unprocessed items until done.

        When ``key`` names the key attributes, items with the same key are
        collapsed to the last one: BatchWriteItem rejects a request that
        mentions one key twice, and a re-delivered record is the same item.
        Raises ``Throttled`` when items are still unprocessed after
        ``max_batch_attempts`` calls for one chunk. With ``concurrency`` > 1
        that many requests are in flight at once (the client is thread-safe);
        the call returns, or raises the first error, once every chunk is done.
        """
        unique = _dedupe(items, key)
        chunks = [unique[i : i + BATCH_LIMIT] for i in range(0, len(unique), BATCH_LIMIT)]

        def put(chunk: Sequence[Mapping[str, Any]]) -> None:
            self._write_chunk(table, [{"PutRequest": {"Item": self.serialize(i)}} for i in chunk])

        if concurrency <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                put(chunk)
            return
        from concurrent.futures import ThreadPoolExecutor

        # Each thread serialises its own chunk, so the CPU work overlaps the requests.
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ddb") as pool:
            futures = [pool.submit(put, chunk) for chunk in chunks]
            for future in futures:
                future.result()

    def _write_chunk(self, table: str, chunk: list[dict[str, Any]]) -> None:
        pending = chunk
        for attempt in range(self._max_batch_attempts):
            if attempt:
                self._sleep(self._delay(attempt - 1))
            try:
                response = self._client.batch_write_item(RequestItems={table: pending})
            except Exception as exc:
                raise translate(
                    exc, operation="BatchWriteItem", resource=table_resource(table)
                ) from exc
            pending = response.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                return
        raise Throttled(
            f"ProvisionedThroughputExceededException on {table_resource(table)}: "
            f"{len(pending)} of {len(chunk)} items still unprocessed after "
            f"{self._max_batch_attempts} attempts",
            operation="BatchWriteItem",
            resource=table_resource(table),
        )

    def _delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)].

        (The same rule as ``edge.sync.retry.Backoff``; kept inline so
        ``edge.aws`` does not depend on the room above it.)
        """
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(attempt, 32))
        return self._rng.uniform(0.0, ceiling)

    def put_item(
        self,
        table: str,
        item: Mapping[str, Any],
        *,
        condition_new: bool = False,
        partition_key: str = "pk",
    ) -> bool:
        """Put one item; with ``condition_new`` only if no item with its key exists yet.

        Returns False when the condition failed, i.e. the item was already
        there: that is the "already done" answer of an idempotency check, not
        an error.
        """
        kwargs: dict[str, Any] = {"TableName": table, "Item": self.serialize(item)}
        if condition_new:
            kwargs["ConditionExpression"] = "attribute_not_exists(#pk)"
            kwargs["ExpressionAttributeNames"] = {"#pk": partition_key}
        try:
            self._client.put_item(**kwargs)
        except Exception as exc:
            if condition_new and error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise translate(exc, operation="PutItem", resource=table_resource(table)) from exc
        return True

    # -- reads -------------------------------------------------------------------------------

    def get_item(
        self, table: str, key: Mapping[str, Any], *, consistent: bool = True
    ) -> dict[str, Any] | None:
        """The item with ``key``, or None. Strongly consistent by default, since callers
        use it to check whether a write they just made (or a peer made) landed."""
        try:
            response = self._client.get_item(
                TableName=table, Key=self.serialize(key), ConsistentRead=consistent
            )
        except Exception as exc:
            raise translate(exc, operation="GetItem", resource=table_resource(table)) from exc
        item = response.get("Item")
        return self.deserialize(item) if item else None

    def scan_all(self, table: str) -> list[dict[str, Any]]:
        """Every item of ``table``, across all Scan pages (for tests, tools and small tables)."""
        items: list[dict[str, Any]] = []
        try:
            for page in self._client.get_paginator("scan").paginate(TableName=table):
                items.extend(self.deserialize(raw) for raw in page.get("Items", []))
        except Exception as exc:
            raise translate(exc, operation="Scan", resource=table_resource(table)) from exc
        return items

    # -- tables ------------------------------------------------------------------------------

    def ensure_table(
        self, table: str, partition_key: str = "pk", sort_key: str | None = "sk"
    ) -> None:
        """Create ``table`` (on-demand, string keys) unless it exists, then wait until ACTIVE.

        Idempotent, so the agent may call it on every start. An existing table
        with a different key schema is an error: writing our items into it
        would fail on every batch. The wait is bounded by ``table_wait``
        seconds of injected sleeps.
        """
        resource = table_resource(table)
        description = self._describe(table)
        if description is None:
            schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
            attributes = [{"AttributeName": partition_key, "AttributeType": "S"}]
            if sort_key:
                schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
                attributes.append({"AttributeName": sort_key, "AttributeType": "S"})
            try:
                self._client.create_table(
                    TableName=table,
                    KeySchema=schema,
                    AttributeDefinitions=attributes,
                    BillingMode="PAY_PER_REQUEST",
                )
            except Exception as exc:
                if error_code(exc) != "ResourceInUseException":  # created concurrently
                    raise translate(exc, operation="CreateTable", resource=resource) from exc
            description = self._describe(table) or {}
        self._check_schema(table, description, partition_key, sort_key)
        waited = 0.0
        while description.get("TableStatus") != "ACTIVE":
            if waited >= self._table_wait:
                raise cloud_error(
                    f"TableNotActive on {resource}: still {description.get('TableStatus')} "
                    f"after {self._table_wait:g}s",
                    operation="DescribeTable",
                    resource=resource,
                    retryable=True,
                )
            self._sleep(self._table_poll)
            waited += self._table_poll
            description = self._describe(table) or {}

    def _describe(self, table: str) -> dict[str, Any] | None:
        try:
            response = self._client.describe_table(TableName=table)
        except Exception as exc:
            err = translate(exc, operation="DescribeTable", resource=table_resource(table))
            if isinstance(err, NotFound):
                return None
            raise err from exc
        return dict(response["Table"])

    @staticmethod
    def _check_schema(
        table: str, description: Mapping[str, Any], partition_key: str, sort_key: str | None
    ) -> None:
        found = {k["KeyType"]: k["AttributeName"] for k in description.get("KeySchema", [])}
        wanted = {"HASH": partition_key}
        if sort_key:
            wanted["RANGE"] = sort_key
        if found and found != wanted:
            raise cloud_error(
                f"KeySchemaMismatch on {table_resource(table)}: table has keys {found}, "
                f"results need {wanted}",
                operation="DescribeTable",
                resource=table_resource(table),
                retryable=False,
            )


def import_line(item: Mapping[str, Any]) -> bytes:
    """One line of a DynamoDB JSON import file: ``{"Item": {...}}`` with typed values.

    Binary values are base64 text, as the import format wants; numbers are
    strings, as on the wire.
    """
    import json

    from boto3.dynamodb.types import TypeSerializer

    ser = TypeSerializer()
    typed = {str(k): _jsonable(ser.serialize(to_dynamodb_value(v))) for k, v in item.items()}
    return json.dumps({"Item": typed}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _jsonable(value: Any) -> Any:
    import base64

    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and type(value).__name__ == "Binary":
        return base64.b64encode(bytes(value.value)).decode("ascii")
    return value


def _plain(value: Any) -> Any:
    """Undo boto3's ``Binary`` wrapper (recursively) so callers see ``bytes``."""
    from boto3.dynamodb.types import Binary

    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _dedupe(items: Sequence[Mapping[str, Any]], key: Sequence[str]) -> list[Mapping[str, Any]]:
    if not key:
        return list(items)
    by_key: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for item in items:
        by_key[tuple(item.get(k) for k in key)] = item
    return list(by_key.values())
