"""DynamoDBClient: request shapes, UnprocessedItems backoff, values in and out (Stubber)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from edge.aws.dynamodb import DynamoDBClient, to_dynamodb_value
from edge.aws.session import make_client
from edge.errors import AccessDenied, CloudError, NotFound, Throttled


class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def stubbed(boto_session, sleeps):
    client = make_client(boto_session, "dynamodb")
    with Stubber(client) as stub:
        ddb = DynamoDBClient(client, sleep=sleeps, rng=random.Random(7))
        yield ddb, stub
        stub.assert_no_pending_responses()


def put(pk: str, sk: str = "s") -> dict:
    return {"PutRequest": {"Item": {"pk": {"S": pk}, "sk": {"S": sk}}}}


def test_unprocessed_items_are_retried_to_completion(stubbed, sleeps) -> None:
    ddb, stub = stubbed
    first = [put("a"), put("b"), put("c")]
    stub.add_response(
        "batch_write_item",
        {"UnprocessedItems": {"t": [put("b"), put("c")]}},
        {"RequestItems": {"t": first}},
    )
    stub.add_response(
        "batch_write_item",
        {"UnprocessedItems": {"t": [put("c")]}},
        {"RequestItems": {"t": [put("b"), put("c")]}},
    )
    stub.add_response(
        "batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": {"t": [put("c")]}}
    )
    ddb.batch_put("t", [{"pk": "a", "sk": "s"}, {"pk": "b", "sk": "s"}, {"pk": "c", "sk": "s"}])
    # Two retries, each a full-jitter draw under a doubling ceiling (base 0.05 s).
    assert len(sleeps.delays) == 2
    assert 0 <= sleeps.delays[0] <= 0.05
    assert 0 <= sleeps.delays[1] <= 0.10
    rng = random.Random(7)
    assert sleeps.delays == [rng.uniform(0, 0.05), rng.uniform(0, 0.10)]


def test_unprocessed_items_bounded_then_throttled(boto_session, sleeps) -> None:
    client = make_client(boto_session, "dynamodb")
    ddb = DynamoDBClient(client, sleep=sleeps, rng=random.Random(1), max_batch_attempts=3)
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("batch_write_item", {"UnprocessedItems": {"t": [put("a")]}})
        with pytest.raises(Throttled, match=r"1 of 1 items still unprocessed after 3 attempts"):
            ddb.batch_put("t", [{"pk": "a", "sk": "s"}])
    assert len(sleeps.delays) == 2


def test_batch_put_chunks_of_25(stubbed) -> None:
    ddb, stub = stubbed
    items = [{"pk": f"p{i:02d}", "sk": "s"} for i in range(60)]
    for lo, hi in ((0, 25), (25, 50), (50, 60)):
        stub.add_response(
            "batch_write_item",
            {},
            {"RequestItems": {"t": [put(f"p{i:02d}") for i in range(lo, hi)]}},
        )
    ddb.batch_put("t", items)


def test_batch_put_collapses_duplicate_keys(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_response(
        "batch_write_item",
        {},
        {
            "RequestItems": {
                "t": [
                    {"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"S": "s"}, "v": {"N": "2"}}}},
                    {"PutRequest": {"Item": {"pk": {"S": "b"}, "sk": {"S": "s"}, "v": {"N": "1"}}}},
                ]
            }
        },
    )
    ddb.batch_put(
        "t",
        [
            {"pk": "a", "sk": "s", "v": 1},
            {"pk": "b", "sk": "s", "v": 1},
            {"pk": "a", "sk": "s", "v": 2},
        ],
        key=("pk", "sk"),
    )


def test_batch_put_whole_request_throttle(stubbed, sleeps) -> None:
    ddb, stub = stubbed
    stub.add_client_error(
        "batch_write_item", "ProvisionedThroughputExceededException", "slow down", 400
    )
    with pytest.raises(Throttled) as info:
        ddb.batch_put("thumbs", [{"pk": "a", "sk": "s"}])
    assert str(info.value) == (
        "ProvisionedThroughputExceededException on dynamodb:table/thumbs: slow down"
    )
    assert info.value.retryable is True
    assert sleeps.delays == []


def test_batch_put_missing_table(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_client_error("batch_write_item", "ResourceNotFoundException", "no table", 400)
    with pytest.raises(NotFound, match="dynamodb:table/thumbs"):
        ddb.batch_put("thumbs", [{"pk": "a", "sk": "s"}])


def test_batch_put_nothing_makes_no_call(stubbed) -> None:
    ddb, _ = stubbed
    ddb.batch_put("t", [])


def test_put_item_condition_new(stubbed) -> None:
    ddb, stub = stubbed
    expected = {
        "TableName": "t",
        "Item": {"id": {"S": "x"}, "n": {"N": "1.5"}},
        "ConditionExpression": "attribute_not_exists(#pk)",
        "ExpressionAttributeNames": {"#pk": "id"},
    }
    stub.add_response("put_item", {}, expected)
    stub.add_client_error("put_item", "ConditionalCheckFailedException", "exists", 400)
    item = {"id": "x", "n": 1.5}
    assert ddb.put_item("t", item, condition_new=True, partition_key="id") is True
    assert ddb.put_item("t", item, condition_new=True, partition_key="id") is False


def test_put_item_unconditional_failure_is_raised(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_response("put_item", {}, {"TableName": "t", "Item": {"pk": {"S": "x"}}})
    stub.add_client_error("put_item", "AccessDeniedException", "no", 400)
    assert ddb.put_item("t", {"pk": "x"}) is True
    with pytest.raises(AccessDenied):
        ddb.put_item("t", {"pk": "x"})


def test_conditional_failure_without_condition_is_an_error(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_client_error("put_item", "ConditionalCheckFailedException", "exists", 400)
    with pytest.raises(CloudError) as info:
        ddb.put_item("t", {"pk": "x"})
    assert info.value.retryable is False


def test_get_item_round_trips_plain_values(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_response(
        "get_item",
        {
            "Item": {
                "pk": {"S": "a"},
                "blob": {"B": b"\x00\x01"},
                "n": {"N": "2"},
                "m": {"M": {"l": {"L": [{"B": b"x"}]}}},
            }
        },
        {"TableName": "t", "Key": {"pk": {"S": "a"}}, "ConsistentRead": True},
    )
    stub.add_response(
        "get_item", {}, {"TableName": "t", "Key": {"pk": {"S": "b"}}, "ConsistentRead": True}
    )
    assert ddb.get_item("t", {"pk": "a"}) == {
        "pk": "a",
        "blob": b"\x00\x01",
        "n": Decimal(2),
        "m": {"l": [b"x"]},
    }
    assert ddb.get_item("t", {"pk": "b"}) is None


def test_scan_all_follows_pages(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_response(
        "scan",
        {"Items": [{"pk": {"S": "a"}}], "LastEvaluatedKey": {"pk": {"S": "a"}}},
        {"TableName": "t"},
    )
    stub.add_response(
        "scan",
        {"Items": [{"pk": {"S": "b"}}]},
        {"TableName": "t", "ExclusiveStartKey": {"pk": {"S": "a"}}},
    )
    assert ddb.scan_all("t") == [{"pk": "a"}, {"pk": "b"}]


def test_serialize_floats_bytes_and_non_finite(stubbed) -> None:
    ddb, _ = stubbed
    out = ddb.serialize(
        {"f": 0.1, "b": b"\xff", "nested": [1.25, {"x": float("nan")}], "t": True, "none": None}
    )
    assert out == {
        "f": {"N": "0.1"},
        "b": {"B": b"\xff"},
        "nested": {"L": [{"N": "1.25"}, {"M": {"x": {"S": "nan"}}}]},
        "t": {"BOOL": True},
        "none": {"NULL": True},
    }


def test_to_dynamodb_value_keeps_ints_and_bools() -> None:
    assert to_dynamodb_value({"a": 1, "b": True, "c": (1.5,)}) == {
        "a": 1,
        "b": True,
        "c": [Decimal("1.5")],
    }


def table_description(status: str, keys=(("pk", "HASH"), ("sk", "RANGE"))) -> dict:
    return {
        "Table": {
            "TableName": "tbl",
            "TableStatus": status,
            "KeySchema": [{"AttributeName": n, "KeyType": k} for n, k in keys],
        }
    }


def test_ensure_table_creates_and_waits_until_active(stubbed, sleeps) -> None:
    ddb, stub = stubbed
    stub.add_client_error("describe_table", "ResourceNotFoundException", "none", 400)
    stub.add_response(
        "create_table",
        {},
        {
            "TableName": "tbl",
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    stub.add_response("describe_table", table_description("CREATING"))
    stub.add_response("describe_table", table_description("CREATING"))
    stub.add_response("describe_table", table_description("ACTIVE"))
    ddb.ensure_table("tbl")
    assert sleeps.delays == [1.0, 1.0]


def test_ensure_table_existing_active_is_a_no_op(stubbed, sleeps) -> None:
    ddb, stub = stubbed
    stub.add_response("describe_table", table_description("ACTIVE"), {"TableName": "tbl"})
    ddb.ensure_table("tbl")
    assert sleeps.delays == []


def test_ensure_table_wait_is_bounded(boto_session, sleeps) -> None:
    client = make_client(boto_session, "dynamodb")
    ddb = DynamoDBClient(client, sleep=sleeps, table_wait=2.0, table_poll=1.0)
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("describe_table", table_description("CREATING"))
        with pytest.raises(CloudError, match="still CREATING after 2s") as info:
            ddb.ensure_table("tbl")
    assert info.value.retryable is True
    assert sleeps.delays == [1.0, 1.0]


def test_ensure_table_key_schema_mismatch(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_response("describe_table", table_description("ACTIVE", (("id", "HASH"),)))
    with pytest.raises(CloudError, match="KeySchemaMismatch on dynamodb:table/tbl") as info:
        ddb.ensure_table("tbl")
    assert info.value.retryable is False


def test_ensure_table_hash_only(stubbed) -> None:
    ddb, stub = stubbed
    stub.add_client_error("describe_table", "ResourceNotFoundException", "none", 400)
    stub.add_response(
        "create_table",
        {},
        {
            "TableName": "tbl",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    stub.add_response("describe_table", table_description("ACTIVE", (("id", "HASH"),)))
    ddb.ensure_table("tbl", partition_key="id", sort_key=None)
