"""The ``Bus`` over awsiotsdk's MQTT 5 client (``awscrt.mqtt5``), for fleets on AWS IoT Core.

Select it with ``broker.client: awsiot`` in the device file (or ``--mqtt-client awsiot``
on ``edge-agent``); the rest of the project cannot tell it from ``PahoBus``. It speaks
MQTT 5 over mutual TLS (the device certificate and key from the device file; ALPN
``x-amzn-mqtt-ca`` on port 443, as IoT Core wants there), and plain TCP for
``mqtt://`` (tests, a local broker). ``awscrt`` is imported only when a bus is built.

What the CRT allows, and what this adapter does with it:

* **Acknowledgements.** QoS 1 messages are acknowledged automatically when the
  callback returns, unless the callback calls ``acquire_publish_acknowledgement_control()``
  (awscrt >= 0.29); the PUBACK is then sent by ``invoke_publish_acknowledgement(handle)``,
  from any thread. With ``manual_ack=True`` the adapter takes control of every QoS 1
  message and ``ack`` sends the PUBACK, so the agent acknowledges only what is on
  disk, as with paho. A handle does not survive a reconnect: the broker redelivers
  an unacknowledged message on the rejoined session instead.
* **TCP_NODELAY.** ``awscrt.io.SocketOptions`` has no such option (connect timeout
  and keep-alive only), so the adapter cannot set it; aws-c-io does not document
  Nagle either way. The integration test measures QoS 1 round trips on loopback.
* **Reconnects** are the CRT's own (exponential backoff with jitter, 0.5-30 s here).
  Subscriptions are made again on every successful connection, like ``PahoBus``.
* **Callbacks** run on the CRT's event-loop thread. Exceptions from handlers are
  caught and logged; a blocking ``publish(timeout=...)`` from that thread would
  wait for itself, so it is not waited for there (the message is still sent).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from edge.errors import BrokerError
from edge.mqtt.bus import (
    BrokerAddress,
    ConnectionHandler,
    Message,
    MessageHandler,
    Subscriptions,
    Will,
)

log = logging.getLogger(__name__)

IOT_ALPN = "x-amzn-mqtt-ca"


class IotCoreBus:
    """A ``Bus`` on one ``awscrt.mqtt5.Client``; the same options as ``PahoBus``."""

    def __init__(
        self,
        endpoint: BrokerAddress,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        session_expiry: int = 7 * 24 * 3600,
        manual_ack: bool = False,
        keepalive: int = 30,
        will: Will | None = None,
    ) -> None:
        self.address = endpoint
        self.client_id = client_id or f"edgectl-{uuid.uuid4().hex[:12]}"
        self._persistent = persistent
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._keepalive = keepalive
        self._will = will
        self._subs = Subscriptions()
        self._lock = threading.Lock()  # guards the acknowledgement handles
        self._conn_handlers: list[ConnectionHandler] = []
        self._connected = threading.Event()
        self._attempted = threading.Event()  # a connection attempt succeeded or failed
        self._stopped = threading.Event()
        self._failure: str | None = None
        self._acks: dict[int, Any] = {}  # token -> PublishAcknowledgementControlHandle
        self._tokens = itertools.count(1)
        self._loop_threads: set[int] = set()
        self._client: Any = None
        self._mqtt5: Any = None

    # -- connection ---------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Start and wait for CONNACK; ``BrokerError`` at the first failed attempt (a refused
        handshake, no listener) or when none succeeded within ``timeout``."""
        self._attempted.clear()
        self.start()
        self._attempted.wait(timeout)
        if not self._connected.is_set():
            detail = self._failure or "no answer"
            self.close()
            raise BrokerError(f"cannot connect to broker {self.address.url}: {detail}")

    def start(self) -> None:
        """Connect in the background; the CRT reconnects with backoff (the agent's mode)."""
        if self._client is not None:
            return
        self._client = self._build()
        self._stopped.clear()
        self._client.start()

    def wait_connected(self, timeout: float | None) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on_connection_change(self, handler: ConnectionHandler) -> None:
        self._conn_handlers.append(handler)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.stop(self._mqtt5.DisconnectPacket())
            self._stopped.wait(10)
        finally:
            self._connected.clear()

    def _build(self) -> Any:
        from awscrt import io, mqtt5

        self._mqtt5 = mqtt5
        ep = self.address
        tls_ctx = None
        if ep.tls:
            if ep.cert is not None and ep.key is not None:
                tls = io.TlsContextOptions.create_client_with_mtls_from_path(
                    str(ep.cert), str(ep.key)
                )
            else:
                tls = io.TlsContextOptions()
            if ep.ca is not None:
                tls.override_default_trust_store_from_path(None, str(ep.ca))
            if ep.port == 443:
                tls.alpn_list = [IOT_ALPN]
            tls_ctx = io.ClientTlsContext(tls)
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = 10_000
        will = None
        if self._will is not None:
            will = mqtt5.PublishPacket(
                topic=self._will.topic, payload=self._will.payload,
                qos=mqtt5.QoS(self._will.qos), retain=self._will.retain,
            )  # fmt: skip
        connect = mqtt5.ConnectPacket(
            client_id=self.client_id, keep_alive_interval_sec=self._keepalive,
            session_expiry_interval_sec=self._session_expiry if self._persistent else 0,
            will=will, will_delay_interval_sec=0 if will is not None else None,
        )  # fmt: skip
        options = mqtt5.ClientOptions(
            host_name=ep.host, port=ep.port, tls_ctx=tls_ctx, socket_options=socket_options,
            connect_options=connect,
            session_behavior=(mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS if self._persistent
                              else mqtt5.ClientSessionBehaviorType.CLEAN),
            # QoS 1 publishes wait in the client while offline, as with paho.
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_QOS0_PUBLISH_ON_DISCONNECT,
            min_reconnect_delay_ms=500, max_reconnect_delay_ms=30_000,
            ack_timeout_sec=30,
            on_publish_callback_fn=self._on_publish,
            on_lifecycle_event_connection_success_fn=self._on_success,
            on_lifecycle_event_connection_failure_fn=self._on_failure,
            on_lifecycle_event_disconnection_fn=self._on_disconnect,
            on_lifecycle_event_stopped_fn=self._on_stopped,
            disable_metrics=True,
        )  # fmt: skip
        return mqtt5.Client(options)

    # -- pub/sub --------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self._subs.add(topic_filter, handler, qos)
        if self._connected.is_set():
            self._subscribe([(topic_filter, qos)])

    def unsubscribe(self, topic_filter: str) -> None:
        self._subs.remove(topic_filter)
        client = self._client
        if client is not None and self._connected.is_set():
            future = client.unsubscribe(self._mqtt5.UnsubscribePacket(topic_filters=[topic_filter]))
            future.add_done_callback(lambda f: _log_failure(f, f"unsubscribe {topic_filter}"))

    def _subscribe(self, filters: list[tuple[str, int]]) -> None:
        client, mqtt5 = self._client, self._mqtt5
        if client is None or not filters:
            return
        # retain handling 1: retained messages only for a new subscription (as PahoBus).
        packet = mqtt5.SubscribePacket(subscriptions=[
            mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS(q),
                               retain_handling_type=mqtt5.RetainHandlingType.SEND_ON_SUBSCRIBE_IF_NEW)
            for f, q in filters
        ])  # fmt: skip
        future = client.subscribe(packet)
        future.add_done_callback(lambda f: _log_failure(f, f"subscribe {[f for f, _ in filters]}"))

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Mapping[str, str] | None = None,
        timeout: float | None = None,
        expiry: int | None = None,
    ) -> None:
        client, mqtt5 = self._client, self._mqtt5
        if client is None:
            raise BrokerError(f"publish to {topic!r} failed: the bus is not started")
        user = [mqtt5.UserProperty(str(k), str(v)) for k, v in (properties or {}).items()]
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS(qos),
                                     retain=retain, user_properties=user or None,
                                     message_expiry_interval_sec=expiry)  # fmt: skip
        try:
            future = client.publish(packet)
        except Exception as exc:
            raise BrokerError(f"publish to {topic!r} failed: {exc}") from exc
        if timeout is None or threading.get_ident() in self._loop_threads:
            future.add_done_callback(lambda f: _log_failure(f, f"publish to {topic}"))
            return
        try:
            result = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise BrokerError(f"publish to {topic!r} not acknowledged by {self.address.url} "
                              f"within {timeout:g}s") from None  # fmt: skip
        except Exception as exc:
            raise BrokerError(f"publish to {topic!r} failed: {exc}") from exc
        puback = getattr(result, "puback", None)
        code = getattr(puback, "reason_code", None)
        if code is not None and int(code) >= 0x80:
            raise BrokerError(f"publish to {topic!r} refused by the broker: {code.name}")

    def ack(self, message: Message) -> None:
        if not (self._manual_ack and message.qos > 0 and message.mid):
            return
        with self._lock:
            handle = self._acks.pop(message.mid, None)
        client = self._client
        if handle is None or client is None:
            return
        try:
            client.invoke_publish_acknowledgement(handle)
        except Exception as exc:  # the connection that delivered it is gone: it comes again
            log.info("PUBACK for %s not sent: %s", message.topic, exc)

    # -- CRT callbacks (never let an exception escape into the CRT) --------------------------
    def _on_publish(self, data: Any) -> None:
        self._loop_threads.add(threading.get_ident())
        try:
            packet = data.publish_packet
            qos = int(packet.qos)
            token = 0
            if self._manual_ack and qos > 0 and data.acquire_publish_acknowledgement_control:
                handle = data.acquire_publish_acknowledgement_control()
                token = next(self._tokens)
                with self._lock:
                    self._acks[token] = handle
            props = {p.name: p.value for p in (packet.user_properties or [])}
            expiry = getattr(packet, "message_expiry_interval_sec", None)
            message = Message(
                topic=packet.topic, payload=bytes(packet.payload or b""), qos=qos,
                retain=bool(packet.retain), properties=props, mid=token,  # no DUP flag in the CRT
                expiry=int(expiry) if expiry is not None else None,
            )  # fmt: skip
            self._subs.deliver(message, self.ack)
        except Exception:
            log.exception("error while receiving a message")

    def _on_success(self, data: Any) -> None:
        self._loop_threads.add(threading.get_ident())
        try:
            self._failure = None
            self._subscribe(self._subs.filters())
            self._connected.set()
            self._attempted.set()
            log.info("connected to %s as %s (awscrt)", self.address.url, self.client_id)
            for handler in self._conn_handlers:
                handler(True)
        except Exception:
            log.exception("error in connect handler")

    def _on_failure(self, data: Any) -> None:
        try:
            self._failure = str(data.exception or data.connack_packet)
            self._attempted.set()
            log.warning("broker %s: connection failed: %s", self.address.url, self._failure)
        except Exception:
            log.exception("error in connection failure handler")

    def _on_disconnect(self, data: Any) -> None:
        try:
            was = self._connected.is_set()
            self._connected.clear()
            with self._lock:
                self._acks.clear()  # handles of the old connection are void
            if was:
                log.warning("disconnected from %s: %s", self.address.url,
                            data.exception or data.disconnect_packet)  # fmt: skip
                for handler in self._conn_handlers:
                    handler(False)
        except Exception:
            log.exception("error in disconnect handler")

    def _on_stopped(self, data: Any) -> None:
        self._stopped.set()


def _log_failure(future: Any, what: str) -> None:
    try:
        exc = future.exception()
    except Exception as err:  # cancelled
        exc = err
    if exc is not None:
        log.warning("%s failed: %s", what, exc)


__all__ = ["BrokerAddress", "IotCoreBus", "Will"]
