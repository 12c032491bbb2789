"""Where results go: S3, DynamoDB, or a local directory.

Every sink's ``write`` is idempotent on the record's deterministic
``result_id`` (S3 key, DynamoDB key, file name are all functions of the
record), because the outbox delivers at least once: a record re-sent after a
crash or a timeout overwrites itself instead of appearing twice. A sink raises
the ``CloudError`` family (or ``OSError`` for the local directory) and leaves
retrying to the sync loop, which keeps the records on disk meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import string
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from edge.errors import ValidationError
from edge.sync.records import BINARY_CONTENT_TYPE, JSON_CONTENT_TYPE, ResultRecord

if TYPE_CHECKING:

    from edge.aws.dynamodb import DynamoDBClient
    from edge.aws.s3 import S3Client

# DynamoDB items are limited to 400 KB; leave room for the other attributes.
MAX_INLINE_RESULT = 300 * 1024
PREFIX_FIELDS = frozenset({"thing", "component", "date", "hour"})
S3_LAYOUTS = ("ndjson", "object")
NDJSON_CONTENT_TYPE = "application/x-ndjson"
#: Objects larger than this go up in parts (S3 needs parts of at least 5 MiB but the last).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024


class Sink(Protocol):
    """Something results are written to; ``write`` is idempotent per record."""

    name: str

    def write(self, records: Sequence[ResultRecord]) -> None: ...


def iso8601(ts: float) -> str:
    """UTC with milliseconds and a ``Z``, so the strings sort in time order."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _suffix(record: ResultRecord) -> str:
    return ".bin" if record.is_binary else ".json"


# -- S3 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Object:
    """One planned PUT: what ``S3Sink`` writes, kept as data so layouts are easy to swap."""

    key: str
    body: bytes
    content_type: str
    metadata: Mapping[str, str]


def validate_prefix(template: str) -> None:
    """Reject a prefix template with unknown or positional placeholders up front.

    Found at configuration time this is a one-line user error; found at
    write time it would wedge the outbox.
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValidationError(str(exc), field="results.s3.prefix", value=template) from exc
    unknown = sorted(fields - PREFIX_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown placeholder {{{unknown[0]}}} in {template!r}; "
            f"use {', '.join('{' + f + '}' for f in sorted(PREFIX_FIELDS))}",
            field="results.s3.prefix",
            value=template,
        )


def _metadata_value(value: str) -> str:
    # S3 user metadata travels as HTTP headers, which must be ASCII; topics may not be.
    return value if value.isascii() else quote(value, safe="/+#$&=:@,;")


class S3Sink:
    """Results as S3 objects under a prefix rendered per record.

    ``layout="object"``: one object per record at ``<prefix><result_id>.json``
    (or ``.bin``). ``layout="ndjson"`` (what the agent uses): the JSON results
    of one ``write`` call become one newline-delimited JSON object per prefix,
    ``<prefix><first seq>-<last seq>-<first result id[:8]>.ndjson``, one line
    per result (see ``ndjson_line``); binary results keep one object each.
    The key is a function of the records written together, and the syncer
    always writes the same sealed batch together, so a retried upload
    rewrites the same object. Bodies over ``multipart_threshold`` bytes go up
    as a multipart upload.

    The prefix template may use ``{thing}``, ``{component}``, ``{date}``
    (``YYYY-MM-DD``) and ``{hour}`` (``HH``); the date and hour are those of
    the record's ``received_at`` in UTC (for a batch, of its first record in
    that prefix), never of the upload, so a record re-sent days later lands on
    the same key.
    """

    name = "s3"

    def __init__(
        self,
        s3: S3Client,
        *,
        bucket: str,
        prefix_template: str,
        thing: str,
        component: str,
        clock: Callable[[], float] = time.time,
        layout: str = "object",
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        validate_prefix(prefix_template)
        if layout not in S3_LAYOUTS:
            raise ValidationError(
                f"unknown S3 layout {layout!r}; use one of {', '.join(S3_LAYOUTS)}",
                field="results.s3.layout",
                value=layout,
            )
        self.layout = layout
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._s3 = s3
        self.bucket = bucket
        self.prefix_template = prefix_template
        self.thing = thing
        self.component = component
        # Not part of any key (keys must not depend on when we upload); kept for
        # layouts that flush on age, such as the batched NDJSON form.
        self._clock = clock

    def prefix_for(self, record: ResultRecord) -> str:
        """The rendered prefix of ``record``'s object (no leading slash)."""
        moment = datetime.fromtimestamp(record.received_at, UTC)
        rendered = self.prefix_template.format(
            thing=self.thing,
            component=self.component,
            date=moment.strftime("%Y-%m-%d"),
            hour=moment.strftime("%H"),
        )
        return rendered.lstrip("/")

    def key_for(self, record: ResultRecord) -> str:
        return f"{self.prefix_for(record)}{record.result_id}{_suffix(record)}"

    def _object_for(self, record: ResultRecord) -> S3Object:
        return S3Object(
            key=self.key_for(record),
            body=record.body,
            content_type=record.content_type,
            metadata={
                "device": _metadata_value(record.device),
                "component": _metadata_value(record.component),
                "topic": _metadata_value(record.topic),
                "request-id": record.request_id,
                "kind": record.kind,
                "seq": str(record.seq),
            },
        )

    def _objects(self, records: Sequence[ResultRecord]) -> Iterator[S3Object]:
        if self.layout == "object":
            yield from (self._object_for(r) for r in records)
            return
        batches: dict[str, list[ResultRecord]] = {}
        for record in records:
            if record.is_binary:
                yield self._object_for(record)
            else:
                batches.setdefault(self.prefix_for(record), []).append(record)
        for prefix, group in batches.items():
            yield S3Object(
                key=ndjson_key(prefix, group),
                body=b"".join(ndjson_line(r) for r in group),
                content_type=NDJSON_CONTENT_TYPE,
                metadata={
                    "device": _metadata_value(group[0].device),
                    "component": _metadata_value(group[0].component),
                    "records": str(len(group)),
                    "first-seq": str(group[0].seq),
                    "last-seq": str(group[-1].seq),
                },
            )

    def write(self, records: Sequence[ResultRecord]) -> None:
        for obj in self._objects(records):
            if len(obj.body) > self.multipart_threshold:
                self._s3.put_object_multipart(
                    self.bucket,
                    obj.key,
                    obj.body,
                    content_type=obj.content_type,
                    metadata=obj.metadata,
                    part_size=self.part_size,
                )
            else:
                self._s3.put_object(
                    self.bucket,
                    obj.key,
                    obj.body,
                    content_type=obj.content_type,
                    metadata=obj.metadata,
                )


def ndjson_key(prefix: str, records: Sequence[ResultRecord]) -> str:
    """``<prefix><first seq>-<last seq>-<first result id[:8]>.ndjson``: the range the
    object holds (the result id carries the data dir's epoch, so a wiped device
    starting its sequence again does not overwrite its earlier objects)."""
    first, last = records[0], records[-1]
    return f"{prefix}{first.seq:012d}-{last.seq:012d}-{first.result_id[:8]}.ndjson"


def ndjson_line(record: ResultRecord) -> bytes:
    """One line of a batched S3 object: the result's metadata and its value."""
    try:
        result: Any = json.loads(record.body)
    except ValueError:
        result = record.body.decode("utf-8", "replace")
    line = {
        "result_id": record.result_id,
        "seq": record.seq,
        "request_id": record.request_id,
        "device": record.device,
        "thing": record.thing,
        "component": record.component,
        "component_version": record.component_version,
        "topic": record.topic,
        "received_at": iso8601(record.received_at),
        "finished_at": iso8601(record.finished_at),
        "kind": record.kind,
        "result": result,
    }
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


# -- DynamoDB -------------------------------------------------------------------------------


def _decode_result(record: ResultRecord) -> tuple[Any, bool]:
    """The value to store as ``result`` and whether it was left out for size."""
    if len(record.body) > MAX_INLINE_RESULT:
        return None, True
    if record.is_binary:
        return record.body, False
    try:
        # Decimal keeps JSON numbers exact; NaN/Infinity have no DynamoDB form.
        return json.loads(record.body, parse_float=Decimal, parse_constant=str), False
    except ValueError:
        return record.body, False  # not JSON after all: keep the bytes rather than lose them


class DynamoDBSink:
    """One item per record, keyed ``{thing}#{component}`` / ``{received_at iso}#{seq:012d}``.

    The key is a function of the record, so a re-sent record overwrites its
    own item; the sort key orders a component's results by arrival time with
    the seq as tie-breaker. Results larger than 300 KB are left out
    (``result_omitted: true``) because DynamoDB items stop at 400 KB; the S3
    sink keeps the full body.
    """

    name = "dynamodb"

    def __init__(
        self,
        ddb: DynamoDBClient,
        *,
        table: str,
        partition_key: str = "pk",
        sort_key: str = "sk",
        conditional: bool = False,
        concurrency: int = 1,
    ) -> None:
        self._ddb = ddb
        self.table = table
        self.partition_key = partition_key
        self.sort_key = sort_key
        self.conditional = conditional
        self.concurrency = concurrency

    def item_for(self, record: ResultRecord) -> dict[str, Any]:
        """The item written for ``record`` (plain values; the client serializes them)."""
        result, omitted = _decode_result(record)
        item: dict[str, Any] = {
            self.partition_key: f"{record.thing}#{record.component}",
            self.sort_key: f"{iso8601(record.received_at)}#{record.seq:012d}",
            "result_id": record.result_id,
            "seq": record.seq,
            "device": record.device,
            "thing": record.thing,
            "component": record.component,
            "component_version": record.component_version,
            "topic": record.topic,
            "request_id": record.request_id,
            "received_at": iso8601(record.received_at),
            "finished_at": iso8601(record.finished_at),
            "kind": record.kind,
            "content_type": record.content_type,
        }
        if omitted:
            item["result_omitted"] = True
        else:
            item["result"] = result
        return item

    def write(self, records: Sequence[ResultRecord]) -> None:
        if not records:
            return
        if self.conditional:
            # First write wins: BatchWriteItem cannot carry a condition, so one
            # conditional PutItem per record; "already there" counts as written.
            for record in records:
                self._ddb.put_item(
                    self.table,
                    self.item_for(record),
                    condition_new=True,
                    partition_key=self.partition_key,
                )
            return
        # The requests of one batch are in flight together; the syncer starts the
        # component's next batch only once all of them succeeded.
        items = [self.item_for(r) for r in records]
        key = (self.partition_key, self.sort_key)
        if self.concurrency > 1:
            self._ddb.batch_put(self.table, items, key=key, concurrency=self.concurrency)
        else:
            self._ddb.batch_put(self.table, items, key=key)


class DynamoDBImportSink:
    """DynamoDB results kept in S3 for a later import (a Snowball Edge has no DynamoDB).

    Each ``write`` puts one object, ``import/dynamodb/<table>/<thing>/<component>/
    <first seq>-<last seq>-<first result id[:8]>.json``, in DynamoDB JSON, one
    ``{"Item": {...}}`` per line: the format DynamoDB's ImportTable reads. The
    items are exactly what ``DynamoDBSink`` would have written, so an import
    and a direct write agree; the key is deterministic like ``S3Sink``'s
    batches, so a retry rewrites the same object.
    """

    name = "dynamodb"

    def __init__(
        self,
        s3: S3Client,
        *,
        bucket: str,
        table: str,
        thing: str,
        component: str,
        partition_key: str = "pk",
        sort_key: str = "sk",
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.table = table
        self.prefix = f"import/dynamodb/{table}/{thing}/{component}/"
        self._items = DynamoDBSink(
            None,  # type: ignore[arg-type]  # only item_for is used
            table=table,
            partition_key=partition_key,
            sort_key=sort_key,
        )

    def key_for(self, records: Sequence[ResultRecord]) -> str:
        return ndjson_key(self.prefix, records)[: -len(".ndjson")] + ".json"

    def write(self, records: Sequence[ResultRecord]) -> None:
        from edge.aws.dynamodb import import_line

        if not records:
            return
        body = b"".join(import_line(self._items.item_for(r)) for r in records)
        self._s3.put_object(
            self.bucket,
            self.key_for(records),
            body,
            content_type=JSON_CONTENT_TYPE,
            metadata={"table": self.table, "records": str(len(records))},
        )


# -- local directory ------------------------------------------------------------------------


class LocalDirSink:
    """``<root>/<component>/<seq:012d>-<result_id>.json|.bin``, each written atomically.

    For devices without an uplink (and for ``edgectl invoke`` locally). Each
    file is written to a temporary name, fsynced and renamed, then the
    directory is fsynced, so after a power cut a file is either whole or
    absent; rewriting a record replaces the file with identical bytes.
    """

    name = "local"

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self._clock = clock
        self._swept: set[Path] = set()

    def path_for(self, record: ResultRecord) -> Path:
        component = record.component
        if not component or component in {".", ".."} or "/" in component or "\\" in component:
            raise ValidationError(
                "component name cannot be used as a directory name",
                field="component",
                value=component,
            )
        return self.root / component / f"{record.seq:012d}-{record.result_id}{_suffix(record)}"

    def write(self, records: Sequence[ResultRecord]) -> None:
        touched: set[Path] = set()
        for record in records:
            path = self.path_for(record)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.parent not in self._swept:
                self._sweep(path.parent)
            _atomic_write(path, record.body)
            touched.add(path.parent)
        for directory in touched:
            _fsync_dir(directory)

    def _sweep(self, directory: Path) -> None:
        """Delete temporary files that a crash (a SIGKILL, a power cut) left half
        written, once per directory and process: on a device that loses power often
        they would pile up. Only old ones: another sink object on the same directory
        (a component being replaced) may be writing one right now."""
        self._swept.add(directory)
        stale = self._clock() - STALE_TEMP_AGE
        for tmp in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):  # gone already, or not ours to delete
                if tmp.stat().st_mtime < stale:
                    tmp.unlink()


# A temporary file of the local sink older than this was left by a crash (a write
# takes milliseconds).
STALE_TEMP_AGE = 3600.0


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "BINARY_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "DynamoDBImportSink",
    "DynamoDBSink",
    "LocalDirSink",
    "S3Object",
    "S3Sink",
    "Sink",
    "iso8601",
]
