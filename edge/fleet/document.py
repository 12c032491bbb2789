"""One status document (reference: docs/status.md): parse it, classify the device.

A status topic is an ordinary MQTT topic: anybody with the rights can publish
there, so the reader trusts nothing. ``parse_status`` turns bytes into a
``StatusDoc`` or raises ``ValidationError`` with a one-line reason; the reason
becomes the ``invalid status`` row of that device. ``classify`` turns a valid
document into the backend-neutral ``DeviceStatus`` row of ``fleet status``.

Rules (also in docs/fleet.md):

* ``state: offline`` (the last will, or a clean stop): **offline**, with the
  reason of an agent that stopped on its own (``fatal``);
* ``state: online`` but older than ``stale_after(heartbeat_s)``: **offline**
  (the agent stopped talking without the broker noticing); older by the broker's
  clock where the document says its expiry (``StatusDoc.age``), else by its
  ``timestamp``;
* online with an unhealthy component, errors or timeouts in the recent window,
  a failed or rolled back last deployment, a sink whose last attempt failed,
  a data dir almost full, or a ``timestamp`` off the broker's age by more than
  ``clock_tolerance``: **degraded**, with one line per cause in ``errors``;
* otherwise **online**.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.errors import ValidationError
from edge.model.status import ComponentStatus, DeploymentStatus, DeviceState, DeviceStatus

SUPPORTED_SCHEMA = 1
STATUS_PREFIX = "edge/"
STATUS_SUFFIX = "/status"
STATUS_FILTER = "edge/+/status"
DEFAULT_HEARTBEAT = 30.0
#: Component lifecycle states that need an operator.
UNHEALTHY_COMPONENT_STATES = frozenset({"ERRORED", "BROKEN", "FAILED"})
BAD_DEPLOYMENT_STATES = frozenset({"FAILED", "ROLLED_BACK"})
#: Free space in the data dir below which a device is degraded.
LOW_DISK_BYTES = 64 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def check_name(name: str, what: str = "device") -> str:
    """A device or thing name as a topic level: no ``/``, ``+``, ``#`` (and not empty)."""
    if not _NAME.fullmatch(name):
        from edge.errors import UsageError

        raise UsageError(
            f"{what} {name!r}: use letters, digits, '_', '.', '-' "
            "(no '/' and no MQTT wildcards '+' or '#')"
        )
    return name


def status_topic(thing: str) -> str:
    return f"{STATUS_PREFIX}{thing}{STATUS_SUFFIX}"


def thing_of(topic: str) -> str | None:
    """``edge/<thing>/status`` -> ``<thing>``; None for any other topic."""
    if not (topic.startswith(STATUS_PREFIX) and topic.endswith(STATUS_SUFFIX)):
        return None
    thing = topic[len(STATUS_PREFIX) : -len(STATUS_SUFFIX)]
    return thing if thing and "/" not in thing else None


def stale_after(heartbeat: float) -> float:
    """How long an ``online`` document stays believable: three missed heartbeats plus 30 s."""
    return 3 * heartbeat + 30.0


@dataclass(frozen=True)
class StatusDoc:
    thing: str
    device: str
    state: str  # online | offline
    timestamp: float | None  # None in a last will (it is written at connect time)
    heartbeat: float
    groups: tuple[str, ...]
    body: Mapping[str, Any]
    #: The Message Expiry Interval the agent sent it with (``expiry_s``), when it says.
    expiry: int | None = None

    def age(self, remaining: int | None, since: float = 0.0) -> float | None:
        """How old the document is by the broker's clock: ``expiry`` minus the expiry the
        broker delivered it with (``remaining``), plus ``since`` (seconds since it was
        delivered). None when either is unknown, or they disagree (a broker that
        shortened the expiry, or lost it in a restart)."""
        if self.expiry is None or remaining is None or not 0 <= remaining <= self.expiry:
            return None
        return float(self.expiry - remaining) + max(0.0, since)

    @property
    def components(self) -> Mapping[str, Mapping[str, Any]]:
        raw = self.body.get("components")
        return raw if isinstance(raw, dict) else {}


def parse_status(thing: str, payload: bytes) -> StatusDoc:
    """Parse the payload found on ``edge/<thing>/status``; ``ValidationError`` says why not."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(f"not JSON ({len(payload)} bytes)") from None
    if not isinstance(data, dict):
        raise ValidationError(f"not a JSON object but {type(data).__name__}")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ValidationError("no 'schema': not an edge-agent status document")
    if schema > SUPPORTED_SCHEMA:
        raise ValidationError(
            f"schema {schema} is newer than this edgectl reads ({SUPPORTED_SCHEMA}): "
            "upgrade edgectl"
        )
    if schema < 1:
        raise ValidationError(f"schema {schema!r} is not a status schema")
    state = data.get("state")
    if state not in ("online", "offline"):
        raise ValidationError(f"state: {_short(state)} is not 'online' or 'offline'")
    doc_thing = data.get("thing")
    if doc_thing != thing:
        raise ValidationError(f"thing: {_short(doc_thing)} does not match the topic's {thing!r}")
    device = data.get("device", thing)
    if not isinstance(device, str) or not device:
        raise ValidationError(f"device: {_short(device)} is not a name")
    timestamp = data.get("timestamp")
    if timestamp is not None and not _is_number(timestamp):
        raise ValidationError(f"timestamp: {_short(timestamp)} is not a number")
    if state == "online" and timestamp is None:
        raise ValidationError("timestamp: required when online")
    heartbeat = data.get("heartbeat_s", DEFAULT_HEARTBEAT)
    if not _is_number(heartbeat) or heartbeat <= 0:
        raise ValidationError(f"heartbeat_s: {_short(heartbeat)} is not a positive number")
    expiry = data.get("expiry_s")
    if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool)
                               or expiry <= 0):  # fmt: skip
        raise ValidationError(f"expiry_s: {_short(expiry)} is not a positive whole number")
    groups = data.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValidationError(f"groups: {_short(groups)} is not a list of names")
    for key in ("components", "outbox", "system", "deployment"):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise ValidationError(f"{key}: {_short(value)} is not an object")
    for name, body in (data.get("components") or {}).items():
        if not isinstance(body, dict):
            raise ValidationError(f"components.{name}: {_short(body)} is not an object")
    return StatusDoc(
        thing=thing,
        device=device,
        state=state,
        timestamp=float(timestamp) if timestamp is not None else None,
        heartbeat=float(heartbeat),
        groups=tuple(groups),
        body=data,
        expiry=expiry,
    )


def clock_tolerance(heartbeat: float) -> float:
    """How far a device's clock may be from this machine's before a row says so: the
    broker's ages come in whole seconds, and a document is written a moment before
    it is sent."""
    return max(60.0, 2 * heartbeat)


def classify(
    doc: StatusDoc, *, now: float, name: str | None = None, age: float | None = None
) -> DeviceStatus:
    """The ``fleet status`` row for a valid document, as seen at ``now`` (epoch seconds).

    ``age``: the document's age by the broker's clock (``StatusDoc.age``). With it,
    silence and last-seen are judged by that age, not by the device's ``timestamp``:
    a Raspberry Pi has no clock that survives a power cut, and until it reaches a
    time server (days, on a flaky uplink) its timestamps are wrong. Such a clock is
    itself a row's problem (its records carry the same wrong times)."""
    components = {
        cname: ComponentStatus(str(body.get("version", "")), str(body.get("state", "")).lower())
        for cname, body in sorted(doc.components.items())
    }
    deployment = _deployment(doc.body.get("deployment"))
    seen = (now - age) if age is not None else doc.timestamp
    last_seen = datetime.fromtimestamp(seen, UTC) if seen is not None else None
    silent = (now - seen) if seen is not None else None
    backlog = _backlog(doc.body.get("outbox"))
    errors: list[str] = []
    state: DeviceState
    if doc.state == "offline":
        state = "offline"
        if doc.body.get("will"):
            errors.append("connection lost (last will)")
        if doc.body.get("fatal"):  # it stopped on its own: why (docs/status.md)
            errors.append(f"stopped: {str(doc.body['fatal'])[:200]}")
    elif silent is not None and silent > stale_after(doc.heartbeat):
        state = "offline"
        errors.append(f"silent for {_age(silent)} (heartbeat {doc.heartbeat:g}s)")
    else:
        errors = problems(doc)
        if age is not None and doc.timestamp is not None:
            skew = doc.timestamp - (now - age)  # the device's clock minus this machine's
            if abs(skew) > clock_tolerance(doc.heartbeat):
                way = "ahead of" if skew > 0 else "behind"
                errors.append(f"its clock is {_age(abs(skew))} {way} this machine's")
        state = "degraded" if errors else "online"
    return DeviceStatus(
        name=name or doc.device,
        state=state,
        last_seen=last_seen,
        components=components,
        errors=tuple(errors),
        backlog=backlog,
        deployment=deployment,
    )


def problems(doc: StatusDoc) -> list[str]:
    """One line per reason an online device needs attention (empty: healthy)."""
    out: list[str] = []
    for cname, body in sorted(doc.components.items()):
        cstate = str(body.get("state", ""))
        if cstate.upper() in UNHEALTHY_COMPONENT_STATES:
            out.append(f"{cname}: {cstate.lower()}")
        recent = body.get("recent")
        if isinstance(recent, dict):
            window = recent.get("window_s", 0)
            parts = [
                f"{recent[key]} {label}"
                for key, label in (
                    ("errors", "errors"),
                    ("timeouts", "timeouts"),
                    ("throttles", "throttled"),
                )
                if _is_number(recent.get(key)) and recent[key] > 0
            ]
            if parts:
                out.append(f"{cname}: {', '.join(parts)} in {_age(float(window or 0))}")
    report = doc.body.get("deployment")
    if isinstance(report, dict) and str(report.get("state", "")) in BAD_DEPLOYMENT_STATES:
        reason = str(report.get("reason", "") or "")
        out.append(
            f"deployment {report.get('deployment_id', '?')}: "
            f"{str(report['state']).lower()}{': ' + reason if reason else ''}"
        )
    outbox = doc.body.get("outbox")
    if isinstance(outbox, dict):
        for sink, body in sorted(outbox.items()):
            if isinstance(body, dict) and body.get("last_error"):
                out.append(f"outbox {sink}: {str(body['last_error'])[:120]}")
    system = doc.body.get("system")
    if isinstance(system, dict):
        free = system.get("disk_free_bytes")
        if isinstance(free, int | float) and not isinstance(free, bool) and free < LOW_DISK_BYTES:
            out.append(f"data dir: {free / 1e6:.0f} MB free")
    return out


def invalid_row(name: str, reason: str) -> DeviceStatus:
    return DeviceStatus(name=name, state="invalid", errors=(f"invalid status: {reason}",))


def _deployment(raw: object) -> DeploymentStatus | None:
    if not isinstance(raw, dict):
        return None
    return DeploymentStatus(
        id=str(raw.get("deployment_id", "")),
        name=str(raw.get("rollout") or ""),
        state=str(raw.get("state", "")).lower(),
        reason=str(raw.get("reason", "") or ""),
    )


def _backlog(raw: object) -> int | None:
    if not isinstance(raw, dict):
        return None
    total = 0
    for body in raw.values():
        if isinstance(body, dict) and _is_number(body.get("records")):
            total += int(body["records"])
    return total


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
