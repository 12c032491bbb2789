"""The fleet status shape: one row per device, the same for every backend.

``edgectl fleet status`` renders this, as a table or as JSON; the greengrass
backend fills it from ``ListCoreDevices``/``ListInstalledComponents``/
``ListEffectiveDeployments`` and the direct backend from each agent's retained
status message, so scripts written against ``--json`` keep working when a
fleet moves from one backend to the other.

JSON shape (``FleetStatus.to_json()``)::

    {"backend": "greengrass", "generated_at": "2026-11-26T17:00:00+00:00",
     "devices": [
       {"name": "pi01", "state": "online", "last_seen": "2026-11-26T16:58:02+00:00",
        "components": {"com.example.Hello": {"version": "1.0.2", "state": "running"}},
        "deployment": {"id": "...", "name": "...", "state": "succeeded", "reason": ""},
        "errors": ["com.example.Hello: errored (PYTHON_EXIT_1)"],
        "backlog": null}]}

``state`` is one of:

* ``online``: the device reported recently and is healthy;
* ``degraded``: it reported, but something on it is unhealthy (a component in
  error, a failed deployment, Greengrass's ``UNHEALTHY``);
* ``offline``: its last report is older than the backend's staleness window
  (the direct backend: its MQTT last will fired; greengrass: no report for
  longer than the 24 h periodic status interval plus margin);
* ``never-seen``: listed in the inventory but has never reported;
* ``invalid``: something is on the device's status topic but it is not a
  status document this edgectl understands (malformed JSON, a foreign client
  publishing there, a newer schema); ``errors`` holds the reason. Only the
  direct backend produces it.

``backlog`` is the number of result records waiting in the device's outbox,
``null`` when the backend cannot see it (Greengrass does not report it).
Component ``state`` is the lower-cased lifecycle state (``running``,
``finished``, ``errored``, ``broken``, ``installed``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

#: The MQTT 5 Message Expiry Interval of an agent's online status document, named in it
#: as ``expiry_s``: a reader takes the document's age from what the broker left of it
#: (docs/status.md). A week: the broker drops a document that outlives it, which only a
#: device silent that long without its last will reaching the broker does.
STATUS_EXPIRY_S = 7 * 24 * 3600

DeviceState = Literal["online", "offline", "degraded", "never-seen", "invalid"]
DEVICE_STATES: tuple[DeviceState, ...] = ("online", "degraded", "offline", "never-seen", "invalid")
#: Attention order: the rows an operator must look at first come first.
ATTENTION_ORDER: dict[str, int] = {
    "invalid": 0, "offline": 1, "degraded": 2, "never-seen": 3, "online": 4,
}  # fmt: skip


@dataclass(frozen=True)
class ComponentStatus:
    version: str
    state: str


@dataclass(frozen=True)
class DeploymentStatus:
    id: str
    name: str
    state: str  # lower-cased: succeeded, in_progress, failed, ...
    reason: str = ""


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    state: DeviceState
    last_seen: datetime | None = None
    components: Mapping[str, ComponentStatus] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    backlog: int | None = None
    deployment: DeploymentStatus | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "components": {
                name: {"version": c.version, "state": c.state}
                for name, c in sorted(self.components.items())
            },
            "deployment": (
                {
                    "id": self.deployment.id,
                    "name": self.deployment.name,
                    "state": self.deployment.state,
                    "reason": self.deployment.reason,
                }
                if self.deployment
                else None
            ),
            "errors": list(self.errors),
            "backlog": self.backlog,
        }


@dataclass(frozen=True)
class FleetStatus:
    backend: str
    generated_at: datetime
    devices: tuple[DeviceStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "generated_at": self.generated_at.isoformat(),
            "devices": [d.to_json() for d in self.devices],
        }

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for d in self.devices if d.state == s) for s in DEVICE_STATES}

    @property
    def healthy(self) -> bool:
        """Every device is ``online``: what ``fleet status`` turns into exit code 0."""
        return all(d.state == "online" for d in self.devices)

    def by_attention(self) -> FleetStatus:
        """The same rows, those that need attention first, then by name."""
        rows = sorted(self.devices, key=lambda d: (ATTENTION_ORDER.get(d.state, 0), d.name))
        return FleetStatus(self.backend, self.generated_at, tuple(rows))
