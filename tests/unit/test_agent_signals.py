"""The agent's stop signal reaches the main thread whichever thread the kernel picks."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from edge.agent.signals import StopSignals


@pytest.fixture
def signals() -> Iterator[StopSignals]:
    installed = StopSignals()
    yield installed
    installed.close()


def test_a_signal_taken_by_another_thread_still_wakes_the_main_thread(
    signals: StopSignals,
) -> None:
    # The hang this guards against: SIGTERM handled (in C) on a worker thread while
    # the main thread sleeps on a lock and never runs the Python-level handler.
    parked = threading.Event()
    release = threading.Event()

    def bystander() -> None:
        parked.set()
        release.wait(10)

    thread = threading.Thread(target=bystander)
    thread.start()
    parked.wait(5)
    assert thread.ident is not None
    signal.pthread_kill(thread.ident, signal.SIGTERM)
    try:
        assert signals.wait() is signal.Signals.SIGTERM
    finally:
        release.set()
        thread.join(5)


def test_other_signals_on_the_wakeup_pipe_are_skipped(signals: StopSignals) -> None:
    previous = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.wait() is signal.Signals.SIGINT
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_close_restores_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    StopSignals().close()
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind


def test_set_on_signal_sets_the_event_from_a_helper_thread(signals: StopSignals) -> None:
    stop = threading.Event()
    signals.set_on_signal(stop)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5)


def test_close_ends_the_helper_thread_without_a_signal() -> None:
    stop = threading.Event()
    installed = StopSignals()
    installed.set_on_signal(stop)
    installed.close()
    assert not stop.is_set()
    assert not any(t.name == "stop-signals" for t in threading.enumerate())
