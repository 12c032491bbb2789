"""The Lambda-style context object handed to a Python handler.

It mirrors the attributes of AWS Lambda's Python context (and what Greengrass
v1 Lambda functions received) so existing functions run unchanged. The clock
is injected so remaining-time logic can be tested deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientContext:
    custom: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    client: Any = None


@dataclass
class Identity:
    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


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
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.aws_request_id = aws_request_id
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.identity = Identity()
        self.client_context = ClientContext(custom={"subject": subject, **(custom or {})})
        self._deadline = deadline
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(function_name={self.function_name!r}, "
            f"aws_request_id={self.aws_request_id!r})"
        )
