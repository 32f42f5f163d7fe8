"""The emulator's own tests exercise one emulated API at a time, so they start with every API
sdcluster uses already enabled; a new project's APIs are tested in test_fresh_project.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..helpers import SDCLUSTER_APIS


@pytest.fixture
def make_emu(make_emu: Callable[..., Any]) -> Callable[..., Any]:
    def make(**knobs: Any) -> Any:
        knobs.setdefault("enabled_services", SDCLUSTER_APIS)
        return make_emu(**knobs)

    return make
