"""Run one handler invocation in-process or in the real worker runtime."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.errors import UsageError
from edge.model.component import ComponentManifest, load_component
from edge.runtime.context import LambdaContext
from edge.testing.events import MqttEvent

Handler = Callable[[Any, Any], Any]


class FakeClock:
    """A monotonic clock that moves only when told: ``clock.advance(2.5)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Invocation:
    """One invocation's outcome, the same shape in-process and in a worker."""

    ok: bool
    request_id: str
    topic: str
    value: Any = None  # decoded JSON, bytes, or None
    error: Mapping[str, Any] | None = None
    content_type: str = "none"
    duration_ms: float = 0.0
    logs: list[str] = field(default_factory=list)

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else str(self.error.get("errorType"))


def make_context(
    manifest: ComponentManifest,
    *,
    topic: str,
    request_id: str | None = None,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    thing: str = "local",
) -> LambdaContext:
    """The Lambda context the worker would hand the handler, on ``clock``."""
    from edge.agent.worker import function_arn

    return LambdaContext(
        function_name=manifest.name,
        function_version=manifest.version,
        aws_request_id=request_id or str(uuid.uuid4()),
        deadline=clock() + (timeout if timeout is not None else manifest.limits.timeout),
        memory_limit_in_mb=manifest.limits.memory_mb,
        invoked_function_arn=function_arn(manifest.name),
        log_group_name=f"/edge/{thing}/{manifest.name}",
        log_stream_name=f"{thing}/{manifest.version}",
        subject=topic,
        clock=clock,
    )


def load_handler(folder: Path | str, handler: str) -> Handler:
    """Import ``handler`` (``module.function``) from ``folder`` without leaving its
    modules in ``sys.modules``: components that all have an ``app.py`` do not clash,
    and a second call loads the code afresh (as a reloaded worker would)."""
    root = str(Path(folder).resolve())
    module_name, _, func_name = handler.rpartition(".")
    top = module_name.split(".")[0]
    shadowed = {
        name: mod for name, mod in sys.modules.items() if name == top or name.startswith(top + ".")
    }
    for name in shadowed:
        del sys.modules[name]
    before = set(sys.modules)
    sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(root)
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None) or ""
            if name == top or name.startswith(top + ".") or path.startswith(root + os.sep):
                del sys.modules[name]
        sys.modules.update(shadowed)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UsageError(f"{root}: handler {handler!r}: module has no function {func_name!r}")
    return func  # type: ignore[no-any-return]


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _environment(
    manifest: ComponentManifest, thing: str, state_dir: Path | None, extra: Mapping[str, str]
) -> dict[str, str]:
    from edge.agent.worker import lambda_environment

    env = {**lambda_environment(manifest, thing=thing, device=thing), **manifest.environment}
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        env["EDGE_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def run_handler(
    component: Path | str | ComponentManifest,
    event: MqttEvent,
    *,
    mode: str = "process",
    clock: Callable[[], float] | None = None,
    timeout: float | None = None,
    request_id: str | None = None,
    thing: str = "local",
    state_dir: Path | None = None,
    environment: Mapping[str, str] | None = None,
    handler: Handler | None = None,
) -> Invocation:
    """Run ``component``'s handler once on ``event``.

    ``mode="process"`` calls it in this interpreter (Python only); ``"worker"``
    runs it in the real worker runtime. ``state_dir`` becomes ``EDGE_STATE_DIR``
    (the agent's persistent per-component folder); ``request_id`` fixes the
    ``aws_request_id`` (the agent derives it from the intake sequence number, so a
    re-run record gets the same one). ``handler`` reuses a ``load_handler`` result.
    """
    manifest = component if isinstance(component, ComponentManifest) else load_component(
        component
    )
    rid = request_id or str(uuid.uuid4())
    env = _environment(manifest, thing, state_dir, environment or {})
    if mode == "worker":
        return _run_worker(manifest, event, rid, env, timeout)
    if mode != "process":
        raise UsageError(f"mode: {mode!r} is not 'process' or 'worker'")
    if manifest.language != "python":
        raise UsageError(
            f"{manifest.source}: runtime {manifest.runtime}: in-process runs are Python only; "
            "use mode='worker'"
        )
    return _run_in_process(manifest, event, rid, env, timeout, clock, thing, handler)


def _run_in_process(
    manifest: ComponentManifest,
    event: MqttEvent,
    request_id: str,
    env: Mapping[str, str],
    timeout: float | None,
    clock: Callable[[], float] | None,
    thing: str,
    handler: Handler | None,
) -> Invocation:
    # The worker's own marshalling and error records, so both modes agree.
    from edge.runtime.bootstrap import _encode_result, error_record

    started = time.monotonic()
    with _environ(env):
        func = handler or load_handler(manifest.path, manifest.handler)
        context = make_context(
            manifest, topic=event.topic, request_id=request_id, timeout=timeout,
            clock=clock or time.monotonic, thing=thing,
        )
        try:
            value = func(event.decoded(), context)
        except Exception as exc:
            return Invocation(False, request_id, event.topic, error=error_record(exc),
                              duration_ms=_ms(started))
        try:
            content_type, body = _encode_result(value)
        except (TypeError, ValueError) as exc:
            err = error_record(exc, "Runtime.MarshalError")
            err["errorMessage"] = f"Unable to marshal response: {exc}"
            return Invocation(False, request_id, event.topic, error=err,
                              duration_ms=_ms(started))
    return Invocation(
        True, request_id, event.topic, value=_decode(content_type, body),
        content_type=content_type, duration_ms=_ms(started),
    )


def _run_worker(
    manifest: ComponentManifest,
    event: MqttEvent,
    request_id: str,
    env: Mapping[str, str],
    timeout: float | None,
) -> Invocation:
    from edge.agent.worker import Worker, WorkerDied, worker_spec

    logs: list[str] = []
    # ``env`` already holds the Lambda environment, the manifest's and the test's own,
    # in that order (the test's wins), so it replaces the spec's environment whole.
    spec = replace(
        worker_spec(manifest, thing=env["AWS_IOT_THING_NAME"], device=env["EDGE_DEVICE"]),
        environment=dict(env),
    )
    worker = Worker(spec, on_log=logs.append)
    try:
        worker.start()
        outcome = worker.invoke(
            request_id=request_id, topic=event.topic, payload=event.payload,
            encoding=event.encoding, timeout=timeout or manifest.limits.timeout,
        )
    except WorkerDied as died:
        outcome = died.outcome
    finally:
        worker.stop()
    if not outcome.ok:
        return Invocation(False, request_id, event.topic, error=outcome.error,
                          duration_ms=outcome.duration_ms, logs=logs)
    return Invocation(
        True, request_id, event.topic, value=_decode(outcome.content_type, outcome.body),
        content_type=outcome.content_type, duration_ms=outcome.duration_ms, logs=logs,
    )


def _decode(content_type: str, body: bytes) -> Any:
    if content_type == "none":
        return None
    if content_type == "application/json":
        return json.loads(body)
    return body


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
