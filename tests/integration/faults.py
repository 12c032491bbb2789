"""What the fault tests share: a counting component, a paced publisher, readers of the
two sinks that count every record, and a waiter on the agent's status document."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.agent import AgentRunner, Probe, write_component
from tests.harness.mosquitto import MosquittoBroker, tcp_nodelay

COUNT = """
    def handler(event, context):
        return {"n": event["n"]}
"""


def count_component(
    root: Path, bucket: str, table: str, name: str = "count", *, instances: int = 2
) -> Path:
    return write_component(
        root, name, COUNT,
        manifest=f"""
            results:
              s3: {{bucket: {bucket}, prefix: "{{component}}/{{thing}}/"}}
              dynamodb: {{table: {table}}}
            limits: {{max_instances: {instances}, timeout: 10s}}
        """,
        outputs="  []\n",
    )


def agent_args(runner: AgentRunner, *, heartbeat: float = 1.0) -> AgentRunner:
    """No local results dir (5,000 fsynced files would dominate the run), a fast heartbeat."""
    args = list(runner.args)
    i = args.index("--results-dir")
    del args[i : i + 2]
    runner.args = [*args, "--heartbeat", str(heartbeat)]
    return runner


def set_outbox(runner: AgentRunner, max_bytes: int, when_full: str) -> None:
    with runner.config.open("a") as f:
        f.write(f"outbox:\n  max_bytes: {max_bytes}\n  when_full: {when_full}\n")


def set_endpoints(runner: AgentRunner, url: str) -> None:
    """Point both sinks at ``url`` (a proxy) through the environment boto3 reads."""
    runner.env.update(AWS_ENDPOINT_URL_S3=url, AWS_ENDPOINT_URL_DYNAMODB=url)


class Publisher:
    """Publishes ``{"n": i}`` for i in range(first, first + total) at QoS 1 from its own
    thread, paced at ``rate`` per second; ``sent`` counts messages the broker acknowledged."""

    def __init__(
        self, broker: MosquittoBroker, topic: str, total: int, rate: float, *, first: int = 0
    ) -> None:
        self.topic, self.total, self.rate, self.first = topic, total, rate, first
        self.sent = 0
        self.done = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"publisher-{os.getpid()}-{id(self)}", protocol=mqtt.MQTTv5,
        )
        tcp_nodelay(self._client)
        self._client.max_inflight_messages_set(200)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        infos = []
        for i in range(self.total):
            due = started + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load, not synchronising
            payload = json.dumps({"n": self.first + i})
            infos.append(self._client.publish(self.topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(60)
            self.sent += int(info.is_published())
        self.done.set()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def dynamodb_ns(ddb_client: Any, table: str) -> Counter[int]:
    return Counter(int(item["result"]["n"]) for item in ddb_client.scan_all(table))


def s3_ns(s3_client: Any, bucket: str, prefix: str = "") -> Counter[int]:
    counts: Counter[int] = Counter()
    for key in s3_client.list_keys(bucket, prefix):
        for line in s3_client.get_object(bucket, key).splitlines():
            counts[int(json.loads(line)["result"]["n"])] += 1
    return counts


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.25) -> None:
    """Poll a remote store (which has no event to wait on) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


@dataclass
class StatusLog:
    """Every status document the agent publishes, in order."""

    probe: Probe
    thing: str = "dev1"

    def __post_init__(self) -> None:
        self.probe.follow(f"edge/{self.thing}/status")

    def docs(self) -> list[dict[str, Any]]:
        out = []
        for m in self.probe.on(f"edge/{self.thing}/status"):
            doc = json.loads(m.payload)
            if doc.get("state") == "online":
                out.append(doc)
        return out

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check(msgs: list[mqtt.MQTTMessage]) -> bool:
            for m in reversed(msgs):
                if m.topic == f"edge/{self.thing}/status":
                    doc = json.loads(m.payload)
                    if doc.get("state") == "online" and predicate(doc):
                        found.append(doc)
                        return True
                    return False
            return False

        self.probe.wait_for(check, timeout)
        return found[0]


def drained(doc: dict[str, Any]) -> bool:
    """The agent has nothing left: no pending intake, no parked messages, empty outbox."""
    intake = doc.get("intake", {})
    outbox = doc.get("outbox", {})
    return (
        intake.get("pending") == 0
        and intake.get("parked") == 0
        and all(sink["records"] == 0 for sink in outbox.values())
    )


def settle(
    status: StatusLog, ddb_client: Any, table: str, s3_client: Any, bucket: str, events: int,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Wait until both sinks hold at least ``events`` records, then for a status document
    published after that which shows nothing left in the agent; return that document.

    After it, the sinks can change no more, so counting them is final.
    """
    wait_until(lambda: sum(dynamodb_ns(ddb_client, table).values()) >= events, timeout,
               f"{events} DynamoDB items", poll=0.5)
    wait_until(lambda: sum(s3_ns(s3_client, bucket).values()) >= events, timeout,
               f"{events} S3 records", poll=0.5)
    since = time.time()
    return status.wait(lambda d: d["timestamp"] > since and drained(d), timeout)
