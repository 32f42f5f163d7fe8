"""Retry and wait policies: backoff and polling are jittered (clients that failed together do not
retry in step), and a cancel wakes every wait at once, in whichever thread it waits."""

from __future__ import annotations

import random
import threading

import pytest
from tenacity import RetryCallState, Retrying

from sdcluster import retry
from sdcluster.errors import Interrupted


def test_call_backoff_is_jittered_exponential_and_capped() -> None:
    wait = retry.call_wait()
    for attempt in (1, 3, 6, 12):
        state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        waits = [wait(state) for _ in range(50)]
        assert len(set(waits)) > 40, waits  # spread, not one value for everyone
        assert all(0 <= w <= retry.CALL_MAX_WAIT_S for w in waits)


def test_poll_interval_is_jittered_around_a_twentieth_of_the_time_waited() -> None:
    rng = random.Random(7)
    intervals = [retry.poll_interval(20.0, 5.0, rng) for _ in range(50)]
    assert len(set(intervals)) == 50
    assert all(0.5 <= i <= 1.0 for i in intervals), intervals  # [half, all] of 5% of 20 s
    assert all(2.5 <= retry.poll_interval(600.0, 5.0, rng) <= 5.0 for _ in range(20))  # capped
    assert all(0.025 <= retry.poll_interval(0.1, 5.0, rng) <= 0.05 for _ in range(20))  # the floor


def test_a_scaled_backoff_scales_the_bounds_not_the_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1:20: a 1 s wait polls as a 20 s one does, 20 times faster (not 20 times as often again).
    monkeypatch.setattr("sdcluster.retry.BACKOFF_SCALE", 1 / 20)
    rng = random.Random(7)
    assert all(0.025 <= retry.poll_interval(1.0, 5.0, rng) <= 0.05 for _ in range(20))
    assert all(0.125 <= retry.poll_interval(30.0, 5.0, rng) <= 0.25 for _ in range(20))  # cap 5 s / 20
    assert all(0.00125 <= retry.poll_interval(0.0, 5.0, rng) <= 0.0025 for _ in range(20))  # floor / 20


def test_cancel_wakes_a_wait_at_once_and_a_cancelled_run_starts_no_wait() -> None:
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            retry.until(lambda: None, timeout_s=300, what="something that never comes", max_interval_s=60)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        retry.cancel()
        thread.join(timeout=30)  # a hang guard: the wait would otherwise last 300 s
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
        assert "something that never comes" in str(errors[0])
        probed: list[int] = []
        with pytest.raises(Interrupted):
            retry.until(lambda: probed.append(1), timeout_s=5, what="x")
        assert probed == []  # not even one probe (it might start a mutation)
    finally:
        retry.reset_cancel()
    assert retry.until(lambda: 42, timeout_s=1, what="x") == 42


def test_a_watched_wait_polls_at_its_cap_as_the_watches_backup() -> None:
    rng = random.Random(7)
    assert all(2.5 <= retry.poll_interval(1.0, 5.0, rng, watched=True) <= 5.0 for _ in range(20))
    assert all(retry.poll_interval(1.0, 5.0, rng) <= 0.05 for _ in range(20))  # unwatched: 5 % of 1 s
    assert not retry.Wake().watched  # a plain wake: no watch behind it


def test_a_wake_makes_the_next_probe_run_at_once_not_at_the_end_of_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every interval lasts past the deadline (300 s): without the wake, one sleep to the deadline.
    monkeypatch.setattr("sdcluster.retry.MIN_POLL_S", 600.0)
    wake, ready = threading.Event(), threading.Event()
    probes: list[bool] = []
    results: list[object] = []

    def probe() -> bool | None:
        seen = ready.is_set()
        probes.append(seen)
        return True if seen else None

    def waiter() -> None:
        results.append(retry.until(probe, timeout_s=300, what="x", max_interval_s=600, wake=wake))

    thread = threading.Thread(target=waiter)
    thread.start()
    while not probes:
        threading.Event().wait(0.01)
    ready.set()
    wake.set()  # what a watch does when it sees the awaited object change
    thread.join(timeout=30)  # a hang guard: without the wake the wait sleeps to its 300 s deadline
    assert not thread.is_alive()
    assert results == [True] and probes == [False, True]


def test_cancel_also_wakes_a_wait_that_has_a_wake_event() -> None:
    errors: list[BaseException] = []
    wake = threading.Event()

    def waiter() -> None:
        try:
            retry.until(lambda: None, timeout_s=300, what="a watched thing", max_interval_s=60, wake=wake)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        while wake not in retry._WAKES:  # registered once the wait has begun
            threading.Event().wait(0.01)
        retry.cancel()
        thread.join(timeout=30)  # a hang guard: the wait would otherwise last 300 s
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], Interrupted), errors
        assert set() == retry._WAKES  # unregistered when the wait ends
    finally:
        retry.reset_cancel()
