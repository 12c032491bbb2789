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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, UsageError
from edge.local.broker import LocalBroker
from edge.local.cloud import LocalCloud
from edge.model.component import ComponentManifest, load_component
from edge.model.device import load_device
from edge.model.topics import render
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
    component: str | Sequence[str] = "components/hello",
    device: str = "devices/local.yaml",
    timeout: float = 60.0,
    progress: Progress = lambda _msg: None,
    keep_dir: Path | None = None,
) -> DemoResult:
    """Run the demo for one component; ``run_demos`` runs several on one agent."""
    return run_demos(
        root, [component] if isinstance(component, str) else list(component), device=device,
        timeout=timeout, progress=progress, keep_dir=keep_dir,
    )[0]


def run_demos(
    root: Path,
    components: Sequence[str],
    *,
    device: str = "devices/local.yaml",
    timeout: float = 60.0,
    progress: Progress = lambda _msg: None,
    keep_dir: Path | None = None,
) -> list[DemoResult]:
    """Broker, local cloud and one agent running every component in ``components``; each
    component's sample events are published on its first trigger and its results awaited."""
    began = time.monotonic()
    manifests = [load_component(root / c) for c in components]
    dev = load_device(root / device)
    events = {m.name: sample_events(m) for m in manifests}
    for manifest in manifests:
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
        for manifest in manifests:
            if manifest.results.s3:
                s3.ensure_bucket(manifest.results.s3.bucket, cloud.region)
                progress(f"created bucket {manifest.results.s3.bucket}")
            if manifest.results.dynamodb:
                d = manifest.results.dynamodb
                ddb.ensure_table(d.table, d.partition_key, d.sort_key)
                progress(f"created table {d.table}")

        results = {
            m.name: DemoResult(component=m.name, published=len(events[m.name]), broker=broker.url)
            for m in manifests
        }
        cond = threading.Condition()
        status: dict[str, Any] = {}
        docs = [0]  # status documents seen
        online = threading.Event()
        client = PahoBus(BrokerAddress.parse(broker.url))
        client.connect(timeout=10)

        def on_status(msg: Message) -> None:
            with contextlib.suppress(ValueError), cond:
                status.clear()
                status.update(json.loads(msg.payload))
                docs[0] += 1
                cond.notify_all()
            if status.get("state") == "online":
                online.set()

        def collector(result: DemoResult, errors_topic: str) -> Callable[[Message], None]:
            def on_output(msg: Message) -> None:
                if dict(msg.properties).get("component") != result.component:
                    return  # a sample event the demo published on this topic, not a result
                with cond:
                    target = result.errors if msg.topic == errors_topic else result.outputs
                    try:
                        body: Any = json.loads(msg.payload)
                    except ValueError:
                        body = f"<{len(msg.payload)} bytes>"
                    target.append({"topic": msg.topic, "payload": body, **dict(msg.properties)})
                    cond.notify_all()

            return on_output

        thing = dev.thing_name
        client.subscribe(f"edge/{thing}/status", on_status)
        for manifest in manifests:
            errors_topic = render(manifest.errors_topic, thing=thing, component=manifest.name)
            handler = collector(results[manifest.name], errors_topic)
            for out in manifest.outputs:
                client.subscribe(render(out.topic, thing=thing, component=manifest.name), handler)
            client.subscribe(errors_topic, handler)
        env = {**os.environ, **cloud.environment()}
        args = ["--config", str(root / device), "--data-dir", str(work / "agent")]
        for manifest in manifests:
            args += ["--component", str(manifest.path)]
        agent = AgentProcess(
            [*args, "--broker", broker.url, "--heartbeat", "1"], env, work / "agent.log"
        )
        try:
            with _started(agent, progress, f"device agent for {dev.name}"):
                if not _wait(online.wait, timeout, agent.alive):
                    raise EdgeError(f"the agent did not come online; see {work / 'agent.log'}")
                total = sum(len(e) for e in events.values())
                progress(f"agent online; publishing {total} sample event(s)")
                for manifest in manifests:
                    trigger = manifest.triggers[0].topic
                    for i, (name, payload) in enumerate(events[manifest.name], start=1):
                        topic = concrete_topic(trigger, thing, i)
                        client.publish(topic, payload, qos=1, timeout=10)
                        progress(f"published {manifest.path.name}/events/{name} on {topic}")
                if not _wait_all_ran(cond, results, status, docs, timeout, agent.alive):
                    got = {n: len(r.outputs) + len(r.errors) for n, r in results.items()}
                    raise EdgeError(
                        f"not every sample event ran (results so far: {got}); "
                        f"see {work / 'agent.log'}"
                    )
                for manifest in manifests:
                    result = results[manifest.name]
                    progress(
                        f"{manifest.name}: {len(result.outputs)} result(s) on the output topic; "
                        "waiting for sync"
                    )
                    _wait_synced(manifest, s3, ddb, len(result.outputs), timeout, result)
        finally:
            client.close()
    elapsed = round(time.monotonic() - began, 2)
    for result in results.values():
        result.elapsed_s = elapsed
    return [results[m.name] for m in manifests]


def _wait_all_ran(
    cond: threading.Condition,
    results: dict[str, DemoResult],
    status: dict[str, Any],
    docs: list[int],
    timeout: float,
    alive: Callable[[], bool],
) -> bool:
    """True once every published event has run.

    Fast path: each component answered every event (an output or an error
    record). A handler may also return nothing (no message at all), so the
    agent's own count is the other witness: once its status document shows
    every component with at least as many invocations as events and an empty
    queue, the next status document (published on the same connection after
    those invocations' outputs) closes the wait.
    """
    deadline = time.monotonic() + timeout
    settled_at: int | None = None

    def done() -> bool:
        nonlocal settled_at
        if all(len(r.outputs) + len(r.errors) >= r.published for r in results.values()):
            return True
        comps = status.get("components") or {}
        ran = all(
            (comps.get(n) or {}).get("invocations", 0) >= r.published
            and (comps.get(n) or {}).get("queue_depth", 1) == 0
            for n, r in results.items()
        )
        if not ran:
            settled_at = None
            return False
        if settled_at is None:
            settled_at = docs[0]
        return docs[0] > settled_at

    with cond:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not alive():
                return False
            cond.wait(min(remaining, 0.5))
    return True


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


def _records_in(key: str, body: bytes) -> list[Any]:
    """The results one S3 object holds: a batch of JSON lines, or one result."""
    if key.endswith(".ndjson"):
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    try:
        return [json.loads(body)]
    except ValueError:
        return [f"<{len(body)} bytes>"]


def _wait_synced(
    manifest: ComponentManifest, s3: Any, ddb: Any, expected: int, timeout: float,
    result: DemoResult,
) -> None:
    """Poll the endpoint until every result is there (a remote store has no event)."""
    deadline = time.monotonic() + timeout
    bodies: dict[str, bytes] = {}  # S3 key -> object (keys are deterministic, objects final)
    while True:
        items = ddb.scan_all(manifest.results.dynamodb.table) if manifest.results.dynamodb else []
        keys = []
        if manifest.results.s3:
            keys = s3.list_keys(manifest.results.s3.bucket)
            for key in keys:
                if key not in bodies:
                    bodies[key] = s3.get_object(manifest.results.s3.bucket, key)
        # Results close together share one newline-delimited object: count records.
        in_s3 = sum(len(_records_in(key, bodies[key])) for key in keys)
        done_ddb = not manifest.results.dynamodb or len(items) >= expected
        done_s3 = not manifest.results.s3 or in_s3 >= expected
        if done_ddb and done_s3:
            break
        if time.monotonic() > deadline:
            raise EdgeError(
                f"results did not reach the sinks in {timeout:.0f}s "
                f"(DynamoDB {len(items)}/{expected}, S3 {in_s3}/{expected})"
            )
        time.sleep(0.2)
    result.items = [
        {k: f"<{len(v)} bytes>" if isinstance(v, bytes | bytearray) else v for k, v in i.items()}
        for i in sorted(items, key=lambda i: str(i.get("sk", "")))
    ]
    if manifest.results.s3:
        bucket = manifest.results.s3.bucket
        for key in sorted(keys):
            for content in _records_in(key, bodies[key]):
                result.objects.append({"bucket": bucket, "key": key, "content": content})
