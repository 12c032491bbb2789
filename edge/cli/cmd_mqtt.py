"""``edgectl publish TOPIC PAYLOAD``: fire an MQTT message into a local device.

Not a command of its own: ``edgectl publish`` (``cmd_publish``) publishes a
component to Greengrass when its first argument is a component folder, and
hands over here otherwise. The broker is ``--broker``, else the one of the
``edgectl dev`` session running in this folder (``.edge/dev.json``), else the
device file's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edge.errors import UsageError

DEFAULT_DEVICE = Path("devices/local.yaml")


def resolve_broker(
    broker: str | None, root: Path, device: Path = DEFAULT_DEVICE
) -> tuple[str, str]:
    """(broker URL, where it came from)."""
    if broker:
        return broker, "--broker"
    from edge.local.dev import DEV_FILE, running_session

    session = running_session(root)
    if session is not None:
        return str(session["broker"]), f"the running edgectl dev ({DEV_FILE})"
    path = root / device
    if path.is_file():
        from edge.model.device import load_device

        return load_device(path).broker.url, str(device)
    raise UsageError(
        "no broker: pass --broker URL, start `edgectl dev` in this folder, "
        f"or create {device}"
    )


def read_payload(payload: str) -> bytes:
    """``@FILE`` reads a file (binary frames too); anything else is sent as given."""
    if payload.startswith("@"):
        path = Path(payload[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UsageError(f"PAYLOAD: {path}: {exc.strerror or exc}") from None
    return payload.encode()


def publish_message(
    topic: str,
    payload: str | None,
    *,
    broker: str | None = None,
    root: Path | None = None,
    retain: bool = False,
    timeout: float = 10.0,
    as_json: bool = False,
) -> dict[str, Any]:
    """Publish PAYLOAD (default ``{}``) on TOPIC at QoS 1 and wait for the broker's ack."""
    from edge.model.topics import validate_name

    try:
        validate_name(topic)
    except ValueError as exc:
        raise UsageError(
            f"TOPIC: {topic!r}: {exc} (or, to publish a component to Greengrass, "
            "give a folder holding component.yaml)"
        ) from None
    data = read_payload(payload if payload is not None else "{}")
    url, source = resolve_broker(broker, root or Path.cwd())
    from edge.mqtt.paho_bus import BrokerAddress, PahoBus

    bus = PahoBus(BrokerAddress.parse(url))
    bus.connect(timeout=timeout)
    try:
        bus.publish(topic, data, qos=1, retain=retain, timeout=timeout)
    finally:
        bus.close()
    doc = {"topic": topic, "bytes": len(data), "broker": url, "broker_from": source,
           "retain": retain}
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"published {len(data)} bytes on {topic} to {url} ({source})", file=sys.stderr)
    return doc
