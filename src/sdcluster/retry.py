"""Retry and wait policies, classified by error kind (built on tenacity). One policy per kind:

- ``call(fn)``: one API call; retries transient failures (UNAVAILABLE, 429, deadline) with jittered
  exponential backoff, a few times. Library errors are translated first (errors.translate).
- ``read_modify_write(fn)``: an IAM policy edit; redoes the whole read-modify-write on a concurrent
  change (ABORTED / etag mismatch), Google's IAM retry guidance.
- ``until(fn, ...)``: wait for something to become true (operation DONE, IAM propagation, rollout),
  polling with capped jittered backoff up to a deadline, never a fixed sleep.

Cancellation: ``cancel()`` (a signal, Ctrl-C) wakes every ``until`` at once, in every thread, and
makes it raise ``Interrupted`` (as does starting one after the cancel): the long waits stop, the
caller records what exists and saves. Single calls and their short backoff are not cut short, so
the state can still be saved after a cancel. One flag per process, like the signals that set it.

Example::

    sa = retry.call(lambda: client.get_service_account(name=n), project=p)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .errors import Conflict, Interrupted, SdclusterError, TransientError, WaitTimeout, translate

if TYPE_CHECKING:
    from tenacity import wait_random_exponential  # tenacity loads on the first retried call

T = TypeVar("T")

# At a 20% transient fault rate one call gives up with probability 0.2**attempts: 6 attempts let
# about 1 apply in 200 (~100 calls) fail on noise; 10 make that ~1e-5, and the backoff between them
# (capped at CALL_MAX_WAIT_S) still surfaces a real outage within about half a minute.
CALL_ATTEMPTS = 10
CALL_MAX_WAIT_S = 8.0
# A policy another admin keeps editing (a CI bot, a busy team) can win several races in a row;
# each retry re-reads, so more attempts only cost time while the contention lasts.
RMW_ATTEMPTS = 15

MIN_POLL_S = 0.05
# A wait polls at 2.5-5 % of the time it has waited (at most every max_interval_s, 5 s): a 1-minute
# wait (IAM propagation, a rollout) notices its event 1.9 % late on average (3.3 % at 10 %), a
# 5-minute one 0.7 % (the cap rules there), and 7 minutes take about 240 calls (180 at 10 %).
POLL_FRACTION = 0.05

# Tests shrink the backoff scale so retries stay fast; production keeps 1.0.
BACKOFF_SCALE = 1.0

_CANCEL = threading.Event()
_WAKES: set[threading.Event] = set()  # the wake events of the waits under way (cancel sets them)
_WAKES_LOCK = threading.Lock()


def cancel() -> None:
    """Stop every wait now (``until`` raises ``Interrupted`` in whichever thread waits)."""
    _CANCEL.set()
    with _WAKES_LOCK:
        for wake in _WAKES:
            wake.set()


def cancelled() -> bool:
    return _CANCEL.is_set()


def reset_cancel() -> None:
    """Allow waits again (a library caller whose interrupted run has been cleaned up)."""
    _CANCEL.clear()


def check_cancelled(what: str) -> None:
    if _CANCEL.is_set():
        raise Interrupted(f"interrupted while {what}")


def call_wait() -> wait_random_exponential:
    """The backoff between attempts of one call: exponential, capped, with full jitter (clients
    retrying the same outage do not retry in step)."""
    from tenacity import wait_random_exponential

    return wait_random_exponential(multiplier=0.2 * BACKOFF_SCALE, max=CALL_MAX_WAIT_S * BACKOFF_SCALE)


class Wake(threading.Event):
    """A wait's ``wake``: set by whoever sees the awaited thing change. ``watched`` is true while
    watches deliver every change of it (Kubernetes watches): the wait then polls only as their
    backup, at its ``max_interval_s``, as ``kubectl rollout status`` relies on its watch alone."""

    @property
    def watched(self) -> bool:
        return False


def poll_interval(
    elapsed: float, max_interval_s: float, rng: random.Random | None = None, watched: bool = False
) -> float:
    """How long ``until`` sleeps after ``elapsed`` seconds of waiting: ``POLL_FRACTION`` of it,
    between ``MIN_POLL_S`` and ``max_interval_s`` (that cap at once when ``watched``), jittered over
    [half, all] of that (pollers started together spread out). ``BACKOFF_SCALE`` scales the two
    bounds, not the fraction: a wait ``BACKOFF_SCALE`` times as long polls as often, relative to it,
    as the real one."""
    low, high = MIN_POLL_S * BACKOFF_SCALE, max_interval_s * BACKOFF_SCALE
    interval = high if watched else min(high, max(low, POLL_FRACTION * elapsed))
    return (rng or random).uniform(interval / 2, interval)


def _translated(fn: Callable[[], T], project: str, context: str) -> Callable[[], T]:
    def run() -> T:
        try:
            return fn()
        except SdclusterError:
            raise
        except Exception as e:
            raise translate(e, project=project, context=context) from e

    return run


def call(fn: Callable[[], T], *, project: str = "", context: str = "", attempts: int = CALL_ATTEMPTS) -> T:
    """Run one API call, retrying transient failures with jittered exponential backoff."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
        wait=call_wait(),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )
    return retrying(_translated(fn, project, context))


def read_modify_write(fn: Callable[[], T], *, project: str = "", context: str = "") -> T:
    """Redo a whole read-modify-write on concurrent modification (and on transient failures)."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, Conflict | TransientError)),
        wait=wait_random_exponential(multiplier=0.1 * BACKOFF_SCALE, max=4.0 * BACKOFF_SCALE),
        stop=stop_after_attempt(RMW_ATTEMPTS),
        reraise=True,
    )
    return retrying(_translated(fn, project, context))


def until(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    hint: str = "",
    retry_on: tuple[type[SdclusterError], ...] = (TransientError,),
    max_interval_s: float = 5.0,
    on_wait: Callable[[float], None] | None = None,
    wake: threading.Event | None = None,
) -> T:
    """Poll ``probe`` until it returns a value that is not None; errors in ``retry_on`` count as "not yet".

    ``wake``: set by whoever sees the awaited thing change (a watch): the next probe runs at once
    instead of at the end of the interval; while a ``Wake`` is ``watched``, polls come only every
    ``max_interval_s``. Raises WaitTimeout after ``timeout_s`` naming ``what`` and how long it
    waited (and the last error), ``Interrupted`` at once on ``cancel()`` (also before the first
    probe: a cancelled run starts nothing).
    """
    wake = wake or threading.Event()  # without a watch, only a cancel sets it
    with _WAKES_LOCK:
        _WAKES.add(wake)
    start = time.monotonic()
    last_error: SdclusterError | None = None
    try:
        while True:
            # Cleared before the cancel check and the probe: a cancel or a change after it wakes us.
            wake.clear()
            check_cancelled(f"waiting for {what}")
            try:
                value = probe()
            except retry_on as e:
                last_error = e
                value = None
            elapsed = time.monotonic() - start
            if on_wait is not None:
                on_wait(elapsed)
            if value is not None:
                return value
            remaining = timeout_s - elapsed
            if remaining <= 0:
                break
            # The interval grows with the time already waited (POLL_FRACTION of it, jittered), so a
            # wait overshoots its event by at most that share, yet a 7-minute wait makes a few hundred
            # calls, not thousands; capped, never sleeping past the deadline, woken at once by a
            # cancel or a wake.
            watched = isinstance(wake, Wake) and wake.watched
            if wake.wait(min(remaining, poll_interval(elapsed, max_interval_s, watched=watched))):
                check_cancelled(f"waiting for {what}")
    finally:
        with _WAKES_LOCK:
            _WAKES.discard(wake)
    waited = time.monotonic() - start
    detail = f"; last error: {last_error}" if last_error else ""
    raise WaitTimeout(
        f"timed out after {waited:.1f}s waiting for {what}{detail}", hint=hint, last_error=last_error
    )
