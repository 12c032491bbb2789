"""Exponential backoff with full jitter for the sync loop.

Full jitter (a delay drawn uniformly from ``[0, min(cap, base * 2**attempt)]``)
is what AWS recommends for many clients hitting one service: after an outage
a fleet of devices reconnecting at once spreads its retries out instead of
arriving in synchronised waves. The random source is injected so a seeded
``random.Random`` gives the same delays in tests.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for attempt 0, 1, 2, ...; ``reset()`` after a success starts over."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` may draw (capped; no float overflow)."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt, 0), 64))

    def next_delay(self, attempt: int | None = None) -> float:
        """A delay for ``attempt`` (or the internal counter, which then advances)."""
        if attempt is None:
            attempt = self.attempt
            self.attempt += 1
        return self._rng.uniform(0.0, self.ceiling(attempt))

    def reset(self) -> None:
        """Forget past failures: the next ``next_delay()`` is drawn for attempt 0 again."""
        self.attempt = 0
