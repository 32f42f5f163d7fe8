"""Shared by the reliability tests: a fault-free reference run to compare every other run against."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdcluster

from .runs import KNOBS, workspace
from .worldview import Reference, creates, world_addresses, world_view


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Apply then destroy from scratch without faults, recording the emulator after each."""
    from sdcluster.emulator import Emulator

    state_path: Path = tmp_path_factory.mktemp("reference") / "state.json"
    with Emulator(**KNOBS) as emu:
        ws = workspace(emu, state_path)
        applied = sdcluster.apply(ws)
        applied_view = world_view(emu)
        assert set(applied.resources) == world_addresses(applied_view)
        destroyed = sdcluster.destroy(ws)
        return Reference(
            applied=applied_view,
            applied_addresses=frozenset(applied.resources),
            destroyed=world_view(emu),
            destroyed_addresses=frozenset(destroyed.resources),
            creates=creates(emu),
        )
