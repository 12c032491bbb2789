"""``edgectl invoke``: one invocation through the same worker runtime the agent uses.

Like ``sam local invoke -e event.json``, but the handler runs in the agent's
own worker process with the same context, environment and error records, so
what passes here behaves the same on the device.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.agent.worker import Outcome, Worker, WorkerDied, worker_spec
from edge.errors import EventError, UsageError
from edge.model.component import ComponentManifest, load_component
from edge.model.topics import render


@dataclass(frozen=True)
class Invocation:
    component: str
    version: str
    request_id: str
    topic: str
    outcome: Outcome
    cold_start_ms: float

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "component": self.component,
            "version": self.version,
            "request_id": self.request_id,
            "topic": self.topic,
            "ok": self.outcome.ok,
            "duration_ms": self.outcome.duration_ms,
            "cold_start_ms": self.cold_start_ms,
        }
        if self.outcome.ok:
            doc["content_type"] = self.outcome.content_type
            if self.outcome.content_type == "application/json":
                doc["result"] = json.loads(self.outcome.body)
            elif self.outcome.content_type == "none":
                doc["result"] = None
            else:
                doc["result_bytes"] = len(self.outcome.body)
        else:
            doc["error"] = dict(self.outcome.error or {})
        return doc


def default_topic(manifest: ComponentManifest, thing: str) -> str:
    if not manifest.triggers:
        return f"edge/{thing}/{manifest.name}/invoke"
    topic = render(manifest.triggers[0].topic, thing=thing, component=manifest.name)
    return "/".join(
        {"+": "local", "#": "local"}.get(level, level) for level in topic.split("/")
    )


def read_event(path: Path, encoding: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: event file not found") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read event file: {exc.strerror}") from None
    if encoding == "json":
        try:
            json.loads(data)
        except ValueError as exc:
            raise EventError(f"not JSON: {exc}", source=str(path)) from None
    return data


def invoke(
    folder: Path,
    event: Path | None,
    *,
    topic: str | None = None,
    thing: str = "local",
    timeout: float | None = None,
    on_log: Callable[[str], None] | None = None,
) -> Invocation:
    manifest = load_component(folder)
    topic = topic or default_topic(manifest, thing)
    encoding = "json"
    for trig in manifest.triggers:
        from edge.model.topics import matches

        if matches(render(trig.topic, thing=thing, component=manifest.name), topic):
            encoding = trig.encoding
            break
    payload = read_event(event, encoding) if event is not None else b"{}"
    limits = manifest.limits
    spec = worker_spec(manifest, thing=thing, device=thing)
    request_id = str(uuid.uuid4())
    worker = Worker(spec, on_log=on_log)
    started = time.monotonic()
    try:
        worker.start()
        cold = (time.monotonic() - started) * 1000
        outcome = worker.invoke(
            request_id=request_id,
            topic=topic,
            payload=payload,
            encoding=encoding,
            timeout=timeout or limits.timeout,
        )
    except WorkerDied as died:
        cold = (time.monotonic() - started) * 1000
        outcome = died.outcome
    finally:
        worker.stop()
    return Invocation(manifest.name, manifest.version, request_id, topic, outcome, round(cold, 1))
