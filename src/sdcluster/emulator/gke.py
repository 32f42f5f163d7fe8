"""GKE ClusterManager (placeholder: being written)."""

from __future__ import annotations

from typing import Any

from .core import World


def grpc_handlers(world: World) -> list[Any]:
    return []


def tick(world: World) -> None:
    pass
