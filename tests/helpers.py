"""Small helpers shared by tests (the emulator does not import the product, so tests build clients)."""

from __future__ import annotations

from typing import Any

from sdcluster.gcp.clients import ClientFactory


def factory(emu: Any, member: str | None = None) -> ClientFactory:
    """Official clients acting as ``member`` on ``emu`` (default: the emulated project's owner)."""
    return ClientFactory(user=member or emu.world.knobs.owner, emulator=emu.address)
