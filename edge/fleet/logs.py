"""The workstation side of ``edgectl logs``: ask a device's agent for its function logs.

The protocol is ``edge.agent.logserve``'s: one request on
``edge/<thing>/logs/request``, replies on a topic of our own under
``edgectl/logs/``; a follow session is renewed every ``LEASE / 3`` seconds
and cancelled on exit, so the agent never tails for a requester that left.
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edge.errors import BrokerError, EdgeError
from edge.mqtt.bus import Bus, Message

SCHEMA = 1
LEASE = 30.0


def request_topic(thing: str) -> str:
    return f"edge/{thing}/logs/request"


@dataclass(frozen=True)
class LogQuery:
    thing: str
    component: str | None = None
    since: float | None = None
    limit: int = 1000
    follow: bool = False


class LogError(EdgeError):
    pass


def fetch_logs(
    bus: Bus,
    query: LogQuery,
    *,
    timeout: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[dict[str, Any]]:
    """Yield log lines (dicts with ts, component, request_id, text), oldest first; with
    ``follow`` keep yielding until the caller stops iterating (Ctrl-C)."""
    ident = uuid.uuid4().hex
    reply_to = f"edgectl/logs/{ident}"
    replies: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_reply(message: Message) -> None:
        try:
            data = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("id") == ident:
            replies.put(data)

    bus.subscribe(reply_to, on_reply, qos=1)
    request = {
        "schema": SCHEMA, "id": ident, "reply_to": reply_to, "component": query.component,
        "since": query.since, "limit": query.limit, "follow": query.follow,
    }  # fmt: skip
    bus.publish(request_topic(query.thing), json.dumps(request).encode(), qos=1, timeout=timeout)
    first = True
    renew_at = clock() + LEASE / 3
    try:
        while True:
            wait = timeout if first else max(0.1, renew_at - clock())
            try:
                reply = replies.get(timeout=wait)
            except queue.Empty:
                if first:
                    raise BrokerError(
                        f"no answer from {query.thing} within {timeout:g}s "
                        "(is its agent online? see `edgectl fleet status`)"
                    ) from None
                reply = None
            if reply is not None:
                first = False
                if reply.get("error"):
                    raise LogError(f"{query.thing}: {reply['error']}")
                for line in reply.get("lines") or []:
                    if isinstance(line, dict):
                        yield line
                if reply.get("done"):
                    return
            if query.follow and clock() >= renew_at:
                renew = {"schema": SCHEMA, "id": ident, "renew": True}
                bus.publish(request_topic(query.thing), json.dumps(renew).encode(), qos=1)
                renew_at = clock() + LEASE / 3
    finally:
        if query.follow:
            cancel = {"schema": SCHEMA, "id": ident, "cancel": True}
            with contextlib.suppress(EdgeError):
                bus.publish(request_topic(query.thing), json.dumps(cancel).encode(), timeout=2)
        bus.unsubscribe(reply_to)
