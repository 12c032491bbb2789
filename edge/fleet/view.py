"""The direct backend's ``FleetStatus``: status documents plus the inventory.

Rows are keyed by thing name (that is what the topic carries) and named the
way the user knows the device: the inventory's name for its thing, else the
document's ``device``, else the thing. Inventory devices with no document are
``never-seen``; a payload that does not parse is ``invalid`` with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import UsageError, ValidationError
from edge.fleet.document import StatusDoc, classify, invalid_row, parse_status
from edge.model.status import DeviceStatus, FleetStatus


@dataclass(frozen=True)
class Known:
    """A device from ``devices/``: its name, thing name and groups."""

    name: str
    thing: str
    groups: tuple[str, ...] = ()


def fleet_view(
    payloads: Mapping[str, bytes],
    *,
    now: float,
    inventory: Iterable[Known] = (),
    group: str | None = None,
    states: Collection[str] = (),
    cache: dict[str, tuple[bytes, StatusDoc | str]] | None = None,
    held: Mapping[str, tuple[int | None, float]] | None = None,
) -> FleetStatus:
    """One row per thing with a document plus one per inventory device without one,
    filtered by ``group`` and ``states``, those needing attention first.

    ``cache`` (thing -> (payload, parsed document or the reason it is invalid))
    lets ``--watch`` re-parse only the documents that changed since its last build.
    ``held`` (thing -> (the expiry its document was delivered with, seconds since))
    gives each document its age by the broker's clock (``StatusDoc.age``)."""
    known = {k.thing: k for k in inventory}
    rows: list[DeviceStatus] = []
    for thing, payload in payloads.items():
        entry = known.get(thing)
        groups: tuple[str, ...] = entry.groups if entry else ()
        cached = cache.get(thing) if cache is not None else None
        if cached is not None and cached[0] is payload:
            parsed = cached[1]
        else:
            try:
                parsed = parse_status(thing, payload)
            except ValidationError as exc:
                parsed = str(exc)
            if cache is not None:
                cache[thing] = (payload, parsed)
        if isinstance(parsed, str):
            row = invalid_row(entry.name if entry else thing, parsed)
        else:
            doc = parsed
            groups = tuple(sorted(set(groups) | set(doc.groups)))
            age = doc.age(*held[thing]) if held and thing in held else None
            row = classify(doc, now=now, name=entry.name if entry else None, age=age)
        if group is None or group in groups:
            rows.append(row)
    for thing, entry in known.items():
        if thing not in payloads and (group is None or group in entry.groups):
            rows.append(DeviceStatus(name=entry.name, state="never-seen"))
    if states:
        rows = [r for r in rows if r.state in states]
    status = FleetStatus("direct", datetime.fromtimestamp(now, UTC), tuple(rows))
    return status.by_attention()


@dataclass(frozen=True)
class Inventory:
    devices: tuple[Known, ...]
    #: Broker URLs named by the device files, with the CA the first of them names.
    brokers: tuple[str, ...]
    ca: Path | None = None

    def find(self, name: str) -> Known | None:
        for known in self.devices:
            if name in (known.name, known.thing):
                return known
        return None


def load_known(devices_dir: Path) -> Inventory:
    """The inventory as the fleet view needs it; an absent folder is an empty inventory."""
    if not devices_dir.is_dir():
        return Inventory((), ())
    from edge.model.device import load_inventory

    configs = load_inventory(devices_dir)
    known = tuple(Known(c.name, c.thing_name, tuple(c.groups)) for c in configs.values())
    brokers = tuple(sorted({c.broker.url for c in configs.values()}))
    ca = next((c.broker.ca for c in configs.values() if c.broker.ca), None)
    return Inventory(known, brokers, ca)


def choose_broker(inventory: Inventory, explicit: str | None) -> str:
    """``--broker`` when given, else the one broker every device file names."""
    if explicit:
        return explicit
    if len(inventory.brokers) == 1:
        return inventory.brokers[0]
    if not inventory.brokers:
        raise UsageError("no broker: pass --broker mqtt://HOST:PORT (or add devices/*.yaml)")
    raise UsageError(
        f"the device files name {len(inventory.brokers)} brokers "
        f"({', '.join(inventory.brokers)}): pass --broker"
    )
