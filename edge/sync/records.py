"""The result record: what one handler invocation produced, on its way to the sinks.

Delivery is at-least-once (a device may crash after a sink write and before it
marks the record done), so every sink write must be idempotent. That works only
if the identity of a result is derived from the *intake* record rather than
drawn at random: ``result_id_for`` and ``request_id_for`` hash the thing, the
component and the intake sequence number, so re-running the same intake
record after a power cut yields the same ids, the same S3 key and the same
DynamoDB item.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from edge.errors import ValidationError

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
KINDS = ("result", "error")


class IdMinter:
    """The deterministic ids of one thing, component and epoch's results.

    Each id is SHA-256 over the JSON array ``[kind, thing, component, seq, epoch]``
    (compact, UTF-8; an array is unambiguous where a joined string is not: "a|b" +
    "c" vs "a" + "b|c"). Only ``seq`` changes per result, so the rest of the array
    is encoded once: this runs on the path every result takes.
    """

    def __init__(self, thing: str, component: str, epoch: str = "") -> None:
        def around(kind: str) -> tuple[bytes, bytes]:
            head = json.dumps([kind, thing, component], separators=(",", ":"), ensure_ascii=False)
            tail = "," + json.dumps(epoch, ensure_ascii=False) + "]"
            return (head[:-1] + ",").encode("utf-8"), tail.encode("utf-8")

        self._result = around("edge.result.v1")
        self._request = around("edge.request.v1")

    def _digest(self, around: tuple[bytes, bytes], seq: int) -> bytes:
        head, tail = around
        return hashlib.sha256(head + str(int(seq)).encode() + tail).digest()

    def result_id(self, seq: int) -> str:
        """32 hex characters; see ``result_id_for``."""
        return self._digest(self._result, seq).hex()[:32]

    def request_id(self, seq: int) -> str:
        """A version-4-shaped UUID string; see ``request_id_for``."""
        raw = bytearray(self._digest(self._request, seq)[:16])
        # What ``uuid.UUID(bytes=raw, version=4)`` sets, without building the object.
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def result_id_for(thing: str, component: str, seq: int, epoch: str = "") -> str:
    """The deterministic id of the result of intake record ``seq``: 32 hex characters.

    ``epoch`` is minted once per device data dir: a device whose disk was wiped
    restarts its sequence numbers, and must not overwrite its earlier results.
    A plain retry of the same record gives the same id and so overwrites the
    same item or object.
    """
    return IdMinter(thing, component, epoch).result_id(seq)


def request_id_for(thing: str, component: str, seq: int, epoch: str = "") -> str:
    """A UUID-shaped ``aws_request_id`` that is the same every time ``seq`` is re-run.

    Handlers often use the request id as their own idempotency key (as with
    Powertools on Lambda); a fresh random id on re-delivery would defeat that.
    ``epoch`` keeps ids unique when a wiped device starts its sequence numbers again.
    """
    return IdMinter(thing, component, epoch).request_id(seq)


@dataclass(frozen=True)
class ResultRecord:
    """One result (or error) of one invocation, as kept in the outbox and written to sinks."""

    result_id: str  # deterministic: result_id_for(thing, component, seq)
    seq: int  # the device's intake sequence number (monotonic per device data dir)
    device: str
    thing: str
    component: str
    component_version: str
    topic: str  # the trigger topic the message arrived on
    request_id: str  # aws_request_id given to the handler
    received_at: float  # epoch seconds when the trigger message was recorded
    finished_at: float
    kind: str  # "result" | "error"
    content_type: str  # "application/json" | "application/octet-stream"
    body: bytes  # JSON of the returned value, raw bytes, or the JSON error record

    @property
    def is_binary(self) -> bool:
        """True when ``body`` is opaque bytes rather than JSON."""
        return self.content_type != JSON_CONTENT_TYPE

    def to_json(self) -> str:
        """One line of JSON (body base64-encoded), the outbox's storage format."""
        # By hand, not ``asdict`` (which deep-copies every field): the same JSON.
        data: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS}
        data["body"] = base64.b64encode(self.body).decode("ascii")
        return _SORTED_COMPACT.encode(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> ResultRecord:
        """Parse what ``to_json`` wrote; a damaged record raises ``ValidationError``."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            body = base64.b64decode(data.pop("body"), validate=True)
            record = cls(body=body, **data)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise ValidationError(f"not a result record: {exc}", field="record") from exc
        if not isinstance(record.seq, int) or record.kind not in KINDS:
            raise ValidationError(
                "seq must be an integer and kind one of result/error",
                field="record",
                value=record.result_id,
            )
        return record


_FIELDS = tuple(f.name for f in fields(ResultRecord))
# One encoder for every record (``json.dumps`` with options builds one per call).
_SORTED_COMPACT = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
