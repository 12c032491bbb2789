"""The agent's reported state: a retained status document on ``edge/<thing>/status``.

Published on connect, on every change (debounced, so a burst of state changes
costs one message), and on a heartbeat; the broker publishes the last will
(``state: offline``) the moment it notices the agent gone. Building the
document reads counters only, so reporting costs next to nothing between
heartbeats. The schema is docs/status.md.

The reporter adds what only it knows to the agent's document: ``heartbeat_s``
(so a reader can tell a silent device from a quiet one), ``expiry_s`` (an online
document's Message Expiry Interval, from which a reader tells its age by the
broker's clock, not the device's) and, per component,
``recent``: the invocations, errors, timeouts and throttles of the last
``window`` seconds, as differences of the cumulative counters between the
documents it built.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge.model.status import STATUS_EXPIRY_S
from edge.mqtt.bus import Bus

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECENT_WINDOW = 300.0
RECENT_COUNTERS = ("invocations", "errors", "timeouts", "throttles")


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
        window: float = RECENT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
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
        self.recent = RecentWindow(window, clock)
        self.last_document: dict[str, Any] | None = None

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
            # "online" promises that a trigger published now is received: wait until
            # the bus's subscriptions are acknowledged, where it can tell (paho).
            subscribed = getattr(self._bus, "subscribed", None)
            if isinstance(subscribed, threading.Event) and not subscribed.wait(10):
                self._changed.set()  # not yet: try again on the next round
                continue
            self.publish("online")

    def publish(self, state: str, *, timeout: float | None = None) -> bool:
        with self._lock:
            try:
                doc = self.document(state)
                payload = json.dumps(doc, separators=(",", ":"), default=str).encode()
                self._bus.publish(self.topic, payload, qos=1, retain=True, timeout=timeout,
                                  expiry=doc.get("expiry_s"))  # fmt: skip
            except Exception as exc:  # the broker may be away; the next change retries
                log.info("status not published: %s", exc)
                return False
        self.published += 1
        return True

    def document(self, state: str = "online") -> dict[str, Any]:
        """The agent's document plus ``heartbeat_s`` and each component's ``recent``."""
        doc = self._build(state)
        doc.setdefault("heartbeat_s", self._heartbeat)
        if state == "online":
            # Sent as the message's expiry too: a reader learns the document's age by the
            # broker's clock, whatever the device's clock says (docs/status.md).
            doc.setdefault("expiry_s", STATUS_EXPIRY_S)
        components = doc.get("components")
        if isinstance(components, dict):
            self.recent.annotate(components)
        self.last_document = doc
        return doc

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
        {"schema": SCHEMA_VERSION, "state": "offline", "device": device, "thing": thing,
         "will": True}
    ).encode()  # fmt: skip


class RecentWindow:
    """Per component, samples of the cumulative counters; ``recent`` is now minus the
    oldest sample inside the window (minus zero while the window is still filling)."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self._clock = clock
        self._started = clock()
        self._samples: dict[str, deque[tuple[float, tuple[int, ...]]]] = {}

    def annotate(self, components: dict[str, Any]) -> None:
        now = self._clock()
        for name in list(self._samples):
            if name not in components:
                del self._samples[name]
        for name, body in components.items():
            if not isinstance(body, dict):
                continue
            values = tuple(int(body.get(key) or 0) for key in RECENT_COUNTERS)
            samples = self._samples.setdefault(name, deque([(self._started, (0,) * len(values))]))
            # Keep one sample at or before the window's start, as the base.
            while len(samples) > 1 and samples[1][0] <= now - self.window:
                samples.popleft()
            base = samples[0][1]
            if any(v < b for v, b in zip(values, base, strict=True)):
                # Counters went back (a component was replaced): start over from zero.
                samples.clear()
                samples.append((now, (0,) * len(values)))
                base = samples[0][1]
            body["recent"] = {
                "window_s": self.window,
                **{k: v - b for k, v, b in zip(RECENT_COUNTERS, values, base, strict=True)},
            }
            if len(samples) > 1 and samples[-1][0] > now - self.window / 30:
                samples[-1] = (now, values)  # bursts of changes do not grow the history
            else:
                samples.append((now, values))
