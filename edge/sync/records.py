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
import uuid
from dataclasses import dataclass, fields
from typing import Any

from edge.errors import ValidationError

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
KINDS = ("result", "error")


def _digest(*parts: object) -> bytes:
    # A JSON array is unambiguous where a joined string is not ("a|b" + "c" vs "a" + "b|c").
    canonical = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def result_id_for(thing: str, component: str, seq: int, epoch: str = "") -> str:
    """The deterministic id of the result of intake record ``seq``: 32 hex characters.

    ``epoch`` is minted once per device data dir: a device whose disk was wiped
    restarts its sequence numbers, and must not overwrite its earlier results.
    A plain retry of the same record gives the same id and so overwrites the
    same item or object.
    """
    return _digest("edge.result.v1", thing, component, int(seq), epoch).hex()[:32]


def request_id_for(thing: str, component: str, seq: int, epoch: str = "") -> str:
    """A UUID-shaped ``aws_request_id`` that is the same every time ``seq`` is re-run.

    Handlers often use the request id as their own idempotency key (as with
    Powertools on Lambda); a fresh random id on re-delivery would defeat that.
    """
    # ``epoch`` (minted once per device data dir) keeps ids unique when a wiped
    # device starts its sequence numbers again.
    raw = _digest("edge.request.v1", thing, component, int(seq), epoch)[:16]
    return str(uuid.UUID(bytes=raw, version=4))


class IdMinter:
    """``result_id_for`` and ``request_id_for`` of one thing, component and epoch, with
    the constant part of the hashed JSON encoded once: the same ids at a fraction of
    the cost, on the path every result takes."""

    def __init__(self, thing: str, component: str, epoch: str = "") -> None:
        def around(kind: str) -> tuple[bytes, bytes]:
            head = json.dumps([kind, thing, component], separators=(",", ":"), ensure_ascii=False)
            tail = "," + json.dumps(epoch, ensure_ascii=False) + "]"
            return (head[:-1] + ",").encode("utf-8"), tail.encode("utf-8")

        self._result = around("edge.result.v1")
        self._request = around("edge.request.v1")

    def result_id(self, seq: int) -> str:
        head, tail = self._result
        return hashlib.sha256(head + str(int(seq)).encode() + tail).hexdigest()[:32]

    def request_id(self, seq: int) -> str:
        head, tail = self._request
        raw = bytearray(hashlib.sha256(head + str(int(seq)).encode() + tail).digest()[:16])
        # What ``uuid.UUID(bytes=raw, version=4)`` sets, without building the object.
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
