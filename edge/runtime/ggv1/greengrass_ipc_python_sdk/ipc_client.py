"""``IPCClient``: posts work for a function to the local daemon over HTTP.

``POST http://<endpoint>:$GG_DAEMON_PORT/2016-11-01/functions/<arn>/invocations``
with the payload as the body and the headers

- ``Authorization``: the worker's token (``AWS_CONTAINER_AUTHORIZATION_TOKEN``),
- ``X-Amz-Client-Context``: the base64 client context,
- ``X-Amz-Invocation-Type``: ``RequestResponse`` or ``Event``.

The daemon answers ``X-Amz-InvocationId`` and, for ``RequestResponse``, the
function's result in the body (``X-Amz-Function-Error`` set to ``Handled`` or
``Unhandled`` when it failed). ``get_work_result`` hands that answer back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from greengrass_common.env_vars import AUTH_TOKEN

log = logging.getLogger(__name__)
log.propagate = False  # these are the runtime's messages, not the function's

HEADER_INVOCATION_ID = "X-Amz-InvocationId"
HEADER_CLIENT_CONTEXT = "X-Amz-Client-Context"
HEADER_AUTH_TOKEN = "Authorization"  # noqa: S105 - a header name
HEADER_INVOCATION_TYPE = "X-Amz-Invocation-Type"
HEADER_FUNCTION_ERR_TYPE = "X-Amz-Function-Error"
IPC_API_VERSION = "2016-11-01"
TIMEOUT = float(os.environ.get("EDGE_GGV1_TIMEOUT", "300"))


class IPCException(Exception):
    pass


class WorkResult:
    def __init__(self, payload: bytes, func_err: str) -> None:
        self.payload = payload
        self.func_err = func_err


class IPCClient:
    def __init__(self, endpoint: str = "localhost", port: int | None = None) -> None:
        self.endpoint = endpoint
        self.port = int(port or os.environ.get("GG_DAEMON_PORT", "8000"))
        self.auth_token = AUTH_TOKEN
        self._results: dict[str, WorkResult] = {}
        self._lock = threading.Lock()

    def _url(self, function_arn: str) -> str:
        return (
            f"http://{self.endpoint}:{self.port}/{IPC_API_VERSION}/functions/"
            f"{quote(function_arn, safe=':$')}/invocations"
        )

    def post_work(
        self,
        function_arn: str,
        payload: Any,
        client_context: Any,
        invocation_type: str = "RequestResponse",
    ) -> str:
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif payload is None:
            payload = b""
        elif hasattr(payload, "read"):
            payload = payload.read()
        if isinstance(client_context, bytes):
            client_context = client_context.decode("ascii")
        url = self._url(function_arn)  # always http://<endpoint>:<port>/...
        request = urllib.request.Request(url, data=bytes(payload), method="POST")  # noqa: S310
        request.add_header(HEADER_AUTH_TOKEN, self.auth_token or "")
        request.add_header(HEADER_CLIENT_CONTEXT, client_context or "")
        request.add_header(HEADER_INVOCATION_TYPE, invocation_type)
        request.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                invocation_id = str(response.headers.get(HEADER_INVOCATION_ID, ""))
                body = response.read()
                func_err = response.headers.get(HEADER_FUNCTION_ERR_TYPE, "") or ""
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise IPCException(f"{exc.code} {detail}") from None
        except OSError as exc:
            reason = f"cannot reach the local daemon on port {self.port}: {exc}"
            raise IPCException(reason) from None
        with self._lock:
            self._results[invocation_id] = WorkResult(body, func_err)
        return invocation_id

    def get_work_result(self, function_arn: str, invocation_id: str) -> WorkResult:
        with self._lock:
            result = self._results.pop(invocation_id, None)
        if result is None:
            raise IPCException(f"no result for invocation {invocation_id!r} of {function_arn}")
        return result
