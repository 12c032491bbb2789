"""What every bus adapter does with a received message: one call per distinct
handler, an unwanted message acknowledged at once, and routing that follows
subscription changes even for a topic already seen."""

from __future__ import annotations

from edge.mqtt.bus import Message, Subscriptions


def test_delivery_follows_subscriptions_for_a_topic_already_seen() -> None:
    subs = Subscriptions()
    got: list[tuple[str, str]] = []
    acked: list[Message] = []
    a = lambda m: got.append(("a", m.topic))  # noqa: E731
    b = lambda m: got.append(("b", m.topic))  # noqa: E731
    subs.add("s/+", a, 1)
    subs.add("s/#", a, 1)  # the same handler twice: called once
    msg = Message(topic="s/1", payload=b"{}", qos=1, mid=3)
    subs.deliver(msg, acked.append)
    assert got == [("a", "s/1")] and acked == []
    subs.add("s/1", b, 0)
    subs.deliver(msg, acked.append)
    assert got[1:] == [("a", "s/1"), ("b", "s/1")]
    for f in ("s/+", "s/#", "s/1"):
        subs.remove(f)
    subs.deliver(msg, acked.append)
    assert acked == [msg] and len(got) == 3
    assert subs.filters() == []


def test_a_failing_handler_does_not_stop_the_others() -> None:
    subs = Subscriptions()
    got: list[str] = []

    def broken(message: Message) -> None:
        raise RuntimeError("boom")

    subs.add("x", broken, 1)
    subs.add("+", lambda m: got.append(m.topic), 1)
    subs.deliver(Message(topic="x", payload=b""), lambda m: None)
    assert got == ["x"]
    assert sorted(subs.filters()) == [("+", 1), ("x", 1)]
