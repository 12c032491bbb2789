"""The ``Bus`` over Greengrass IPC, for the function host inside a Greengrass nucleus.

Inside Greengrass the host does not connect to a broker: local pub/sub goes
through the nucleus's IPC socket (awsiotsdk's ``GreengrassCoreIPCClientV2``),
which also enforces the recipe's ``accessControl``. This adapter is kept thin
so the rest of the host cannot tell which bus it has:

* ``subscribe`` maps to ``subscribe_to_topic`` with a stream handler that turns
  each ``binary_message`` (or ``json_message``) into a ``Message``;
* ``publish`` maps to ``publish_to_topic`` with a binary message;
* ``ack`` is a no-op: IPC delivers in-process with no manual acknowledgement,
  so intake durability comes from the agent recording the message before it
  acks, as on a broker, and redelivery is not available;
* exceptions from user handlers are caught and logged, never allowed to close
  the IPC stream.

awsiotsdk is imported lazily, only when no client is injected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from edge.errors import BrokerError
from edge.mqtt.bus import ConnectionHandler, Message, MessageHandler

log = logging.getLogger(__name__)

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
SVCUID_ENV = "SVCUID"


def running_in_greengrass(env: Mapping[str, str]) -> bool:
    """True when the nucleus started us: it sets the IPC socket path and our service uid."""
    return bool(env.get(SOCKET_ENV)) and bool(env.get(SVCUID_ENV))


def _default_client() -> Any:
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    return GreengrassCoreIPCClientV2()


class IpcBus:
    """``Bus`` implementation over a ``GreengrassCoreIPCClientV2`` (or a fake with its methods)."""

    def __init__(self, client: Any = None, *, factory: Callable[[], Any] = _default_client) -> None:
        self._client = client
        self._factory = factory
        self._operations: dict[str, Any] = {}
        self._connection_handlers: list[ConnectionHandler] = []

    def connect(self, timeout: float = 10.0) -> None:
        if self._client is None:
            try:
                self._client = self._factory()
            except Exception as exc:
                raise BrokerError(f"Greengrass IPC: cannot connect to the nucleus: {exc}") from exc
        for handler in self._connection_handlers:
            handler(True)

    def _require(self) -> Any:
        if self._client is None:
            raise BrokerError("Greengrass IPC: publish/subscribe before connect()")
        return self._client

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        client = self._require()

        def on_event(event: Any) -> None:
            try:
                message = _to_message(event, qos)
                if message is not None:
                    handler(message)
            except Exception:
                log.exception("handler for %s raised; message dropped", topic_filter)

        def on_error(error: Exception) -> bool:
            log.error("Greengrass IPC stream for %s failed: %s", topic_filter, error)
            return False  # keep the stream open

        try:
            _, operation = client.subscribe_to_topic(
                topic=topic_filter, on_stream_event=on_event, on_stream_error=on_error
            )
        except Exception as exc:
            raise BrokerError(f"Greengrass IPC: subscribe to {topic_filter!r}: {exc}") from exc
        self._operations[topic_filter] = operation

    def unsubscribe(self, topic_filter: str) -> None:
        operation = self._operations.pop(topic_filter, None)
        if operation is not None:
            operation.close()

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Mapping[str, str] | None = None,
        timeout: float | None = None,
        expiry: int | None = None,  # Greengrass IPC carries no expiry: sent without it
    ) -> None:
        client = self._require()
        message = _binary_message(payload)
        try:
            client.publish_to_topic(topic=topic, publish_message=message)
        except Exception as exc:
            raise BrokerError(f"Greengrass IPC: publish to {topic!r}: {exc}") from exc

    def ack(self, message: Message) -> None:
        return None

    def on_connection_change(self, handler: ConnectionHandler) -> None:
        self._connection_handlers.append(handler)

    def close(self) -> None:
        for topic in list(self._operations):
            self.unsubscribe(topic)
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()
        for handler in self._connection_handlers:
            handler(False)


def _binary_message(payload: bytes) -> Any:
    """A ``PublishMessage`` with a binary body; a plain dict when awsiotsdk is absent (fakes)."""
    try:
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage
    except ImportError:
        return {"binary_message": {"message": payload}}
    return PublishMessage(binary_message=BinaryMessage(message=payload))


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _to_message(event: Any, qos: int) -> Message | None:
    """A ``SubscriptionResponseMessage`` (binary or JSON) as a ``Message``."""
    binary = _get(event, "binary_message")
    if binary is not None:
        context = _get(binary, "context")
        topic = _get(context, "topic") if context is not None else None
        return Message(
            topic=str(topic or ""), payload=bytes(_get(binary, "message") or b""), qos=qos
        )
    structured = _get(event, "json_message")
    if structured is not None:
        context = _get(structured, "context")
        topic = _get(context, "topic") if context is not None else None
        body = json.dumps(_get(structured, "message")).encode("utf-8")
        return Message(topic=str(topic or ""), payload=body, qos=qos)
    return None
