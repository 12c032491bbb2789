"""The ``Bus`` over paho-mqtt: the only module that imports paho.

Three things matter more than the API surface:

* TCP_NODELAY on every socket. With Nagle on, a QoS 1 round trip through a
  loopback broker takes 44-88 ms instead of under a millisecond.
* Exceptions from our callbacks never reach paho: paho re-raises them and
  stops its network loop, which would silently stop the agent's intake.
* Manual acknowledgement (``manual_ack=True``): the agent acknowledges a QoS 1
  message only after it is on disk, so the broker keeps it until then.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

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


def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    try:
        raw = getattr(sock, "socket", lambda: sock)() if isinstance(sock, ssl.SSLSocket) else sock
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (websocket wrapper, unix socket)
        pass


_MID = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MESSAGE_EXPIRY = 0x02  # the MQTT 5 property id of the Message Expiry Interval
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]

# Packets a thread may write itself: results and acknowledgements, the per-message
# traffic. Connection, subscription and keepalive packets keep paho's own path.
_DIRECT_COMMANDS = frozenset({mqtt.PUBLISH, mqtt.PUBACK})
# ``work_waits`` looks at most this far into the socket's input.
_PEEK = 64


def _only_pubacks(head: bytes) -> bool:
    """Whether ``head`` (the start of unread input) holds nothing but PUBACKs, the
    last maybe cut short; False for anything else, and for input that may go on
    past it. (Mosquitto adds a reason code to the PUBACK of a publish nobody is
    subscribed to: ``0x10``, no matching subscribers.)"""
    if not head or len(head) >= _PEEK:
        return False
    pos = 0
    while pos < len(head):
        if head[pos] != 0x40:
            return False
        if pos + 1 < len(head) and head[pos + 1] & 0x80:
            return False  # a remaining length this long is no plain PUBACK
        pos += 2 + (head[pos + 1] if pos + 1 < len(head) else 0)
    return True


class _DirectClient(mqtt.Client):
    """paho's client, except that a publish from another thread is written at once.

    Under ``loop_start`` paho appends a packet from any thread to its queue and wakes
    its network thread through a socket pair to write it: per result, a thread
    hand-off, a turn of paho's loop and a fight for the interpreter lock, all on the
    latency path. Here a publishing thread that finds nothing queued and nobody
    writing writes the packet itself, under a lock that the network thread's own
    writes take too, so packets never interleave; under load (something queued, or
    a write in progress) packets take paho's path and go out together. Whatever
    the socket does not take at once is left to the network thread, woken as paho
    would. Plain TCP only: an SSL object must not be written on one thread
    while another reads it, so over TLS paho's own path is kept. The network
    thread itself writes a PUBLISH or PUBACK it sends from a message handler the
    same way, instead of queueing it behind a wake-up of its own loop (which would
    also make ``PahoBus.interrupts`` report work that is not there).

    This leans on paho 2.x internals (``_packet_queue``, ``_out_packet``,
    ``_thread``, ``_sockpairW``); a unit test checks they are still there.
    """

    def __init__(self, *args: Any, direct_writes: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (topic, payload, qos, retain, dup, mid, expiry): receives plain messages (see
        # ``_handle_publish``); it must not raise.
        self.on_plain_message: (
            Callable[[str, bytes, int, bool, bool, int, int | None], None] | None
        ) = None
        self._direct_writes = direct_writes
        self._write_lock = threading.RLock()  # re-entrant: paho may call back while writing
        self._held = threading.local()  # .acks: the PUBACKs this thread holds back, or None

    @contextlib.contextmanager
    def acks_held(self) -> Iterator[None]:
        """PUBACKs this thread sends inside the block go out at its end, in one write.
        Dropped instead if the connection they were made on is gone by then: the
        broker resends those messages on the new one."""
        held = self._held
        if getattr(held, "acks", None) is not None:  # nested: the outer block sends
            yield
            return
        acks: list[bytes | bytearray] = []
        held.acks = acks
        sock = self._sock
        try:
            yield
        finally:
            held.acks = None
            if acks and sock is not None and self._sock is sock:
                self._packet_queue(mqtt.PUBACK, b"".join(acks), 0, 0)

    def loop_write(self) -> MQTTErrorCode:
        with self._write_lock:
            return super().loop_write()

    def _handle_publish(self) -> MQTTErrorCode:
        # A QoS 0 or 1 PUBLISH without properties (a trigger message), or with only a
        # Message Expiry Interval (a status document: ``fleet status`` reads thousands),
        # handed straight to ``on_plain_message``: paho would build a Properties object,
        # an MQTTMessage and an MQTTMessageInfo (with its own Condition) for it, then
        # look the topic up in its filtered callbacks. Anything else takes paho's path.
        deliver = self.on_plain_message
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if deliver is None or self._protocol != mqtt.MQTTv5 or qos == 2 or len(packet) < 2:
            return super()._handle_publish()
        (tlen,) = _MID.unpack_from(packet, 0)
        pos = 2 + tlen
        mid = 0
        if qos:
            if len(packet) < pos + 2:
                return super()._handle_publish()
            (mid,) = _MID.unpack_from(packet, pos)
            pos += 2
        if len(packet) <= pos:
            return super()._handle_publish()
        expiry: int | None = None
        if packet[pos] == 0:  # no properties
            start = pos + 1
        elif packet[pos] == 5 and len(packet) >= pos + 6 and packet[pos + 1] == _MESSAGE_EXPIRY:
            (expiry,) = _U32.unpack_from(packet, pos + 2)
            start = pos + 6
        else:
            return super()._handle_publish()
        try:
            topic = bytes(packet[2 : 2 + tlen]).decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        with self._in_callback_mutex:
            deliver(topic, bytes(packet[start:]), qos, bool(header & 0x01),
                    bool(header & 0x08), mid, expiry)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        # The PUBACK of each published result: a bare packet id (success, no properties)
        # in the common case, for which paho builds a ReasonCode and a Properties
        # object each time; one shared, never-modified pair does here.
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2 or self._protocol != mqtt.MQTTv5:
            return super()._handle_pubackcomp(cmd)
        (mid,) = _MID.unpack(packet)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _update_inflight(self) -> MQTTErrorCode:
        # paho walks every unacknowledged publish on each PUBACK, looking for one queued
        # behind a full in-flight window: hundreds of results on a busy agent. None is
        # queued while every stored publish is in flight.
        if len(self._out_messages) <= self._inflight_messages:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()

    def _send_now(self, command: int, packet: bytes | bytearray, qos: int) -> int:
        """Write a PUBACK or a QoS 1/2 PUBLISH straight to the socket: the bytes taken
        (0: none yet), or -1 for paho's own write. Nothing follows such a write in
        paho but the keepalive clock (a QoS 0 PUBLISH completes its message info
        when written, so it takes paho's path); per result and acknowledgement
        that path builds a queue entry and walks paho's write loop."""
        sock = self._sock
        if sock is None or (qos == 0 and (command & 0xF0) != mqtt.PUBACK):
            return -1
        try:
            sent = sock.send(packet)
        except BlockingIOError:
            return 0
        except OSError:
            return -1  # paho's write meets it again and handles the lost connection
        with self._msgtime_mutex:
            self._last_msg_out = mqtt.time_func()  # paho's keepalive clock
        return sent

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if (command & 0xF0) == mqtt.PUBACK:
            held = getattr(self._held, "acks", None)
            if held is not None:
                held.append(packet)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        if (
            not self._direct_writes
            or self._thread is None
            or (command & 0xF0) not in _DIRECT_COMMANDS
            or self._out_packet  # busy: queued packets go out together, as paho does
            or not self._write_lock.acquire(blocking=False)
        ):
            return super()._packet_queue(command, packet, mid, qos, info)
        try:
            sent = self._send_now(command, packet, qos)
            if sent < len(packet):  # what is not written yet goes through paho's queue
                pos = max(sent, 0)
                self._out_packet.append({
                    "command": command, "mid": mid, "qos": qos, "pos": pos,
                    "to_process": len(packet) - pos, "packet": packet, "info": info,
                })  # fmt: skip
                if sent < 0:  # paho writes it (a QoS 0 PUBLISH, no socket, a socket error)
                    self.loop_write()
        finally:
            self._write_lock.release()
        if self.want_write() and self._sockpairW is not None:
            # Left over (a full socket buffer, or no connection yet): the network
            # thread selects for writability once woken.
            with contextlib.suppress(BlockingIOError, OSError):
                self._sockpairW.send(b"0")
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class PahoBus:
    """A ``Bus`` on one MQTT 5 connection.

    ``persistent=True`` keeps the broker session across disconnects (fixed client
    id, clean start off, a session expiry), so QoS 1 messages published while the
    device was away are delivered when it returns.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        session_expiry: int = 7 * 24 * 3600,
        manual_ack: bool = False,
        keepalive: int = 30,
        will: Will | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id or f"edgectl-{uuid.uuid4().hex[:12]}"
        self._persistent = persistent
        self._session_expiry = session_expiry
        self._manual_ack = manual_ack
        self._keepalive = keepalive
        self._subs = Subscriptions()
        self._subacks_lock = threading.Lock()
        self._pending_subacks: set[int] = set()
        # Set once the broker acknowledged every subscription made on (re)connect or
        # since (cleared again by a later subscribe until its SUBACK); connection handlers
        # run at CONNACK already (a persistent session's queued messages arrive right
        # after it), so "ready to receive" is this event.
        self.subscribed = threading.Event()
        self._conn_handlers: list[ConnectionHandler] = []
        self._connected = threading.Event()
        self._failure: str | None = None
        self._started = False
        self._closing = False
        self._client = _DirectClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            direct_writes=not address.tls,
        )
        self._client.on_socket_open = _nodelay
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_plain_message = self._on_plain_message
        self._client.on_subscribe = self._on_subscribe
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Let many QoS 1 messages be in flight: the default 20 would make a burst
        # of results wait for acknowledgements one window at a time.
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        if address.tls:
            self._client.tls_set(
                ca_certs=str(address.ca) if address.ca else None,
                certfile=str(address.cert) if address.cert else None,
                keyfile=str(address.key) if address.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )

    # -- connection ----------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for CONNACK; ``BrokerError`` if that takes over ``timeout``."""
        self.start()
        if not self.wait_connected(timeout):
            detail = self._failure or "no answer"
            self.close()
            raise BrokerError(f"cannot connect to broker {self.address.url}: {detail}")

    def start(self) -> None:
        """Connect in the background; reconnects forever with backoff (the agent's mode)."""
        if self._started:
            return
        self._started = True
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry if self._persistent else 0
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self._keepalive,
            clean_start=not self._persistent,
            properties=props,
        )
        self._client.loop_start()

    def interrupts(self) -> tuple[int, ...] | None:
        """Called from a message handler on the network thread: the fds whose
        readability means that thread has other work (its socket: more input;
        paho's wake-up pair: packets other threads queued), for a handler that
        waits on something else meanwhile (``ComponentRunner.run_now``). None on
        any other thread, and over TLS (an SSL object may hold decrypted input
        that its fd does not show)."""
        client = self._client
        if client._thread is not threading.current_thread() or self.address.tls:
            return None
        sock, pair = client.socket(), client._sockpairR
        if sock is None or pair is None:
            return None
        return (sock.fileno(), pair.fileno())

    def work_waits(self) -> bool:
        """Called from a message handler on the network thread: whether a packet that
        needs more than a moment waits for that thread (a message, or packets other
        threads queued), for a handler deciding to leave some of its own work to
        another thread. The broker's PUBACK of a result just published arrives
        within microseconds and takes microseconds to handle: PUBACKs do not count.
        True wherever that cannot be told (TLS, another thread, a short read)."""
        fds = self.interrupts()
        if fds is None:
            return True
        ready = select.select(fds, (), (), 0)[0]
        if not ready:
            return False
        sock = self._client.socket()
        if fds[1] in ready or not isinstance(sock, socket.socket):
            return True
        try:
            head = sock.recv(_PEEK, socket.MSG_PEEK)
        except OSError:
            return True
        return not _only_pubacks(head)

    def wait_connected(self, timeout: float | None) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on_connection_change(self, handler: ConnectionHandler) -> None:
        self._conn_handlers.append(handler)

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._closing = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    # -- pub/sub -------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        # Under the lock ``_on_connect`` takes: a filter added while a connection comes up
        # is either in its snapshot or subscribed here, never in neither.
        with self._subacks_lock:
            self._subs.add(topic_filter, handler, qos)
            if self._connected.is_set():
                mid = self._client.subscribe(topic_filter, options=_sub_options(qos))[1]
                if mid is not None:
                    self._pending_subacks.add(mid)
                    self.subscribed.clear()

    def unsubscribe(self, topic_filter: str) -> None:
        with self._subacks_lock:
            self._subs.remove(topic_filter)
            if self._connected.is_set():
                self._client.unsubscribe(topic_filter)

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
        props: Properties | None = _UserProperties(properties) if properties else None
        if expiry is not None:  # rare (status documents): paho's own Properties
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry
            if properties:
                props.UserProperty = [(str(k), str(v)) for k, v in properties.items()]
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise BrokerError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        if timeout is not None:
            try:
                info.wait_for_publish(timeout)
            except (ValueError, RuntimeError) as exc:
                raise BrokerError(f"publish to {topic!r} failed: {exc}") from exc
            if not info.is_published():
                raise BrokerError(
                    f"publish to {topic!r} not acknowledged by {self.address.url} "
                    f"within {timeout:g}s"
                )

    def ack(self, message: Message) -> None:
        if self._manual_ack and message.qos > 0 and message.mid:
            self._client.ack(message.mid, message.qos)

    def acks_held(self) -> contextlib.AbstractContextManager[None]:
        """Acknowledgements this thread makes inside the block go out together when it
        ends, in one write instead of one each: for the store's writer, which
        acknowledges a whole group commit's messages at once (one wake-up of the
        broker instead of dozens)."""
        return self._client.acks_held()

    # -- paho callbacks (never let an exception escape into paho) ---------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        try:
            if reason.is_failure:
                self._failure = str(reason)
                log.warning("broker %s refused connection: %s", self.address.url, reason)
                return
            self._failure = None
            with self._subacks_lock:
                self._connected.set()
                subs = self._subs.filters()
                pending = (client.subscribe(f, options=_sub_options(q))[1] for f, q in subs)
                self._pending_subacks = {mid for mid in pending if mid is not None}
                if not self._pending_subacks:
                    self.subscribed.set()
            log.info("connected to %s as %s", self.address.url, self.client_id)
            for handler in self._conn_handlers:
                handler(True)
        except Exception:
            log.exception("error in connect handler")

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        with self._subacks_lock:
            self._pending_subacks.discard(mid)
            if not self._pending_subacks:
                self.subscribed.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        try:
            was = self._connected.is_set()
            self._connected.clear()
            self.subscribed.clear()
            if reason is not None and getattr(reason, "is_failure", False):
                self._failure = str(reason)
            if was:
                if self._closing:
                    log.debug("disconnected from %s", self.address.url)
                else:
                    log.warning("disconnected from %s: %s", self.address.url, reason)
                for handler in self._conn_handlers:
                    handler(False)
        except Exception:
            log.exception("error in disconnect handler")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            props: dict[str, str] = {}
            user = getattr(msg.properties, "UserProperty", None) if msg.properties else None
            if user:
                props = {str(k): str(v) for k, v in user}
            expiry = getattr(msg.properties, "MessageExpiryInterval", None)
            message = Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                dup=bool(getattr(msg, "dup", False)),
                properties=props,
                mid=msg.mid,
                expiry=int(expiry) if expiry is not None else None,
            )
            self._subs.deliver(message, self.ack)
        except Exception:
            log.exception("error while receiving a message")

    def _on_plain_message(
        self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, mid: int,
        expiry: int | None,
    ) -> None:
        try:
            message = Message(topic=topic, payload=payload, qos=qos, retain=retain, dup=dup,
                              properties={}, mid=mid, expiry=expiry)
            self._subs.deliver(message, self.ack)
        except Exception:
            log.exception("error while receiving a message")


class _UserProperties(Properties):
    """PUBLISH properties holding only user properties, packed once by hand.

    paho's ``Properties`` builds its name tables in ``__init__`` and packs through
    ``__setattr__`` and per-property lookups: a fifth of the agent's time per result
    on a loaded device. paho only calls ``pack()`` on what it is given to publish.
    """

    _pairs: list[tuple[str, str]]
    _packed: bytes

    def __init__(self, pairs: Mapping[str, str]) -> None:  # no super(): that is the cost
        # ``Properties.__setattr__`` only admits MQTT property names: go around it.
        fields = [(str(k), str(v)) for k, v in pairs.items()]
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_pairs", fields)
        object.__setattr__(self, "_packed", pack_user_properties(fields))

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        return str({"UserProperty": self._pairs})

    __repr__ = __str__


def pack_user_properties(pairs: list[tuple[str, str]]) -> bytes:
    """The MQTT 5 property block of a PUBLISH carrying ``pairs`` as user properties:
    a variable byte integer length, then per pair 0x26 and two length-prefixed UTF-8
    strings (MQTT 5.0 sections 2.2.2.2, 3.3.2.3.10 and 1.5.7)."""
    body = bytearray()
    for key, value in pairs:
        k, v = key.encode(), value.encode()
        body.append(0x26)
        body += len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
    return _varint(len(body)) + bytes(body)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _sub_options(qos: int) -> SubscribeOptions:
    # retainHandling=1: retained messages only for a new subscription, so an agent
    # restart on a persistent session does not re-run the retained trigger.
    return SubscribeOptions(qos=qos, retainHandling=1)


__all__ = ["BrokerAddress", "PahoBus", "Will"]
