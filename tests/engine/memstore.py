"""In-memory resources for engine tests (the engine is tested here, not GCP: see tests/integration)."""

from __future__ import annotations

import threading
import time
from typing import Any

from sdcluster.engine import Change, Context, Resource, Stack
from sdcluster.state import ResourceState, State


class Store:
    """A thread-safe dict standing in for a cloud, with a call log and injectable failures."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, str] = {}  # address -> "create"/"update"/"delete" to fail once
        self.delay: dict[str, float] = {}
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.timeline: list[tuple[str, str, float]] = []

    def log(self, verb: str, address: str) -> None:
        with self.lock:
            self.calls.append((verb, address))

    @property
    def mutations(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "read"]


MARK = "made_by"  # what Thing.create stamps on what it makes (like sdcluster's labels)


class Thing(Resource):
    type = "test.thing"
    replace_on = frozenset({"flavor"})

    def __init__(self, store: Store, name: str, deps: tuple[str, ...] = (), **attrs: Any) -> None:
        super().__init__(f"test.thing.{name}", {"size": 1, "flavor": "plain", **attrs}, deps)
        self.store = store

    def read(self, ctx: Any, prior: ResourceState | None) -> dict[str, Any] | None:
        self.store.log("read", self.address)
        with self.store.lock:
            obj = self.store.objects.get(self.address)
            return dict(obj) if obj is not None else None

    def _mutate(self, verb: str, attrs: dict[str, Any] | None) -> dict[str, Any]:
        s = self.store
        with s.lock:
            s.active += 1
            s.max_active = max(s.max_active, s.active)
            s.timeline.append(("start", self.address, time.monotonic()))
        try:
            time.sleep(s.delay.get(self.address, 0.0))
            s.log(verb, self.address)
            if s.fail.get(self.address) == verb:
                del s.fail[self.address]
                raise RuntimeError(f"boom while {verb} {self.address}")
            with s.lock:
                if attrs is None:
                    s.objects.pop(self.address, None)
                    return {}
                s.objects[self.address] = dict(attrs)
                return dict(attrs)
        finally:
            with s.lock:
                s.active -= 1
                s.timeline.append(("end", self.address, time.monotonic()))

    def create(self, ctx: Any, change: Change) -> dict[str, Any]:
        return self._mutate("create", {**(change.after or {}), MARK: "sdcluster"})

    def owned(self, observed: Any) -> bool:
        return bool(observed.get(MARK) == "sdcluster")

    def update(self, ctx: Any, change: Change) -> dict[str, Any]:
        return self._mutate("update", change.after)

    def replace(self, ctx: Any, change: Change) -> dict[str, Any]:
        self._mutate("delete", None)
        return self._mutate("create", change.after)

    def delete(self, ctx: Any, change: Change) -> None:
        self._mutate("delete", None)


class MemStack(Stack):
    def __init__(self, store: Store, things: list[Thing]) -> None:
        self.store = store
        self.things = things

    def resources(self) -> list[Resource]:
        return list(self.things)

    def orphan(self, address: str, rstate: ResourceState) -> Resource | None:
        return Thing(self.store, address.rsplit(".", 1)[-1], tuple(rstate.dependencies), **rstate.attributes)

    def outputs(self, state: State) -> dict[str, Any]:
        return {"count": len(state.resources)}

    def context(self, listener: Any) -> Context:
        return Context(listener)
