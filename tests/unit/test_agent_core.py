"""The agent's wiring with a fake bus: subscriptions follow the components, and a
message is acknowledged only after it is recorded."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge.agent.agent import Agent
from edge.agent.store import _Writeback
from edge.model.component import load_component
from edge.model.device import load_device
from edge.mqtt.bus import Bus, ConnectionHandler, Message, MessageHandler
from edge.sync.records import ResultRecord
from edge.sync.sinks import Sink
from tests.harness.agent import write_component, write_device


class FakeBus(Bus):
    def __init__(self) -> None:
        self.subscriptions: dict[str, MessageHandler] = {}
        self.published: list[tuple[str, bytes, Mapping[str, str]]] = []
        self.acked: list[int] = []
        self.event = threading.Event()

    def connect(self, timeout: float = 10.0) -> None: ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.subscriptions[topic_filter] = handler

    def unsubscribe(self, topic_filter: str) -> None:
        del self.subscriptions[topic_filter]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None, timeout: float | None = None,
                expiry: int | None = None) -> None:
        self.published.append((topic, payload, dict(properties or {})))
        self.event.set()

    def ack(self, message: Message) -> None:
        self.acked.append(message.mid)

    def wait_published(self, topic: str, timeout: float = 10.0) -> bool:
        """Wait until something was published on ``topic`` (a worker process answers)."""
        deadline = time.monotonic() + timeout
        while not any(t == topic for t, _, _ in self.published):
            if time.monotonic() > deadline:
                return False
            self.event.wait(0.05)
            self.event.clear()
        return True

    def on_connection_change(self, handler: ConnectionHandler) -> None: ...

    def close(self) -> None: ...


class KeptSink:
    """A sink that keeps what it is given (the agent's outbox drains into it)."""

    name = "kept"

    def __init__(self) -> None:
        self.records: list[ResultRecord] = []

    def write(self, records: Sequence[ResultRecord]) -> None:
        self.records.extend(records)


def _agent(
    tmp_path: Path,
    bus: FakeBus,
    sinks: Mapping[str, Sink] | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Agent:
    device = load_device(write_device(tmp_path / "dev1.yaml", "mqtt://127.0.0.1:9"))
    return Agent(device, [], bus=bus, data_dir=tmp_path / "data",
                 sink_factory=lambda m: dict(sinks or {}), heartbeat=3600, on_fatal=on_fatal)


@contextlib.contextmanager
def running_echo(
    tmp_path: Path,
    bus: FakeBus,
    sinks: Mapping[str, Sink] | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> Iterator[tuple[Agent, Any]]:
    """A started agent running the echo component, and the bus handler of its trigger."""
    agent = _agent(tmp_path, bus, sinks, on_fatal)
    agent.start()
    try:
        agent.add_component(load_component(write_component(tmp_path, "echo", ECHO)))
        yield agent, bus.subscriptions["in/echo/+"]
    finally:
        agent.stop()


ECHO = "def handler(event, context):\n    return event\n"


def test_subscriptions_follow_added_and_removed_components(tmp_path: Path) -> None:
    bus = FakeBus()
    agent = _agent(tmp_path, bus)
    agent.start()
    try:
        a = load_component(write_component(tmp_path, "a", ECHO, triggers="  - topic: x/+\n"))
        b = load_component(write_component(tmp_path, "b", ECHO, triggers="  - topic: x/#\n"))
        agent.add_component(a)
        assert set(bus.subscriptions) == {"x/+"}
        agent.add_component(b)
        assert set(bus.subscriptions) == {"x/#"}  # x/+ is covered by x/#
        assert agent.remove_component("b")
        assert set(bus.subscriptions) == {"x/+"}
        assert not agent.remove_component("b")
    finally:
        agent.stop()


def test_message_is_acked_after_recording_and_result_published(tmp_path: Path) -> None:
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (_, handler):
        handler(Message(topic="in/echo/s", payload=b'{"v": 1}', qos=1, mid=77))
        assert bus.wait_published("out/echo")
        assert bus.acked == [77]
        topic, payload, props = next(p for p in bus.published if p[0] == "out/echo")
        assert json.loads(payload) == {"v": 1}
        assert props["component"] == "echo" and props["seq"] == "1"


def test_message_matching_no_component_is_acked_at_once(tmp_path: Path) -> None:
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        agent.remove_component("echo")
        handler(Message(topic="in/echo/s", payload=b"{}", qos=1, mid=5))
        assert bus.acked == [5]


def test_routing_follows_a_removed_component_after_its_topic_was_seen(tmp_path: Path) -> None:
    """Targets are remembered per topic; removing a component must forget them."""
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        handler(Message(topic="in/echo/s", payload=b'{"n": 1}', qos=1, mid=1))
        assert bus.wait_published("out/echo")
        agent.remove_component("echo")
        handler(Message(topic="in/echo/s", payload=b'{"n": 2}', qos=1, mid=2))
        assert bus.acked == [1, 2]
        assert b'{"n": 2}' not in [r.payload for r in agent.store.pending()]


def test_a_worker_thread_commits_its_completion_while_the_writer_is_idle(
    tmp_path: Path,
) -> None:
    """Waking the store's writer for one small commit costs a thread hand-off; the
    worker's own thread commits the completion when nothing is queued for the writer."""
    bus = FakeBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        committers: list[str] = []
        completed = threading.Event()

        def space_freed() -> None:  # runs on the thread that committed a completion
            committers.append(threading.current_thread().name)
            completed.set()

        agent.store.on_space(space_freed)
        handler(Message(topic="in/echo/s", payload=b'{"v": 1}', qos=1, mid=1))
        assert completed.wait(10)
        (committer,) = committers
        assert committer.startswith("echo-w")  # a serving thread of the echo component
        assert agent.store.pending() == []


class ReceivingBus(FakeBus):
    """A bus whose handler calls come from a receiving thread with nothing else to do
    (``Interruptible``): the agent may run a record on it. Notes, per result published,
    the thread it came from and whether its intake row was committed by then."""

    def __init__(self) -> None:
        super().__init__()
        self._r, self._w = os.pipe()  # an interrupt fd that stays quiet
        self.agent: Agent | None = None
        self.publishers: list[str] = []
        self.committed_when_published: list[bool] = []
        self.order: list[str] = []
        self.message_waits = False  # what work_waits says beyond the quiet fd

    def interrupts(self) -> tuple[int, ...] | None:
        return (self._r,)

    def work_waits(self) -> bool:
        return self.message_waits or bool(select.select([self._r], [], [], 0)[0])

    def ack(self, message: Message) -> None:
        self.order.append(f"ack {message.mid}")
        super().ack(message)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Mapping[str, str] | None = None, timeout: float | None = None,
                expiry: int | None = None) -> None:
        if topic == "out/echo":
            self.order.append(f"result {json.loads(payload)['n']}")
        if self.agent is not None and properties and "seq" in properties:
            self.publishers.append(threading.current_thread().name)
            pending = {r.seq for r in self.agent.store.pending()}
            self.committed_when_published.append(int(properties["seq"]) in pending)
        super().publish(topic, payload, qos, retain, properties, timeout)

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def quiet_and_idle(agent: Agent) -> None:
    """Wait until the echo worker is up and idle and the store has nothing pending:
    a lone message on a quiet device, as the receiving thread's own run needs."""
    deadline = time.monotonic() + 10
    while not agent.runners["echo"].idle() or any(
        r.component == "echo" for r in agent.store.pending()
    ):
        assert time.monotonic() < deadline
        threading.Event().wait(0.01)  # nothing to await: worker start, writer commit
    agent.store._commit_cost = 0.0  # however long the last fsync took here


def test_the_receiving_thread_runs_a_lone_message_itself(tmp_path: Path) -> None:
    bus = ReceivingBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        bus.agent = agent
        for mid in (1, 2, 3):
            quiet_and_idle(agent)
            handler(Message(topic="in/echo/s", payload=b'{"n": %d}' % mid, qos=1, mid=mid))
            # Done when the handler returns: published and acknowledged.
            assert [json.loads(p) for t, p, _ in bus.published if t == "out/echo"][-1] == {
                "n": mid
            }
            assert bus.acked[-1] == mid
            # And completed: the writer thread was not woken for that one commit.
            assert not any(r.component == "echo" for r in agent.store.pending())
        assert bus.publishers == [threading.current_thread().name] * 3
        assert bus.committed_when_published == [True, True, True]
        # Each acknowledgement goes out after the result: the broker needs it no sooner.
        assert bus.order == ["result 1", "ack 1", "result 2", "ack 2", "result 3", "ack 3"]
        # The first message made the sequence reservation; the others started their
        # function before their own commit.
        assert agent.store.handed_out_early == 2
        assert agent.store.inline_commits == 6  # each record and each completion
    bus.close()


def _split_sync_order(tmp_path: Path, sinks: Mapping[str, Sink] | None = None) -> list[str]:
    """Three lone messages under ``--durability power``, whose commits on the receiving
    thread only start their fsync (``Store.durable`` finishes it): what left when."""
    bus = ReceivingBus()
    with running_echo(tmp_path, bus, sinks) as (agent, handler):
        bus.agent = agent

        def start(fd: int) -> None:
            bus.order.append("write-back")

        def datasync(fd: int) -> None:
            bus.order.append("sync")
            os.fdatasync(fd)

        agent.store._writeback = _Writeback(Path(f"{agent.store.path}-wal"), start, datasync)
        for mid in (1, 2, 3):
            quiet_and_idle(agent)
            handler(Message(topic="in/echo/s", payload=b'{"n": %d}' % mid, qos=1, mid=mid))
        assert not any(r.component == "echo" for r in agent.store.pending())
    bus.close()
    return bus.order


def test_a_completion_waits_for_the_writer_while_a_message_waits_for_the_receiver(
    tmp_path: Path,
) -> None:
    """The receiving thread ran a lone message itself; with another one waiting for
    it (``Bus.work_waits``) it hands the completion's commit to the store's writer."""
    bus = ReceivingBus()
    committers: list[str] = []
    with running_echo(tmp_path, bus) as (agent, handler):
        agent.store.on_space(lambda: committers.append(threading.current_thread().name))
        for mid, waits in ((1, False), (2, True)):
            quiet_and_idle(agent)
            bus.message_waits = waits
            handler(Message(topic="in/echo/s", payload=b'{"n": %d}' % mid, qos=1, mid=mid))
            assert agent.store.flush(10)
        assert bus.acked == [1, 2]
    bus.close()
    assert committers == [threading.current_thread().name, "store-writer"]


@pytest.mark.parametrize(
    ("sinks", "expected"),
    [
        # Its result (kept nowhere on the device) leaves before the disk is waited
        # for, and travels meanwhile; the acknowledgement waits for the disk.
        pytest.param(False, [
            "result 1", "ack 1",
            "write-back", "result 2", "sync", "ack 2",
            "write-back", "result 3", "sync", "ack 3",
        ], id="no-sinks"),
        # What a subscriber sees also reaches the sinks, whenever the power goes.
        pytest.param(True, [
            "result 1", "ack 1",
            "write-back", "sync", "result 2", "ack 2",
            "write-back", "sync", "result 3", "ack 3",
        ], id="sinks"),
    ],
)  # fmt: skip
def test_a_lone_message_is_on_disk_before_it_is_acknowledged(
    tmp_path: Path, sinks: bool, expected: list[str]
) -> None:
    # The first one wrote the sequence reservation, synced within its commit.
    assert _split_sync_order(tmp_path, {"kept": KeptSink()} if sinks else None) == expected


def test_a_failed_sync_holds_every_acknowledgement_and_stops_the_agent(
    tmp_path: Path,
) -> None:
    """The sync that makes a lone message's record durable fails (EIO): nothing is
    acknowledged or completed for it, nor for any message after it (the sync is not
    tried again, see ``Store.durable``), and the agent asks to be stopped, once."""
    import errno

    bus = ReceivingBus()
    fatal: list[str] = []
    with running_echo(tmp_path, bus, on_fatal=fatal.append) as (agent, handler):
        bus.agent = agent

        def start(fd: int) -> None:
            bus.order.append("write-back")

        def datasync(fd: int) -> None:
            bus.order.append("sync")
            raise OSError(errno.EIO, "Input/output error")

        agent.store._writeback = _Writeback(Path(f"{agent.store.path}-wal"), start, datasync)
        for mid in (1, 2, 3):
            if mid < 3:  # (the second stays pending)
                quiet_and_idle(agent)
            handler(Message(topic="in/echo/s", payload=b'{"n": %d}' % mid, qos=1, mid=mid))
        # The first one's reservation was synced in its commit; the second's sync
        # failed (its result, which no sink keeps, had left); the third was not taken.
        assert bus.acked == [1]
        assert bus.order == ["result 1", "ack 1", "write-back", "result 2", "sync"]
        assert [r.payload for r in agent.store.pending()] == [b'{"n": 2}']
        assert agent.fatal is not None and "Input/output error" in agent.fatal
        assert fatal == [agent.fatal]
        assert agent.status_doc("offline")["fatal"] == agent.fatal  # what it stops on
        with pytest.raises(OSError, match="an earlier sync"):
            agent.store.durable()  # and it stays failed: no second sync
    bus.close()


def test_a_result_whose_record_was_not_committed_is_dropped(tmp_path: Path) -> None:
    """The function started while its record was being committed, and the commit
    failed: nothing is published or acknowledged for it (the broker keeps the
    message), and the agent goes on with the next one."""
    import sqlite3

    bus = ReceivingBus()
    with running_echo(tmp_path, bus) as (agent, handler):
        quiet_and_idle(agent)
        handler(Message(topic="in/echo/s", payload=b'{"n": 1}', qos=1, mid=1))
        quiet_and_idle(agent)
        with sqlite3.connect(agent.store.path) as other:  # the next number is taken
            other.execute(
                "INSERT INTO intake (seq, component, topic, payload, received_at)"
                " VALUES (?, 'other', 't', x'00', 0)", (agent.store.next_seq(),),
            )
        handler(Message(topic="in/echo/s", payload=b'{"n": 2}', qos=1, mid=2))
        assert agent.store.handed_out_early == 1  # it ran, before its commit failed
        quiet_and_idle(agent)
        handler(Message(topic="in/echo/s", payload=b'{"n": 3}', qos=1, mid=3))
        outputs = [json.loads(p) for t, p, _ in bus.published if t == "out/echo"]
        assert outputs == [{"n": 1}, {"n": 3}]
        assert bus.acked == [1, 3]
    bus.close()


def test_a_replacement_does_not_run_again_what_its_predecessor_completed(
    tmp_path: Path,
) -> None:
    # The old version's last completion is still on its way to the store (its writer
    # is held) when the new version is installed: the new one must not find that
    # record pending and run it a second time.
    bus = FakeBus()
    gate = socket.create_server(("127.0.0.1", 0))
    gate.settimeout(10)
    gated = (
        "import socket\n\n"
        "def handler(event, context):\n"
        f"    with socket.create_connection(('127.0.0.1', {gate.getsockname()[1]})) as c:\n"
        "        c.recv(1)\n"
        "    return event\n"
    )
    agent = _agent(tmp_path, bus)
    agent.start()
    writer = agent.store._commit_lock
    held = False
    try:
        agent.add_component(load_component(write_component(tmp_path / "v1", "echo", gated)))
        bus.subscriptions["in/echo/+"](
            Message(topic="in/echo/s", payload=b'{"v": 1}', qos=1, mid=5)
        )
        conn, _ = gate.accept()  # the handler runs: its record is committed
        writer.acquire()
        held = True
        conn.sendall(b"x")
        conn.close()
        assert bus.wait_published("out/echo")  # concluded; its completion waits for the lock
        replacing = threading.Thread(
            target=agent.add_component,
            args=(load_component(write_component(
                tmp_path / "v2", "echo", ECHO, manifest="limits: {max_instances: 1}\n")),),
        )
        replacing.start()
        replacing.join(0.5)
        assert replacing.is_alive()  # waiting for the completion to be committed
        writer.release()
        held = False
        replacing.join(10)
        assert not replacing.is_alive()
        # The next message runs after anything resubmitted to the new version (one worker,
        # in order): once its result is out, a second run of seq 1 would be out too.
        bus.subscriptions["in/echo/+"](
            Message(topic="in/echo/s", payload=b'{"v": 2}', qos=1, mid=6)
        )
        deadline = time.monotonic() + 10
        while not any(p["seq"] == "2" for t, _, p in bus.published if t == "out/echo"):
            assert time.monotonic() < deadline, "the second message's result never came"
            bus.event.wait(0.05)
            bus.event.clear()
        assert [p["seq"] for t, _, p in bus.published if t == "out/echo"] == ["1", "2"]
        assert agent.store.flush(timeout=10)
        assert agent.store.pending() == []
    finally:
        if held:
            writer.release()
        gate.close()
        agent.stop()
