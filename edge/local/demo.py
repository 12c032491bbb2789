"""``edgectl demo``: the whole path on one machine, started and stopped by us.

broker + local S3/DynamoDB + a real agent process for ``devices/local.yaml``
running ``components/hello``; sample events are published on the trigger
topic and the demo waits until each result has been seen on the output topic,
in DynamoDB and in S3. Everything started here is stopped on the way out,
also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, UsageError
from edge.local.broker import LocalBroker
from edge.local.cloud import LocalCloud
from edge.model.component import ComponentManifest, load_component
from edge.model.device import load_device
from edge.mqtt.bus import Message
from edge.mqtt.paho_bus import BrokerAddress, PahoBus

Progress = Callable[[str], None]


@dataclass
class DemoResult:
    component: str
    published: int
    outputs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    broker: str = ""
    elapsed_s: float = 0.0


def sample_events(manifest: ComponentManifest) -> list[tuple[str, bytes]]:
    """(name, payload) of each file in the component's ``events/`` folder."""
    folder = manifest.path / "events"
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise UsageError(f"{manifest.source}: no sample events in {folder}")
    return [(p.name, p.read_bytes()) for p in files]


def concrete_topic(topic_filter: str, thing: str, index: int) -> str:
    """A topic that matches a trigger filter: wildcards filled with sample values."""
    levels = []
    for level in topic_filter.replace("{thing}", thing).split("/"):
        if level == "+":
            levels.append(f"demo-{index}")
        elif level == "#":
            levels.append("demo")
        else:
            levels.append(level)
    return "/".join(levels)


@contextlib.contextmanager
def _started(thing: Any, progress: Progress, label: str) -> Iterator[Any]:
    progress(f"starting {label}")
    thing.start()
    try:
        yield thing
    finally:
        progress(f"stopping {label}")
        thing.stop()


class AgentProcess:
    """The real ``edge-agent`` in a child process, as a device would run it."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.agent.main", *self.args],
                stdout=log, stderr=log, env=self.env, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def run_demo(
    root: Path,
    *,
    component: str = "components/hello",
    device: str = "devices/local.yaml",
    timeout: float = 60.0,
    progress: Progress = lambda _msg: None,
    keep_dir: Path | None = None,
) -> DemoResult:
    began = time.monotonic()
    manifest = load_component(root / component)
    dev = load_device(root / device)
    events = sample_events(manifest)
    if not manifest.triggers:
        raise UsageError(f"{manifest.source}: the demo needs a component with a trigger")
    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="edge-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker()
    cloud = LocalCloud(region=dev.cloud.region)
    with _started(broker, progress, "local MQTT broker"), _started(
        cloud, progress, "local S3/DynamoDB endpoint (moto server)"
    ):
        progress(f"broker: {broker.kind} at {broker.url}; cloud endpoint: {cloud.url}")
        s3, ddb = _cloud_clients(cloud)
        if manifest.results.s3:
            s3.ensure_bucket(manifest.results.s3.bucket, cloud.region)
            progress(f"created bucket {manifest.results.s3.bucket}")
        if manifest.results.dynamodb:
            d = manifest.results.dynamodb
            ddb.ensure_table(d.table, d.partition_key, d.sort_key)
            progress(f"created table {d.table}")

        result = DemoResult(component=manifest.name, published=len(events), broker=broker.url)
        got_output = threading.Event()
        lock = threading.Lock()
        status: dict[str, Any] = {}
        online = threading.Event()
        client = PahoBus(BrokerAddress.parse(broker.url))
        client.connect(timeout=10)

        def on_status(msg: Message) -> None:
            with contextlib.suppress(ValueError):
                status.update(json.loads(msg.payload))
            if status.get("state") == "online":
                online.set()

        def on_output(msg: Message) -> None:
            with lock:
                target = result.errors if "/errors" in msg.topic else result.outputs
                try:
                    body: Any = json.loads(msg.payload)
                except ValueError:
                    body = f"<{len(msg.payload)} bytes>"
                target.append({"topic": msg.topic, "payload": body, **dict(msg.properties)})
                if len(result.outputs) + len(result.errors) >= len(events):
                    got_output.set()

        thing = dev.thing_name
        client.subscribe(f"edge/{thing}/status", on_status)
        for out in manifest.outputs:
            client.subscribe(out.topic.replace("{thing}", thing), on_output)
        client.subscribe(
            manifest.errors_topic.replace("{thing}", thing).replace("{component}", manifest.name),
            on_output,
        )
        env = {**os.environ, **cloud.environment()}
        agent = AgentProcess(
            [
                "--config", str(root / device), "--data-dir", str(work / "agent"),
                "--component", str(manifest.path), "--broker", broker.url,
                "--heartbeat", "5",
            ],
            env,
            work / "agent.log",
        )
        try:
            with _started(agent, progress, f"device agent for {dev.name}"):
                if not _wait(online.wait, timeout, agent.alive):
                    raise EdgeError(f"the agent did not come online; see {work / 'agent.log'}")
                progress(f"agent online; publishing {len(events)} sample event(s)")
                trigger = manifest.triggers[0].topic
                for i, (name, payload) in enumerate(events, start=1):
                    topic = concrete_topic(trigger, thing, i)
                    client.publish(topic, payload, qos=1, timeout=10)
                    progress(f"published events/{name} on {topic}")
                if not _wait(got_output.wait, timeout, agent.alive):
                    raise EdgeError(
                        f"only {len(result.outputs)} of {len(events)} results arrived; "
                        f"see {work / 'agent.log'}"
                    )
                progress(f"{len(result.outputs)} result(s) on the output topic; waiting for sync")
                _wait_synced(manifest, s3, ddb, len(result.outputs), timeout, result)
        finally:
            client.close()
    result.elapsed_s = round(time.monotonic() - began, 2)
    return result


def _wait(wait: Callable[[float], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wait(0.2):
            return True
        if not alive():
            return False
    return False


def _cloud_clients(cloud: LocalCloud) -> tuple[Any, Any]:
    from edge.aws.dynamodb import DynamoDBClient
    from edge.aws.s3 import S3Client
    from edge.aws.session import make_client

    session = cloud.session()
    return (
        S3Client(make_client(session, "s3", endpoint_url=cloud.url)),
        DynamoDBClient(make_client(session, "dynamodb", endpoint_url=cloud.url)),
    )


def _wait_synced(
    manifest: ComponentManifest, s3: Any, ddb: Any, expected: int, timeout: float,
    result: DemoResult,
) -> None:
    """Poll the endpoint until every result is there (a remote store has no event)."""
    deadline = time.monotonic() + timeout
    while True:
        items = ddb.scan_all(manifest.results.dynamodb.table) if manifest.results.dynamodb else []
        keys = []
        if manifest.results.s3:
            keys = s3.list_keys(manifest.results.s3.bucket)
        done_ddb = not manifest.results.dynamodb or len(items) >= expected
        done_s3 = not manifest.results.s3 or len(keys) >= expected
        if done_ddb and done_s3:
            break
        if time.monotonic() > deadline:
            raise EdgeError(
                f"results did not reach the sinks in {timeout:.0f}s "
                f"(DynamoDB {len(items)}/{expected}, S3 {len(keys)}/{expected})"
            )
        time.sleep(0.2)
    result.items = sorted(items, key=lambda i: str(i.get("sk", "")))
    if manifest.results.s3:
        bucket = manifest.results.s3.bucket
        for key in sorted(keys):
            body = s3.get_object(bucket, key)
            try:
                content: Any = json.loads(body)
            except ValueError:
                content = f"<{len(body)} bytes>"
            result.objects.append({"bucket": bucket, "key": key, "content": content})
