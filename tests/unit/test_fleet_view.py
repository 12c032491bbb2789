"""The direct backend's fleet view, and the status feed's end-of-retained marker."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from edge.errors import BrokerError, UsageError
from edge.fleet.reader import StatusFeed
from edge.fleet.view import Inventory, Known, choose_broker, fleet_view
from edge.model.topics import matches
from edge.mqtt.bus import ConnectionHandler, Message, MessageHandler

NOW = 1_800_000_000.0


def status(thing: str, **changes: Any) -> bytes:
    data: dict[str, Any] = {
        "schema": 1, "state": "online", "device": thing, "thing": thing, "groups": ["field"],
        "timestamp": NOW, "components": {},
    }  # fmt: skip
    data.update(changes)
    return json.dumps(data).encode()


def test_rows_need_attention_first_and_inventory_devices_never_seen() -> None:
    payloads = {
        "a": status("a"),
        "b": status("b", state="offline"),
        "c": b"garbage",
        "d": status("d", components={"x": {"version": "1", "state": "ERRORED"}}),
        "thing-e": status("thing-e"),
    }
    inventory = [Known("e", "thing-e", ("field",)), Known("f", "thing-f", ("lab",))]
    fleet = fleet_view(payloads, now=NOW, inventory=inventory)
    assert [(d.name, d.state) for d in fleet.devices] == [
        ("c", "invalid"), ("b", "offline"), ("d", "degraded"), ("f", "never-seen"),
        ("a", "online"), ("e", "online"),
    ]  # fmt: skip
    assert fleet.devices[0].errors == ("invalid status: not JSON (7 bytes)",)
    assert not fleet.healthy
    assert fleet.counts() == {"online": 2, "degraded": 1, "offline": 1, "never-seen": 1,
                              "invalid": 1}  # fmt: skip
    assert fleet.to_json()["backend"] == "direct"


def test_group_and_state_filters() -> None:
    payloads = {"a": status("a", groups=["lab"]), "b": status("b"), "c": b"{}"}
    inventory = [Known("c", "c", ("lab",)), Known("n", "n", ("lab",))]
    lab = fleet_view(payloads, now=NOW, inventory=inventory, group="lab")
    assert sorted(d.name for d in lab.devices) == ["a", "c", "n"]
    online = fleet_view(payloads, now=NOW, inventory=inventory, states=("online",))
    assert [d.name for d in online.devices] == ["a", "b"]
    assert online.healthy


def test_the_broker_comes_from_the_inventory_unless_named() -> None:
    one = Inventory((), ("mqtt://h:1883",))
    assert choose_broker(one, None) == "mqtt://h:1883"
    assert choose_broker(one, "mqtt://x:1") == "mqtt://x:1"
    with pytest.raises(UsageError, match="no broker"):
        choose_broker(Inventory((), ()), None)
    with pytest.raises(UsageError, match="2 brokers"):
        choose_broker(Inventory((), ("mqtt://a:1", "mqtt://b:1")), None)


class RetainingBus:
    """A bus with retained messages: a new subscription gets them at once, in order,
    and a later publish reaches subscribers after them (what Mosquitto does at QoS 0)."""

    def __init__(self, retained: Mapping[str, bytes], *, deliver: bool = True) -> None:
        self.retained = dict(retained)
        self.subs: dict[str, MessageHandler] = {}
        self.deliver = deliver

    def connect(self, timeout: float = 10.0) -> None: ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.subs[topic_filter] = handler
        for topic, payload in self.retained.items():
            if matches(topic_filter, topic):
                handler(Message(topic, payload, qos=0, retain=True))

    def unsubscribe(self, topic_filter: str) -> None:
        self.subs.pop(topic_filter, None)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None,
                timeout: float | None = None, expiry: int | None = None) -> None:  # fmt: skip
        if not self.deliver:
            return
        for topic_filter, handler in list(self.subs.items()):
            if matches(topic_filter, topic):
                handler(Message(topic, payload, qos=0, retain=retain))

    def ack(self, message: Message) -> None: ...

    def on_connection_change(self, handler: ConnectionHandler) -> None: ...

    def close(self) -> None: ...


def test_the_feed_returns_once_the_marker_comes_back() -> None:
    bus = RetainingBus({"edge/a/status": status("a"), "edge/b/status": status("b"),
                        "edge/a/deployment": b"{}"})  # fmt: skip
    feed = StatusFeed(bus)
    samples = feed.open(timeout=1)
    assert sorted(samples) == ["a", "b"]
    assert all(s.retained for s in samples.values())
    version = feed.version
    bus.publish("edge/a/status", b"")  # a deleted retained document
    assert feed.wait_change(version, 1) != version
    assert sorted(feed.snapshot()) == ["b"]


def test_a_marker_that_never_returns_is_a_broker_error() -> None:
    clock = iter(float(i) for i in range(100))
    feed = StatusFeed(RetainingBus({}, deliver=False), clock=lambda: next(clock))
    with pytest.raises(BrokerError, match="did not finish sending status documents"):
        feed.open(timeout=3)


def test_wait_change_wakes_on_another_thread() -> None:
    bus = RetainingBus({})
    feed = StatusFeed(bus)
    feed.open(timeout=1)
    seen = feed.version
    threading.Timer(0.05, lambda: bus.publish("edge/z/status", status("z"))).start()
    assert feed.wait_change(seen, 5) == seen + 1


def test_an_absent_devices_folder_is_an_empty_inventory(tmp_path: Path) -> None:
    from edge.fleet.view import load_known

    assert load_known(tmp_path / "nope") == Inventory((), ())


def test_the_table_keeps_attention_rows_and_folds_the_rest_beyond_one_screen() -> None:
    from rich.console import Console

    from edge.cli.render_fleet import fleet_table

    payloads = {f"d{i:02d}": status(f"d{i:02d}") for i in range(20)}
    payloads["d07"] = status("d07", state="offline")
    fleet = fleet_view(payloads, now=NOW)
    console = Console(width=200, record=True)
    console.print(fleet_table(fleet, max_rows=5))
    text = console.export_text()
    assert "d07" in text and "offline" in text  # attention first, always shown
    assert "... 16 more" in text and "16 online" in text
    assert "d19" not in text
    console = Console(width=200, record=True)
    console.print(fleet_table(fleet))
    assert "d19" in console.export_text()
