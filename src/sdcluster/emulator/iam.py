"""IAM, IAM Credentials, Resource Manager, Service Usage (placeholder: being written)."""

from __future__ import annotations

from typing import Any

from .core import World


def grpc_handlers(world: World) -> list[Any]:
    return []


def generate_access_token(world: World, caller: str, email: str, scopes: list[str], lifetime_s: float) -> tuple[str, float]:
    raise NotImplementedError
