"""The Lambda-style context object handed to a Python handler.

It mirrors the attributes of AWS Lambda's Python context (and what Greengrass
v1 Lambda functions received) so existing functions run unchanged. The clock
is injected so remaining-time logic can be tested deterministically.

``invoke_self(event)`` is ours: it durably queues a continuation of the same
component (the pattern "invoke yourself with what is left" for work that does
not fit in one timeout). It returns only once the agent has recorded it.
"""

from __future__ import annotations

import _thread
import functools
import json
import time
from collections.abc import Callable, Mapping

TYPE_CHECKING = False  # ``typing`` and ``threading`` are not part of a worker's start
if TYPE_CHECKING:
    from typing import Any

    # (op, header fields, body) -> (reply header, reply body): a call to the agent.
    AgentCall = Callable[[str, dict[str, Any], bytes], tuple[dict[str, Any], bytes]]


# One call to the agent at a time, whichever thread of a handler makes it: they share
# the worker's one channel (and a lock made per invocation costs every invocation).
_CALLS = _thread.allocate_lock()


class InvokeSelfError(Exception):
    """The agent could not record a continuation; the invocation should fail."""


# Plain classes, not dataclasses: ``dataclasses`` imports ``inspect`` (and with it
# ``ast`` and ``dis``), a sixth of a worker's cold start for two small records.
class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __init__(
        self,
        custom: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        self.custom = {} if custom is None else custom
        self.env = {} if env is None else env
        self.client = client

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientContext) and (
            (self.custom, self.env, self.client) == (other.custom, other.env, other.client)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as Lambda's

    def __repr__(self) -> str:
        return f"ClientContext(custom={self.custom!r}, env={self.env!r}, client={self.client!r})"


class Identity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(
        self, cognito_identity_id: str | None = None, cognito_identity_pool_id: str | None = None
    ) -> None:
        self.cognito_identity_id = cognito_identity_id
        self.cognito_identity_pool_id = cognito_identity_pool_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and (
            (self.cognito_identity_id, self.cognito_identity_pool_id)
            == (other.cognito_identity_id, other.cognito_identity_pool_id)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Identity(cognito_identity_id={self.cognito_identity_id!r}, "
                f"cognito_identity_pool_id={self.cognito_identity_pool_id!r})")


class LambdaContext:
    def __init__(
        self,
        *,
        function_name: str,
        function_version: str,
        aws_request_id: str,
        deadline: float,
        memory_limit_in_mb: int = 128,
        invoked_function_arn: str = "",
        log_group_name: str = "",
        log_stream_name: str = "",
        subject: str = "",
        custom: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        call: AgentCall | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.aws_request_id = aws_request_id
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self._subject = subject
        self._custom = custom
        self._deadline = deadline
        self._clock = clock
        self._call = call
        self._continuations = 0

    @classmethod
    def maker(
        cls, **fixed: Any
    ) -> Callable[[str, float, str], LambdaContext]:
        """A function that makes one invocation's context from what changes per
        invocation (request id, deadline, subject); ``fixed`` is the rest, as for
        ``__init__``. Each context is a copy of one template: a worker makes one
        per invocation, and a dozen keyword arguments cost twice as much."""
        template = vars(cls(aws_request_id="", deadline=0.0, **fixed))
        new = object.__new__

        def make(request_id: str, deadline: float, subject: str) -> LambdaContext:
            context = new(cls)
            state = template.copy()
            state["aws_request_id"] = request_id
            state["_deadline"] = deadline
            state["_subject"] = subject
            context.__dict__ = state
            return context

        return make

    # ``identity`` and ``client_context`` are built on first use: a context is made
    # for every invocation and most handlers never read them (two records and two
    # dicts are a measurable part of a warm invocation).
    @functools.cached_property
    def identity(self) -> Identity:
        return Identity()

    @functools.cached_property
    def client_context(self) -> ClientContext:
        return ClientContext(custom={"subject": self._subject, **(self._custom or {})})

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))

    def invoke_self(self, event: Any) -> None:
        """Durably queue ``event`` as a new invocation of this component.

        ``event`` is JSON-serialisable (or ``bytes``, passed as is). A re-run of
        this invocation (after a crash) makes the same calls in the same order;
        the agent keeps one continuation per call, the latest one's event.
        """
        if self._call is None:
            raise InvokeSelfError("invoke_self is only available inside the edge agent")
        if isinstance(event, bytes | bytearray | memoryview):
            body, encoding = bytes(event), "binary"
        else:
            body, encoding = json.dumps(event, separators=(",", ":")).encode(), "json"
        with _CALLS:
            self._continuations += 1
            reply, _ = self._call(
                "invoke_self", {"index": self._continuations, "encoding": encoding}, body
            )
        if not reply.get("ok"):
            raise InvokeSelfError(f"continuation not recorded: {reply.get('error')}")

    def __repr__(self) -> str:
        return (
            f"LambdaContext(function_name={self.function_name!r}, "
            f"aws_request_id={self.aws_request_id!r})"
        )
