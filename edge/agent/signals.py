"""Waiting for SIGTERM and SIGINT in the main thread, whichever thread receives them.

The obvious ``signal.signal(SIGTERM, lambda *_: stop.set())`` plus ``stop.wait()``
can hang forever on a busy agent, for two reasons:

* Python runs a signal handler only in the main thread, between bytecodes. When
  the kernel hands the signal to another thread (the agent has a dozen), the C
  handler only sets a flag; the main thread, asleep on a lock, never looks at it.
* A handler that takes a lock (``Event.set``) deadlocks if it interrupts the main
  thread while that thread holds the same lock.

``signal.set_wakeup_fd`` closes both: the C handler writes the signal number to a
pipe from whatever thread it runs on, the main thread sleeps in ``read`` on that
pipe, and the Python-level handler does nothing at all.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable

_CLOSING = 0  # never a signal number: ``close()`` writes it to end a waiting thread


class StopSignals:
    """Install once, in the main thread; ``wait()`` returns the first stop signal."""

    def __init__(self, signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self._signums = frozenset(int(s) for s in signums)
        self._read, self._write = os.pipe()  # not inherited by workers (PEP 446)
        os.set_blocking(self._write, False)  # the C handler must never block
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, _noted) for s in self._signums}
        self._thread: threading.Thread | None = None

    def wait(self) -> signal.Signals | None:
        """Block until one of the signals arrives (other signals' bytes are skipped);
        None once ``close()`` was called."""
        while True:
            for byte in os.read(self._read, 64):  # PEP 475: retried after EINTR
                if byte == _CLOSING:
                    return None
                if byte in self._signums:
                    return signal.Signals(byte)

    def set_on_signal(self, event: threading.Event) -> None:
        """Set ``event`` when a stop signal arrives, from a helper thread: for a main
        thread that polls an event instead of blocking in ``wait``. (Setting the event
        from a Python handler could deadlock on the event's own lock.)"""

        def relay() -> None:
            if self.wait() is not None:
                event.set()

        self._thread = threading.Thread(target=relay, name="stop-signals", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Restore the previous handlers and wakeup fd, and end a ``set_on_signal``
        thread."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        if self._thread is not None:
            os.write(self._write, bytes([_CLOSING]))
            self._thread.join(5)
        os.close(self._read)
        os.close(self._write)


def _noted(signum: int, frame: object) -> None:
    """The Python-level handler: the byte on the wakeup pipe is what counts."""
