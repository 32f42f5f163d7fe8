"""Retry and wait policies, classified by error kind (built on tenacity). One policy per kind:

- ``call(fn)``: one API call; retries transient failures (UNAVAILABLE, 429, deadline) with jittered
  exponential backoff, a few times. Library errors are translated first (errors.translate).
- ``read_modify_write(fn)``: an IAM policy edit; redoes the whole read-modify-write on a concurrent
  change (ABORTED / etag mismatch), Google's IAM retry guidance.
- ``until(fn, ...)``: wait for something to become true (operation DONE, IAM propagation, rollout),
  polling with capped jittered backoff up to a deadline, never a fixed sleep.

Example::

    sa = retry.call(lambda: client.get_service_account(name=n), project=p)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import Conflict, SdclusterError, TransientError, WaitTimeout, translate

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
POLL_FRACTION = 0.1

# Tests shrink the backoff scale so retries stay fast; production keeps 1.0.
BACKOFF_SCALE = 1.0


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
    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
        wait=wait_random_exponential(multiplier=0.2 * BACKOFF_SCALE, max=CALL_MAX_WAIT_S * BACKOFF_SCALE),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )
    return retrying(_translated(fn, project, context))


def read_modify_write(fn: Callable[[], T], *, project: str = "", context: str = "") -> T:
    """Redo a whole read-modify-write on concurrent modification (and on transient failures)."""
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
) -> T:
    """Poll ``probe`` until it returns a value that is not None; errors in ``retry_on`` count as "not yet".

    Raises WaitTimeout after ``timeout_s`` naming ``what`` and how long it waited (and the last error).
    """
    start = time.monotonic()
    last_error: SdclusterError | None = None
    while True:
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
        # The interval grows with the time already waited (about a tenth of it, jittered), so a wait
        # overshoots its event by ~10% at most, yet a 7-minute wait makes only a few dozen calls;
        # capped, and never sleeping past the deadline.
        interval = min(max_interval_s, max(MIN_POLL_S, POLL_FRACTION * elapsed)) * BACKOFF_SCALE
        time.sleep(min(remaining, random.uniform(interval / 2, interval)))
    waited = time.monotonic() - start
    detail = f"; last error: {last_error}" if last_error else ""
    raise WaitTimeout(
        f"timed out after {waited:.1f}s waiting for {what}{detail}", hint=hint, last_error=last_error
    )
