"""What sdcluster manages for a configuration: the list of resources, how to rebuild one that only
the state still knows (to delete it), the outputs, and the run context resources receive.

The engine (plan.py) never imports a resource module; this module is where they meet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .plan import Context, Listener, Resource
from .state import ResourceState, State

if TYPE_CHECKING:
    from .config import Config


class Stack:
    """A set of resources for one configuration. Tests subclass it with in-memory resources."""

    def resources(self) -> list[Resource]:
        raise NotImplementedError

    def orphan(self, address: str, rstate: ResourceState) -> Resource | None:
        """Rebuild a resource recorded in state but no longer wanted, so it can be deleted."""
        return None

    def outputs(self, state: State) -> dict[str, Any]:
        return {}

    def context(self, listener: Listener | None) -> Context:
        return Context(listener)


class GcpStack(Stack):
    """The real thing: IAM, APIs, cluster, bucket and serving objects for ``config``."""

    def __init__(self, config: Config, emulator: str | None = None) -> None:
        self.config = config
        self.emulator = emulator

    def resources(self) -> list[Resource]:
        return []
