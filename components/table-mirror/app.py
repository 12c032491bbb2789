"""Table mirror: apply change events to a DynamoDB table, idempotently.

A change event::

    {"op": "upsert", "key": "42", "version": 7, "item": {"name": "pump", "rpm": 1200}}
    {"op": "delete", "key": "42", "version": 8}

Every item carries the ``version`` of the change that wrote it. An upsert is a
conditional put (``attribute_not_exists(key) OR version < :v``); a delete is a
conditional delete (``version <= :v``). So a change applied twice, or re-run
after a crash, changes nothing the second time, and an older change arriving
late never overwrites a newer one. A delete of an absent item is a no-op.

A deleted item leaves no version behind in the table, so the key's last
deleted version is kept as a tombstone in a small SQLite file under
``EDGE_STATE_DIR`` (the agent keeps that folder across restarts): an upsert
redelivered after its delete is skipped instead of bringing the item back.

The table comes from ``MIRROR_TABLE`` and its hash key name from
``MIRROR_KEY``; the endpoint and credentials from boto3's usual chain
(``AWS_ENDPOINT_URL_DYNAMODB`` points it at a local endpoint in the demo).
"""

import os
import sqlite3
from decimal import Decimal
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

_client = None


def client():
    """One client per worker process, created on first use (not at import time)."""
    global _client
    if _client is None:
        _client = boto3.client("dynamodb")
        if os.environ.get("MIRROR_CREATE_TABLE", "false") == "true":
            _ensure_table(_client, os.environ["MIRROR_TABLE"], os.environ.get("MIRROR_KEY", "id"))
    return _client


def tombstones():
    folder = os.environ.get("EDGE_STATE_DIR")
    if not folder:
        raise RuntimeError("EDGE_STATE_DIR is not set (the agent sets it for every component)")
    db = sqlite3.connect(Path(folder) / "tombstones.db")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS tombstone (key TEXT PRIMARY KEY, version INTEGER)")
    return db


def _deleted_version(db, key):
    row = db.execute("SELECT version FROM tombstone WHERE key = ?", (key,)).fetchone()
    return -1 if row is None else row[0]


def _ensure_table(ddb, table, key):
    try:
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ddb.get_waiter("table_exists").wait(TableName=table)


def _value(v):
    """A JSON value as a DynamoDB attribute value."""
    if v is None:
        return {"NULL": True}
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, int | float | Decimal):
        return {"N": str(v)}
    if isinstance(v, str):
        return {"S": v}
    if isinstance(v, list):
        return {"L": [_value(x) for x in v]}
    if isinstance(v, dict):
        return {"M": {str(k): _value(x) for k, x in v.items()}}
    raise TypeError(f"cannot store {type(v).__name__} in DynamoDB")


def _check(change):
    if not isinstance(change, dict):
        raise ValueError("a change event is a JSON object")
    op = change.get("op")
    if op not in ("upsert", "delete"):
        raise ValueError(f"op: {op!r} is not 'upsert' or 'delete'")
    key = change.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"key: {key!r} is not a non-empty string")
    version = change.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"version: {version!r} is not a non-negative integer")
    if op == "upsert" and not isinstance(change.get("item"), dict):
        raise ValueError("item: an upsert needs an 'item' object")
    return op, key, version


def handler(event, context):
    op, key, version = _check(event)
    table = os.environ["MIRROR_TABLE"]
    key_name = os.environ.get("MIRROR_KEY", "id")
    ddb = client()
    applied = True
    db = tombstones()
    try:
        if op == "upsert" and _deleted_version(db, key) >= version:
            applied = False  # deleted by a newer (or the same) change already
        elif op == "upsert":
            attrs = {k: _value(v) for k, v in event["item"].items() if k not in (key_name,)}
            attrs[key_name] = {"S": key}
            attrs["version"] = {"N": str(version)}
            ddb.put_item(
                TableName=table,
                Item=attrs,
                ConditionExpression="attribute_not_exists(#k) OR #v < :v",
                ExpressionAttributeNames={"#k": key_name, "#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
        else:
            with db:
                db.execute(
                    "INSERT INTO tombstone VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                    " SET version = max(version, excluded.version)",
                    (key, version),
                )
            ddb.delete_item(
                TableName=table,
                Key={key_name: {"S": key}},
                ConditionExpression="attribute_not_exists(#k) OR #v <= :v",
                ExpressionAttributeNames={"#k": key_name, "#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        applied = False  # already applied, or superseded by a newer version
    finally:
        db.close()
    source = context.client_context.custom["subject"].split("/")[1]
    print(f"{op} {key} v{version} from {source}: {'applied' if applied else 'skipped'}")
    return {"op": op, "key": key, "version": version, "applied": applied, "source": source}
