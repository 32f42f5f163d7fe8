"""Kubernetes API per cluster (placeholder: being written)."""

from __future__ import annotations

from typing import Any

from .core import World


class Hub:
    def __init__(self, world: World) -> None:
        self.world = world

    def start_cluster(self, key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        raise NotImplementedError

    def update_nodes(self, key: str, nodes: list[dict[str, Any]]) -> None:
        pass

    def stop_cluster(self, key: str) -> None:
        pass

    def resume(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass
