from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def make_emu() -> Iterator[Callable[..., Any]]:
    """Start emulators with the given knobs; all are stopped at the end of the test.

    Example: ``emu = make_emu(operation_s=0.2)``; ``factory(emu, "user:x@y.com").iam_admin()`` (tests/helpers.py).
    """
    from sdcluster.emulator import Emulator

    started: list[Emulator] = []

    def make(**knobs: Any) -> Emulator:
        knobs.setdefault("operation_s", 0.2)
        knobs.setdefault("rollout_s", 0.2)
        knobs.setdefault("lb_s", 0.2)
        knobs.setdefault("kubelet_scale", 0.01)  # a 10 s probe period is 0.1 s
        knobs.setdefault("tfserving_scale", 0.01)  # TF Serving polls every 10 ms, retries after 0.6 s
        knobs.setdefault("model_load_s", 0.1)
        knobs.setdefault("autoscale_s", 0.2)
        emu = Emulator(**knobs).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(make_emu: Callable[..., Any]) -> Any:
    """A fresh emulator with short delays (project demo-proj, owner user:demo@example.com)."""
    return make_emu()
