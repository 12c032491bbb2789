"""The agent's reported state: a retained status document on ``edge/<thing>/status``.

Published on connect, on every change (debounced, so a burst of state changes
costs one message), and on a heartbeat; the broker publishes the last will
(``state: offline``) the moment it notices the agent gone. Building the
document reads counters only, so reporting costs next to nothing between
heartbeats.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def status_topic(thing: str) -> str:
    return f"edge/{thing}/status"


class StatusReporter:
    def __init__(
        self,
        bus: Bus,
        thing: str,
        build: Callable[[str], dict[str, Any]],
        *,
        heartbeat: float = 30.0,
        debounce: float = 0.2,
    ) -> None:
        self._bus = bus
        self.topic = status_topic(thing)
        self._build = build
        self._heartbeat = heartbeat
        self._debounce = debounce
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.published = 0

    def start(self) -> None:
        self._bus.on_connection_change(lambda up: self.changed() if up else None)
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """Something a fleet operator sees changed: publish soon."""
        self._changed.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._changed.wait(self._heartbeat)
            if self._stopped.is_set():
                return
            # Let a burst of changes settle into one document.
            self._stopped.wait(self._debounce)
            self._changed.clear()
            self.publish("online")

    def publish(self, state: str, *, timeout: float | None = None) -> bool:
        with self._lock:
            try:
                doc = self._build(state)
                payload = json.dumps(doc, separators=(",", ":"), default=str).encode()
                self._bus.publish(self.topic, payload, qos=1, retain=True, timeout=timeout)
            except Exception as exc:  # the broker may be away; the next change retries
                log.info("status not published: %s", exc)
                return False
        self.published += 1
        return True

    def stop(self) -> None:
        """Publish ``offline`` (a clean disconnect sends no last will) and stop."""
        self._stopped.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(2)
        self.publish("offline", timeout=2)


def offline_will(device: str, thing: str) -> bytes:
    """The last will: what the broker publishes on the status topic if we vanish."""
    return json.dumps(
        {"schema": SCHEMA_VERSION, "state": "offline", "device": device, "thing": thing}
    ).encode()
