"""One thread driving many paho clients: a selector, timers and a call queue.

``fleet simulate`` holds one MQTT connection per simulated device, because
that is what the broker, the last will and a rollout see of a real device.
paho's ``loop_start()`` costs a thread per client, so 1,000 devices would be
1,000 threads; paho also supports an external event loop (the
``on_socket_open`` / ``on_socket_register_write`` family of callbacks plus
``loop_read`` / ``loop_write`` / ``loop_misc``), which is what this is.

Everything that touches a client runs on the loop thread: paho is not
thread-safe once it is driven from outside, so other threads hand work over
with ``call_soon``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MISC_INTERVAL = 1.0  # keepalive pings and timeouts: paho's loop_misc, once a second


class Timer:
    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class NetLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._calls: deque[Callable[[], None]] = deque()
        self._calls_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._clients: set[mqtt.Client] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # -- clients ---------------------------------------------------------------------
    def attach(self, client: mqtt.Client) -> None:
        """Drive ``client`` from this loop (call before ``client.connect``)."""
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._no_write
        self._clients.add(client)

    def detach(self, client: mqtt.Client) -> None:
        self._clients.discard(client)

    def _opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sel.register(sock, selectors.EVENT_READ, client)

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _no_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, client)

    # -- scheduling ----------------------------------------------------------------------
    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` on the loop thread after ``delay`` seconds (loop thread only)."""
        timer = Timer(self._clock() + max(0.0, delay), fn)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread as soon as possible (any thread)."""
        with self._calls_lock:
            self._calls.append(fn)
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="netloop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.call_soon(lambda: None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        next_misc = self._clock() + MISC_INTERVAL
        while not self._stop.is_set():
            now = self._clock()
            wait = next_misc - now
            if self._timers:
                wait = min(wait, self._timers[0][0] - now)
            for key, events in self._sel.select(max(0.0, wait)):
                client = key.data
                if client is None:
                    self._drain_wakeups()
                    continue
                if events & selectors.EVENT_READ:
                    self._guard(client.loop_read, 16)
                if events & selectors.EVENT_WRITE:
                    self._guard(client.loop_write)
            self._run_calls()
            now = self._clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    self._guard(timer.fn)
            if now >= next_misc:
                next_misc = now + MISC_INTERVAL
                for client in list(self._clients):
                    self._guard(client.loop_misc)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        while True:
            with self._calls_lock:
                if not self._calls:
                    return
                fn = self._calls.popleft()
            self._guard(fn)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("simulated device callback failed")

    def close(self) -> None:
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
