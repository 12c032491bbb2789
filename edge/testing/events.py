"""MQTT events as the runtime delivers them: a topic, raw payload bytes and an encoding.

The handler's ``event`` is the decoded JSON payload (``encoding="json"``) or
the raw bytes (``encoding="binary"``); the topic reaches it as
``context.client_context.custom["subject"]``. ``generate-event`` writes the
payload part of an ``MqttEvent`` to a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import EventError, UsageError
from edge.model.topics import validate_name


@dataclass(frozen=True)
class MqttEvent:
    topic: str
    payload: bytes
    encoding: str = "json"  # "json" | "binary"

    def decoded(self) -> Any:
        """What the handler receives as ``event``."""
        if self.encoding == "binary":
            return self.payload
        return json.loads(self.payload)


def mqtt_event(topic: str, payload: Any = None, *, encoding: str | None = None) -> MqttEvent:
    """An event on ``topic``: ``bytes`` stay as they are (binary), anything else is JSON.

    ``payload`` may also be a ``Path`` to an event file (``events/*.json``, or a
    binary file with ``encoding="binary"``).
    """
    try:
        validate_name(topic)
    except ValueError as exc:
        raise UsageError(f"topic {topic!r}: {exc}") from None
    if isinstance(payload, Path):
        data = payload.read_bytes()
        enc = encoding or ("json" if payload.suffix == ".json" else "binary")
        if enc == "json":
            try:
                json.loads(data)
            except ValueError as exc:
                raise EventError(f"not JSON: {exc}", source=str(payload)) from None
        return MqttEvent(topic, data, enc)
    if isinstance(payload, bytes | bytearray):
        return MqttEvent(topic, bytes(payload), encoding or "binary")
    body = json.dumps({} if payload is None else payload, separators=(",", ":")).encode()
    return MqttEvent(topic, body, encoding or "json")
