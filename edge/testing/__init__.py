"""Test a component's handler from pytest, the way the device runs it.

::

    from edge.testing import FakeClock, mqtt_event, run_handler

    def test_greets(tmp_path):
        result = run_handler("components/hello", mqtt_event("sensors/s1/hello", {"name": "Ada"}))
        assert result.value["greeting"] == "Hello, Ada!"

``run_handler`` runs in-process by default (fast, debuggable, the handler's
module is loaded from the component folder under a private name so two
components' ``app.py`` never clash). ``mode="worker"`` runs it in the agent's
real worker process (``edge.runtime.bootstrap`` for Python, the Node.js
bootstrap for ``nodejs*`` runtimes) with the same context, environment and
error records as on a device. Both return an ``Invocation`` of the same shape:
results go through the runtime's marshalling (JSON round trip, or bytes), and a
raised exception becomes the Lambda-style error record.

``FakeClock`` drives ``context.get_remaining_time_in_millis()`` in-process, so
remaining-time logic is deterministic.
"""

from __future__ import annotations

from edge.testing.events import MqttEvent, mqtt_event
from edge.testing.runner import FakeClock, Invocation, load_handler, make_context, run_handler

__all__ = [
    "FakeClock",
    "Invocation",
    "MqttEvent",
    "load_handler",
    "make_context",
    "mqtt_event",
    "run_handler",
]
