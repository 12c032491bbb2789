"""The dry-run call recorder: what ``--dry-run`` prints instead of calling AWS.

``RecordingClient`` stands in for a boto3 client. The project's typed
clients (``edge.aws.greengrassv2``, ``edge.aws.s3``, ``edge.aws.iot``) call it
exactly as they would call boto3, so the recorded parameters are the ones
boto3 would receive: the dry run cannot drift from the real run because it is
the real run with the transport swapped. Reads (Get/List/Describe/Head) are
recorded with ``"read": true`` and answered offline with a canned response
(empty lists, an absent object, placeholders such as ``<account-id>`` in
ARNs), since a dry run must work without credentials.

Each call prints as one JSON line:
``{"service": "greengrassv2", "operation": "CreateDeployment", "params": {...}}``.
Binary parameters print as UTF-8 text when they are text (an inline recipe)
and as ``{"$bytes": N, "sha256": "..."}`` otherwise (an artifact zip).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.errors import NotFound

READ_PREFIXES = ("Get", "List", "Describe", "Head")

Responder = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def operation_name(method: str) -> str:
    """``list_component_versions`` -> ``ListComponentVersions`` (boto3's own mapping)."""
    return "".join(part[:1].upper() + part[1:] for part in method.split("_"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"$bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: Mapping[str, Any]
    read: bool = False

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "service": self.service,
            "operation": self.operation,
            "params": _jsonable(self.params),
        }
        if self.read:
            line["read"] = True
        return line

    def to_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False, separators=(", ", ": "))


@dataclass
class CallRecorder:
    calls: list[Call] = field(default_factory=list)

    def record(self, call: Call) -> None:
        self.calls.append(call)

    def lines(self) -> Iterator[str]:
        for call in self.calls:
            yield call.to_line()


class RecordingClient:
    """A boto3-client look-alike that records every call and answers reads offline.

    ``responses`` maps a method name (``describe_thing``) to a function of the
    request parameters returning the canned answer; ``absent`` lists methods
    that answer "not found" (``head_object``: the dry run shows the upload).
    """

    def __init__(
        self,
        service: str,
        recorder: CallRecorder,
        *,
        responses: Mapping[str, Responder] | None = None,
        absent: frozenset[str] = frozenset(),
    ) -> None:
        self._service = service
        self._recorder = recorder
        self._responses = dict(responses or {})
        self._absent = absent

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        operation = operation_name(method)

        def call(**params: Any) -> Any:
            read = operation.startswith(READ_PREFIXES)
            self._recorder.record(Call(self._service, operation, dict(params), read))
            if method in self._absent:
                raise NotFound(
                    f"{operation} not made in a dry run", operation=operation, resource=""
                )
            responder = self._responses.get(method)
            return dict(responder(params)) if responder else {}

        return call
