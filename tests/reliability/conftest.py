"""Shared by the reliability tests: a fault-free reference run to compare every other run against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sdcluster

from .worldview import PROJECT, USER, world_addresses, world_view

KNOBS: dict[str, Any] = {"operation_s": 0.2, "rollout_s": 0.2, "lb_s": 0.2}


@dataclass(frozen=True)
class Reference:
    """The emulator after a fault-free apply and after the destroy that follows, plus the state's addresses."""

    applied: dict[str, Any]
    applied_addresses: frozenset[str]
    destroyed: dict[str, Any]
    destroyed_addresses: frozenset[str]


def workspace(emu: Any, state_path: Path) -> Any:
    config = sdcluster.Config.build(project=PROJECT, user=USER, state={"path": str(state_path)})
    return sdcluster.Workspace.open(config, emulator=emu.address)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    from sdcluster.emulator import Emulator

    ws_dir = tmp_path_factory.mktemp("reference")
    with Emulator(**KNOBS) as emu:
        ws = workspace(emu, ws_dir / "state.json")
        applied = sdcluster.apply(ws)
        applied_view = world_view(emu)
        assert set(applied.resources) == world_addresses(applied_view)
        destroyed = sdcluster.destroy(ws)
        destroyed_view = world_view(emu)
    yield Reference(
        applied=applied_view,
        applied_addresses=frozenset(applied.resources),
        destroyed=destroyed_view,
        destroyed_addresses=frozenset(destroyed.resources),
    )
