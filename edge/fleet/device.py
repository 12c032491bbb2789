"""``edgectl device show``: one device in full, from what it keeps retained on the broker.

* ``edge/<thing>/status``: the status document (docs/status.md), classified
  the way ``fleet status`` classifies it;
* ``edge/<thing>/deployment``: the report of the newest desired document;
* ``edge/<thing>/desired``: the desired state ``edgectl deploy`` left there;
* ``deployments`` in the status document: the device's recent finished
  deployments, newest first (the agent keeps the last ten across restarts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge.errors import ValidationError
from edge.fleet.document import classify, invalid_row, parse_status, status_topic
from edge.fleet.reader import read_retained_messages
from edge.model.deployment import deployment_topic, desired_topic
from edge.model.status import DeviceStatus
from edge.mqtt.bus import Bus


@dataclass(frozen=True)
class DeviceView:
    name: str
    thing: str
    row: DeviceStatus
    status: dict[str, Any] | None  # the raw document (None: never reported or invalid)
    report: dict[str, Any] | None
    desired: dict[str, Any] | None  # the desired document (signature left out)
    history: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "thing": self.thing,
            "row": self.row.to_json(),
            "status": self.status,
            "deployment": self.report,
            "desired": self.desired,
            "history": self.history,
        }


def _json_object(payload: bytes | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def show_device(
    bus: Bus, name: str, thing: str, *, timeout: float, now: float | None = None
) -> DeviceView:
    topics = [status_topic(thing), deployment_topic(thing), desired_topic(thing)]
    messages = read_retained_messages(bus, topics, timeout=timeout)
    found = {t: m.payload for t, m in messages.items()}
    now = time.time() if now is None else now
    raw = found.get(topics[0])
    expiry = messages[topics[0]].expiry if raw is not None else None
    status: dict[str, Any] | None = None
    if raw is None:
        row = DeviceStatus(name=name, state="never-seen")
    else:
        try:
            doc = parse_status(thing, raw)
        except ValidationError as exc:
            row = invalid_row(name, str(exc))
        else:
            row = classify(doc, now=now, name=name, age=doc.age(expiry))
            status = dict(doc.body)
    envelope = _json_object(found.get(topics[2]))
    desired = envelope.get("document") if envelope else None
    history = status.get("deployments") if status else None
    return DeviceView(
        name=name,
        thing=thing,
        row=row,
        status=status,
        report=_json_object(found.get(topics[1])),
        desired=desired if isinstance(desired, dict) else None,
        history=[h for h in history if isinstance(h, dict)] if isinstance(history, list) else [],
    )
