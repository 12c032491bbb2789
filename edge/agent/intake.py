"""Intake: from a QoS 1 message to durable intake records, then the acknowledgement.

The rules this module keeps:

* A message is acknowledged only from the callback of the commit that
  recorded it (or that recognised it as a redelivery of a recorded one).
* An acknowledgement goes out only on the broker connection the message
  arrived on. After a reconnect the broker resends every unacknowledged
  message with DUP set and its original packet id; acknowledging a stale
  packet id on the new connection could acknowledge a different message.
  The resent copy is recognised by the store (``Store.record``) and
  acknowledged then.
* Backpressure: while the store is over its bound (``Store.full()``), or a
  target component's queue is full under its ``reject`` policy, new
  messages are *parked* in memory, neither recorded nor acknowledged, in
  arrival order. The broker stops sending once its in-flight window for this
  client is used up and keeps the rest queued in the session, so nothing is
  lost and memory stays bounded by the broker's window. Parked messages are
  recorded, in order, as soon as the syncer frees space; on a disconnect they
  are forgotten, because the broker resends them after the reconnect.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence

from edge.agent.store import Delivery, IntakeRecord, Store
from edge.mqtt.bus import Bus, Message

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        dispatch: Callable[[IntakeRecord], None],
        room: Callable[[Sequence[str], Mapping[str, int]], bool] = lambda _t, _n: True,
        early: Callable[[list[IntakeRecord]], None] | None = None,
        ack: Callable[[Message], None] | None = None,
        throttled: Callable[[Sequence[str], Mapping[str, int]], None] | None = None,
    ) -> None:
        """``room(targets, admitted)`` says whether every target component can take one
        more record (False: a full queue under its ``reject`` policy); ``admitted``
        counts, per component, records sent to the store and not yet queued, since a
        group commit queues a whole burst at once, after the check. ``early`` gets
        the rows of a message committed on this thread just before the commit
        (``Store.record``). ``ack`` sends an acknowledgement (default: the bus's).
        ``throttled(targets, admitted)`` hears of each new message held back while the
        store has room (so for a full queue), to count it against the full ones."""
        self._early = early
        self._throttled = throttled
        self._ack = ack or bus.ack
        self._store = store
        self._bus = bus
        self._dispatch = dispatch
        self._room = room
        self._admitted: collections.Counter[str] = collections.Counter()
        # Re-entrant: the store may commit a record inline and call ``recorded`` back on
        # this thread, inside ``accept`` or ``resume``.
        self._lock = threading.RLock()
        self._connection = ""
        self._parked: collections.deque[tuple[Message, Sequence[str], str]] = (
            collections.deque()
        )
        self.parked_total = 0
        self.stale_acks = 0

    @property
    def parked(self) -> int:
        return len(self._parked)

    def on_connection(self, up: bool) -> None:
        """Bus connection handler: a new token per connection; parked messages of a lost
        connection are the broker's again."""
        with self._lock:
            if up:
                self._connection = secrets.token_hex(6)
            else:
                self._connection = ""
                if self._parked:
                    log.info("connection lost: %d parked messages left to the broker",
                             len(self._parked))
                self._parked.clear()

    def accept(self, message: Message, targets: Sequence[str]) -> None:
        """Record ``message`` for ``targets``, or park it while the store is full or a
        target's queue is full under ``reject`` (parked messages keep arrival order)."""
        with self._lock:
            connection = self._connection
            if self._parked or self._store.full() or not self._room(targets, self._admitted):
                if not self._parked:
                    if self._store.full():
                        log.warning(
                            "store over its bound (%s bytes): holding intake until the "
                            "outbox drains", self._store.max_bytes,
                        )
                    else:
                        log.warning(
                            "queue of %s is full: holding intake until it drains",
                            ", ".join(targets),
                        )
                self._parked.append((message, targets, connection))
                self.parked_total += 1
                if self._throttled is not None and not self._store.full():
                    self._throttled(targets, self._admitted)
                return
            self._record(message, targets, connection)

    def resume(self) -> None:
        """Store listener: space was freed (outbox synced, or an invocation completed and
        so left its queue); record parked messages while there is room."""
        with self._lock:
            while (
                self._parked
                and not self._store.full()
                and self._room(self._parked[0][1], self._admitted)
            ):
                message, targets, connection = self._parked.popleft()
                self._record(message, targets, connection)

    def _record(self, message: Message, targets: Sequence[str], connection: str) -> None:
        def recorded(rows: list[IntakeRecord]) -> None:
            with self._lock:
                for target in targets:  # (Counter.subtract costs more, per message)
                    self._admitted[target] -= 1
            if connection == self._connection:
                self._ack(message)
            else:
                self.stale_acks += 1  # the broker resends it; the store recognises the copy
            for row in rows:
                self._dispatch(row)

        for target in targets:
            self._admitted[target] += 1
        self._store.record(
            targets,
            message.topic,
            message.payload,
            message.properties,
            recorded,
            delivery=Delivery(dup=message.dup, packet_id=message.mid, connection=connection),
            early=self._early,
        )
