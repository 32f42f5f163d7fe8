from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The files that take minutes (real subprocesses against emulators with delays), longest first: the
# suite runs one file per worker (pyproject.toml: -n 2 --dist loadfile), and a long file started
# last would run alone at the end.
SLOW_FILES = (
    "tests/reliability/test_signals.py",
    "tests/reliability/test_crash.py",
    "tests/kubectl/test_writes.py",
    "tests/gcloud/test_tutorial.py",
    "tests/reliability/test_secrets.py",
    "tests/test_demo.py",
    "tests/gcloud/test_storage.py",
    "tests/reliability/test_transient_faults.py",
    "tests/kubectl/test_reads.py",
    "tests/reliability/test_concurrency.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow files first (a stable sort: within a file, the order is the file's)."""

    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, f in enumerate(SLOW_FILES) if path.endswith(f)), len(SLOW_FILES))

    items.sort(key=rank)


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
