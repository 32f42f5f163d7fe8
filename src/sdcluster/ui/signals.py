"""SIGINT, SIGTERM and SIGHUP for the CLI: each stops a run the same safe way.

- While changes are being made (an apply or destroy), the first signal prints ``Interrupted:
  finishing <what>, saving the state...`` at once and cancels every wait (``retry.cancel``): the
  changes in flight stop waiting (what they created is already recorded, pending if unconfirmed),
  nothing new starts, the state is saved and the command exits 130 within seconds.
- A second signal stops without waiting for them: their pending records are already in the state,
  so nothing is orphaned; the next ``apply`` finishes them, ``destroy`` deletes them.
- Anywhere else (refresh, the confirmation prompt) there is nothing to finish: the command stops
  at once (exit 130).
- After the run has completed ("Apply complete!"), a signal changes nothing: the command ends as it
  would have (exit 0).

A signal ignored when sdcluster started (``nohup`` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from .. import retry

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_INTERRUPTED = 130

_ING = {"create": "creating", "update": "updating", "replace": "replacing", "delete": "destroying"}


class Interrupts:
    """The process's signal handling (one per process: ``INTERRUPTS``)."""

    def __init__(self) -> None:
        self.count = 0
        self._context: Any = None  # the run context of the apply in progress
        self._finished = False

    def install(self) -> None:
        for sig in SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue
            signal.signal(sig, self._handle)

    def applying(self, context: Any) -> None:
        """Changes are about to be made with ``context`` (its ``running()`` names what is in flight)."""
        self._context = context

    def finished(self) -> None:
        """The run completed: a later signal lets the command end normally."""
        self._finished = True
        self._context = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        retry.cancel()
        if self._finished:
            return
        name = signal.Signals(signum).name
        if self._context is None:
            _say(f"\nInterrupted ({name}): stopping (nothing was being changed).")
            raise KeyboardInterrupt
        if self.count == 1:
            running = self._context.running()
            what = ", ".join(
                f"{_ING.get(action, action)} {address}" for address, action in sorted(running.items())
            )
            _say(f"\nInterrupted ({name}): finishing {what or 'the current step'}, saving the state...")
            return
        _say(
            f"\nInterrupted again ({name}): stopping now; creates in progress stay recorded as pending "
            "(sdcluster apply finishes them, sdcluster destroy deletes them)."
        )
        raise KeyboardInterrupt


def _say(text: str) -> None:
    """Straight to the file descriptor: safe inside a signal handler, whatever was being printed."""
    try:
        os.write(2, (text + "\n").encode(errors="replace"))
    except OSError:
        pass


INTERRUPTS = Interrupts()
