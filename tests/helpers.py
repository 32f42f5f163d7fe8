"""Small helpers shared by tests (the emulator does not import the product, so tests build clients)."""

from __future__ import annotations

from typing import Any

from sdcluster.gcp.clients import ClientFactory


def factory(emu: Any, member: str | None = None) -> ClientFactory:
    """Official clients acting as ``member`` on ``emu`` (default: the emulated project's owner)."""
    return ClientFactory(user=member or emu.world.knobs.owner, emulator=emu.address)


def with_apis(*services: str) -> list[str]:
    """A new project's APIs plus ``services``: ``make_emu(enabled_services=with_apis(...))``."""
    from sdcluster.emulator.core import NEW_PROJECT_SERVICES

    return [*NEW_PROJECT_SERVICES, *services]


# Every API sdcluster uses already on (tests of one emulated API, not of a fresh project).
SDCLUSTER_APIS = with_apis(
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
)
