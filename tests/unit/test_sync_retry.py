"""Backoff: full jitter under a doubling, capped ceiling; deterministic when seeded."""

from __future__ import annotations

import random

import pytest

from edge.sync.retry import Backoff


def test_delays_stay_under_the_doubling_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(3))
    for attempt in range(20):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert backoff.ceiling(attempt) == ceiling
        assert 0.0 <= backoff.next_delay(attempt) <= ceiling


def test_seeded_rng_is_deterministic() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay(i) for i in range(8)] == [b.next_delay(i) for i in range(8)]


def test_internal_counter_and_reset() -> None:
    backoff = Backoff(base=1.0, cap=4.0, rng=random.Random(0))
    reference = random.Random(0)
    assert backoff.next_delay() == reference.uniform(0, 1.0)
    assert backoff.next_delay() == reference.uniform(0, 2.0)
    assert backoff.attempt == 2
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == reference.uniform(0, 1.0)


def test_huge_attempt_does_not_overflow() -> None:
    assert Backoff(cap=30.0).ceiling(10_000) == 30.0


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_rejects_nonsense(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base=base, cap=cap)
