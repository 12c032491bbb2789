"""Sync health of one device, read from its retained status document.

The agent publishes ``outbox`` (per sink: backlog records and bytes, age of
the oldest unsynced record, written, dropped, last success, last error) and
``intake`` (pending records, parked messages, bytes against the bound,
recognised redeliveries) on ``edge/<thing>/status``; ``edgectl sync status``
reads the retained copy, so it answers for a device that is offline too
(with the numbers of its last report).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.errors import BrokerError


@dataclass(frozen=True)
class SinkHealthRow:
    name: str
    records: int
    bytes: int
    oldest_age_s: float
    written: int
    dropped: int
    last_success: float | None
    last_error: str | None


@dataclass(frozen=True)
class SyncStatus:
    device: str
    thing: str
    state: str  # online | offline | unknown
    reported_at: float | None
    sinks: tuple[SinkHealthRow, ...]
    intake: Mapping[str, Any]

    @property
    def backlog(self) -> int:
        return sum(s.records for s in self.sinks)

    @property
    def healthy(self) -> bool:
        """Online, no sink failing, nothing dropped, intake not held back."""
        return (
            self.state == "online"
            and all(s.last_error is None and s.dropped == 0 for s in self.sinks)
            and not self.intake.get("full", False)
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["intake"] = dict(self.intake)
        data["backlog"] = self.backlog
        data["healthy"] = self.healthy
        return data


def sync_status(device: str, thing: str, doc: Mapping[str, Any]) -> SyncStatus:
    """The sync part of a status document (an ``offline`` will carries no numbers)."""
    sinks = []
    for name, raw in sorted((doc.get("outbox") or {}).items()):
        sinks.append(
            SinkHealthRow(
                name=name,
                records=int(raw.get("records", 0)),
                bytes=int(raw.get("bytes", 0)),
                oldest_age_s=float(raw.get("oldest_age_s", 0.0)),
                written=int(raw.get("written", 0)),
                dropped=int(raw.get("dropped", 0)),
                last_success=raw.get("last_success"),
                last_error=raw.get("last_error"),
            )
        )
    return SyncStatus(
        device=device,
        thing=thing,
        state=str(doc.get("state", "unknown")),
        reported_at=doc.get("timestamp"),
        sinks=tuple(sinks),
        intake=dict(doc.get("intake") or {}),
    )


def read_sync_status(
    device: str,
    thing: str,
    broker_url: str,
    *,
    timeout: float = 10.0,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> SyncStatus:
    """Read ``edge/<thing>/status`` from the broker; ``BrokerError`` when there is none."""
    import json

    from edge.agent.status import status_topic
    from edge.fleet.reader import connect, read_retained

    topic = status_topic(thing)
    bus = connect(broker_url, timeout=timeout, ca=ca, cert=cert, key=key)
    try:
        found = read_retained(bus, [topic], timeout=timeout)
    finally:
        bus.close()
    if topic not in found:
        raise BrokerError(
            f"no status document on {topic} at {broker_url}: the agent of {device!r} "
            "has never connected to this broker"
        )
    try:
        doc = json.loads(found[topic])
    except ValueError as exc:
        raise BrokerError(f"the status document on {topic} is not JSON: {exc}") from None
    return sync_status(device, thing, doc)
