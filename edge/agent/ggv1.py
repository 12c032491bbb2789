"""The local Greengrass v1 daemon contract, so unmodified v1 functions run here.

A function written for Greengrass v1 calls ``greengrasssdk``, which posts work
over HTTP to the core::

    POST http://localhost:$GG_DAEMON_PORT/2016-11-01/functions/<arn>/invocations
    Authorization: <AWS_CONTAINER_AUTHORIZATION_TOKEN>
    X-Amz-Client-Context: <base64 JSON, {"custom": {"subject": ...}}>
    X-Amz-Invocation-Type: RequestResponse | Event

The target ARN says what the call is:

- ``ROUTER_FUNCTION_ARN`` (``iot-data`` ``publish``): the body is published on the
  local broker at the client context's ``subject``, through the agent's bus;
- ``SHADOW_FUNCTION_ARN`` (``get/update/delete_thing_shadow``): the subject
  ``$aws/things/<thing>/shadow/<op>`` is served from the agent's local shadow
  store (``edge.agent.shadow``), and accepted updates and deltas are published
  on the usual shadow topics;
- a component's ARN (``lambda`` ``invoke``, the function name being the
  component's name): ``Event`` records a durable intake row for that component
  and answers 202; ``RequestResponse`` does the same and waits for the result.

Only loopback connections and known tokens (one per component) are served. The
Python side of the contract lives in ``edge/runtime/ggv1`` and is put on every
Python worker's ``PYTHONPATH``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from edge.agent.shadow import ShadowError, ShadowStore
from edge.agent.worker import GGV1_PATH, Outcome

log = logging.getLogger(__name__)

API = "2016-11-01"
ROUTER_ARN = "arn:aws:lambda:local:000000000000:function:GGRouter"
SHADOW_ARN = "arn:aws:lambda:local:000000000000:function:GGShadowService"
SECRETS_ARN = "arn:aws:lambda:local:000000000000:function:GGSecretManager"
_PATH = re.compile(rf"/{API}/functions/(?P<arn>[^/]+)/invocations")
_FUNCTION = re.compile(r"arn:[^:]+:lambda:[^:]*:[^:]*:function:(?P<name>[^:]+)(?::[^:]+)?")
_SHADOW_SUBJECT = re.compile(r"\$aws/things/(?P<thing>[^/]+)/shadow/(?P<op>get|update|delete)")
MAX_BODY = 6 << 20  # Lambda's synchronous payload limit

# (target component, subject topic, payload, wait seconds or None for Event)
#   -> a future outcome (RequestResponse), None (Event, recorded), or raises KeyError.
Invoker = Callable[[str, str, bytes, float | None], "Future[Outcome] | None"]
Publisher = Callable[[str, bytes], None]


class GGv1Daemon:
    """The HTTP side of the contract, served on ``127.0.0.1:port`` by a thread."""

    def __init__(
        self,
        *,
        publish: Publisher,
        invoke: Invoker,
        shadows: ShadowStore,
        port: int = 0,
        invoke_timeout: float = 300.0,
    ) -> None:
        self._publish = publish
        self._invoke = invoke
        self.shadows = shadows
        self._invoke_timeout = invoke_timeout
        self._tokens: dict[str, str] = {}  # token -> component
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ggv1-daemon", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def worker_environment(self, component: str, function_arn: str) -> dict[str, str]:
        """The variables ``greengrasssdk`` reads, for one component's workers."""
        with self._lock:
            token = next((t for t, c in self._tokens.items() if c == component), None)
            if token is None:
                token = secrets.token_urlsafe(24)
                self._tokens[token] = component
        return {
            "GG_DAEMON_PORT": str(self.port),
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "MY_FUNCTION_ARN": function_arn,
            "ROUTER_FUNCTION_ARN": ROUTER_ARN,
            "SHADOW_FUNCTION_ARN": SHADOW_ARN,
            "SECRETS_MANAGER_FUNCTION_ARN": SECRETS_ARN,
        }

    @staticmethod
    def python_path() -> tuple[str, ...]:
        return (str(GGV1_PATH),)

    def caller(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    # -- requests ----------------------------------------------------------------------
    def handle(
        self, caller: str, arn: str, subject: str, invocation_type: str, body: bytes
    ) -> tuple[int, bytes, str]:
        """One call: (HTTP status, response body, X-Amz-Function-Error)."""
        if arn == ROUTER_ARN:
            if not subject:
                return _error(HTTPStatus.BAD_REQUEST, "publish needs a subject (topic)")
            self._publish(subject, body)
            return HTTPStatus.OK if invocation_type != "Event" else HTTPStatus.ACCEPTED, b"", ""
        if arn == SHADOW_ARN:
            return self._shadow(subject, body)
        if arn == SECRETS_ARN:
            return _error(HTTPStatus.NOT_IMPLEMENTED, "secrets manager is not available on edgectl")
        match = _FUNCTION.fullmatch(arn)
        if match is None:
            return _error(HTTPStatus.BAD_REQUEST, f"not a function ARN: {arn!r}")
        target = match["name"]
        wait = None if invocation_type == "Event" else self._invoke_timeout
        try:
            future = self._invoke(target, subject or f"$edge/invoke/{target}", body, wait)
        except KeyError:
            return _error(HTTPStatus.NOT_FOUND, f"function {target!r} is not deployed here")
        if future is None:
            return HTTPStatus.ACCEPTED, b"", ""
        try:
            outcome = future.result(self._invoke_timeout)
        except FutureTimeout:
            return _error(HTTPStatus.GATEWAY_TIMEOUT, f"{target} did not answer in time")
        log.info("v1 invoke %s -> %s: %s", caller, target, "ok" if outcome.ok else "error",
                 extra={"component": caller})
        if outcome.ok:
            return HTTPStatus.OK, outcome.body, ""
        error = dict(outcome.error or {})
        handled = not str(error.get("errorType", "")).startswith("Runtime.")
        payload = json.dumps(error, separators=(",", ":")).encode()
        return HTTPStatus.OK, payload, "Handled" if handled else "Unhandled"

    def _shadow(self, subject: str, body: bytes) -> tuple[int, bytes, str]:
        match = _SHADOW_SUBJECT.fullmatch(subject)
        if match is None:
            return _error(HTTPStatus.BAD_REQUEST, f"not a shadow topic: {subject!r}")
        thing, op = match["thing"], match["op"]
        try:
            if op == "get":
                doc = self.shadows.get(thing)
            elif op == "delete":
                doc = self.shadows.delete(thing)
            else:
                try:
                    request = json.loads(body or b"null")
                except ValueError:
                    raise ShadowError(400, "Payload contains invalid json") from None
                doc, delta = self.shadows.update(thing, request)
                base = f"$aws/things/{thing}/shadow/update"
                self._publish_quietly(f"{base}/accepted", doc)
                if delta is not None:
                    self._publish_quietly(f"{base}/delta", delta)
        except ShadowError as exc:
            doc = exc.document()
        return HTTPStatus.OK, json.dumps(doc, separators=(",", ":")).encode(), ""

    def _publish_quietly(self, topic: str, doc: dict[str, Any]) -> None:
        try:
            self._publish(topic, json.dumps(doc, separators=(",", ":")).encode())
        except Exception as exc:  # the shadow is updated; the notification is best effort
            log.warning("shadow notification on %s not published: %s", topic, exc)


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"message": message}).encode(), "Unhandled"


def _subject(header: str | None) -> str:
    if not header:
        return ""
    try:
        doc = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        return ""
    custom = doc.get("custom") if isinstance(doc, dict) else None
    subject = custom.get("subject") if isinstance(custom, dict) else None
    return subject if isinstance(subject, str) else ""


def _handler_for(daemon: GGv1Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("ggv1 %s", format % args)

        def _reply(self, status: int, body: bytes, func_err: str = "") -> None:
            self.send_response(status)
            self.send_header("X-Amz-InvocationId", str(uuid.uuid4()))
            if func_err:
                self.send_header("X-Amz-Function-Error", func_err)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - the http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(*_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload too large"))
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            caller = daemon.caller(self.headers.get("Authorization") or "")
            if caller is None:
                self._reply(*_error(HTTPStatus.FORBIDDEN, "unknown authorization token"))
                return
            match = _PATH.fullmatch(self.path.split("?", 1)[0])
            if match is None:
                self._reply(*_error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}"))
                return
            arn = unquote(match["arn"])
            subject = _subject(self.headers.get("X-Amz-Client-Context"))
            kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
            try:
                self._reply(*daemon.handle(caller, arn, subject, kind, body))
            except Exception as exc:  # one failed call never takes the daemon down
                log.warning("v1 call from %s to %s failed: %s", caller, arn, exc,
                            extra={"component": caller})
                self._reply(*_error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)))

        def do_GET(self) -> None:  # noqa: N802
            self._reply(*_error(HTTPStatus.METHOD_NOT_ALLOWED, "POST only"))

    return Handler
