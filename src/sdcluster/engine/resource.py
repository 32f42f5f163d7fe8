"""The resource contract, the run context resources receive, and the stack that lists them.

Every managed thing is a ``Resource``, generic over the context type its provider gives it:

- ``address``: stable name, e.g. ``iam.service_account.gke-admin``; ``dependencies``: addresses;
- ``read(ctx, prior) -> observed | None``: no mutation, safe to run in parallel with other reads;
- ``diff(desired, observed) -> Change``: pure; a ``noop`` carries a reason too;
- ``create/update/replace/delete(ctx, change)``: the only mutating calls. The engine records a create
  as *pending* in the state before calling it, so a run killed at any point leaves a record the next
  run (which adopts what exists, re-creates what does not) and destroy (which deletes it) can find.
  A long create records what it learns as soon as it learns it: ``ctx.checkpoint(address, attrs)``
  (e.g. the cluster right after CreateCluster returned its operation). If ``create`` raises, the
  thing must not exist or must be adoptable by the next run: ALREADY_EXISTS of something sdcluster
  made (``owned``) is read and adopted; anything else with our name is raised as a conflict;
- ``owned(observed)``: pure; whether what exists carries sdcluster's mark (its labels, a description
  marker, its field manager). Something that exists but is not in the state is adopted silently only
  if it is owned (or recorded as a pending create); anything else is a conflict the plan shows and
  apply refuses unless told to adopt (``sdcluster import ADDRESS ID``, ``apply --adopt``);
- ``from_state(provider, address, record)``: rebuild the resource from its state record alone, so a
  resource the configuration no longer names can still be deleted. Classes are found by their state
  ``type`` in a registry every subclass joins by declaring ``type`` (or ``state_types``);
- ``replace_order``: whether a replacement deletes first or creates first (the plan shows which).

Example::

    class Thing(Resource[Context]):
        type = "test.thing"
        def read(self, ctx, prior): ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from ..state import ResourceState, State
from .model import Action, AttrDiff, Change, Event, Listener, Plan, ReplaceOrder


class Context:
    """What resources get at run time. Providers subclass it (gcp.context.GcpContext adds clients).

    Resources report progress on long waits with ``ctx.report(address, "waiting for operation")``;
    they never print. A create records partial progress with ``ctx.checkpoint(address, attributes)``.
    """

    def __init__(self, listener: Listener | None = None) -> None:
        self.listener = listener
        # True while planning/applying a destroy (a resource may skip work its parent's deletion does).
        self.destroying = False
        self._starts: dict[str, float] = {}
        self._running: dict[str, str] = {}  # address -> action, while a mutating change runs
        self._lock = threading.Lock()
        # Set by the executor while it runs: saves a change's partial progress (``checkpoint``).
        self.on_checkpoint: Callable[[str, dict[str, Any]], None] | None = None

    def running(self) -> dict[str, str]:
        """The mutating changes in flight: address -> action (``create``, ``delete``, ...)."""
        with self._lock:
            return dict(self._running)

    def begin(self, address: str, action: str) -> None:
        with self._lock:
            self._running[address] = action

    def end(self, address: str) -> None:
        with self._lock:
            self._running.pop(address, None)

    def emit(self, event: Event) -> None:
        if self.listener is not None:
            self.listener(event)

    def report(self, address: str, message: str) -> None:
        with self._lock:
            start = self._starts.get(address, time.monotonic())
        self.emit(Event("progress", address, message=message, elapsed=time.monotonic() - start))

    def detail(self, address: str, message: str) -> None:
        """A progress line for verbose output only (e.g. one file of an upload done)."""
        self.emit(Event("detail", address, message=message, elapsed=self.elapsed(address)))

    def checkpoint(self, address: str, attributes: Mapping[str, Any]) -> None:
        """Record a change's partial progress in the state now (e.g. a cluster whose create was
        accepted, a Service applied before its load balancer is up): if the change then fails or the
        run dies, the state still names what exists, so destroy deletes it and the next plan sees it.
        The attributes are merged into the change's record; a create's stays pending until it
        returns. Outside an apply it does nothing.

        Example: ``ctx.checkpoint(self.address, {"location": zone, "operation": op.name})`` right
        after CreateCluster returned its operation."""
        hook = self.on_checkpoint
        if hook is not None:
            hook(address, dict(attributes))

    def absent_because(self, error: Exception) -> str | None:
        """Whether a read that raised ``error`` means "absent, for a reason apply fixes first" (e.g.
        an API the apply enables): the reason the plan gives, or None to let the error stand."""
        return None

    def started(self, address: str) -> None:
        with self._lock:
            self._starts[address] = time.monotonic()

    def elapsed(self, address: str) -> float:
        with self._lock:
            return time.monotonic() - self._starts.get(address, time.monotonic())


C = TypeVar("C", bound=Context)

# state type -> the class that rebuilds resources of that type from their records
_REGISTRY: dict[str, type[Resource[Any]]] = {}


def resource_class(state_type: str) -> type[Resource[Any]] | None:
    """The class registered for a state record's ``type`` (None: unknown, e.g. from a newer version)."""
    return _REGISTRY.get(state_type)


class Resource(Generic[C]):
    """Base of every managed thing. Subclasses set ``type`` and implement read/create/delete."""

    type: ClassVar[str] = "resource"
    # State types this class rebuilds (default: its ``type``); kinds of one class list theirs.
    state_types: ClassVar[tuple[str, ...]] = ()
    # Attributes whose change cannot be made in place (the plan shows "forces replacement").
    replace_on: ClassVar[frozenset[str]] = frozenset()
    # Attributes shown in the plan but never diffed (server-assigned, informative).
    informative: ClassVar[frozenset[str]] = frozenset()
    replace_order: ClassVar[ReplaceOrder] = ReplaceOrder.DELETE_FIRST

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("state_types") or (
            (cls.__dict__["type"],) if "type" in cls.__dict__ else ()
        )
        for t in declared:
            _REGISTRY[t] = cls

    def __init__(self, address: str, desired: dict[str, Any], dependencies: Iterable[str] = ()) -> None:
        self.address = address
        self._desired = desired
        self.dependencies: tuple[str, ...] = tuple(dependencies)
        # Non-empty: the reason this resource is kept (not deleted) on destroy. It stays in the state
        # (so a later destroy can still delete it), unless forget_on_destroy says it is not ours to
        # delete ever (an enabled API): then destroy forgets it.
        self.retain_on_destroy = ""
        self.forget_on_destroy = False

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> Self | None:
        """Rebuild from a state record (to delete what the configuration no longer names)."""
        return None

    @classmethod
    def upgrade_record(cls, record: ResourceState, state: State) -> None:
        """Bring a record written by an older version up to date, in place (e.g. an id that did not
        name its project yet). Default: nothing to do."""

    @classmethod
    def current_address(cls, address: str, record: ResourceState) -> str:
        """The address this version gives the record an older version stored at ``address`` (e.g.
        a shorter form). Default: the same."""
        return address

    @property
    def name(self) -> str:
        prefix = f"{self.type}."
        return (
            self.address[len(prefix) :]
            if self.address.startswith(prefix)
            else self.address.rsplit(".", 1)[-1]
        )

    def desired(self) -> dict[str, Any]:
        return dict(self._desired)

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return str(attributes.get("id") or self.name)

    # ---- no mutation ---------------------------------------------------------------------------
    def read(self, ctx: C, prior: ResourceState | None) -> dict[str, Any] | None:
        raise NotImplementedError

    def warnings(self, ctx: C, observed: Mapping[str, Any] | None) -> list[str]:
        return []

    def owned(self, observed: Mapping[str, Any]) -> bool:
        """Pure: whether what exists was made by sdcluster (it carries sdcluster's mark). Default:
        no mark, so only a pending record of ours makes something unrecorded ours."""
        return False

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"{self.type} {self.name} exists and matches"

    def change(self, action: Action, reason: str, **fields: Any) -> Change:
        """A change of this resource (its address, type, dependencies and replacement order)."""
        return Change(
            self.address,
            self.type,
            action,
            reason,
            dependencies=list(self.dependencies),
            replace_order=self.replace_order,
            **fields,
        )

    def diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        """Pure. Compares only the attributes sdcluster manages (the keys of ``desired``)."""
        if observed is None:
            return self.change(
                Action.CREATE, f"{self.type} {self.name} does not exist", before=None, after=dict(desired)
            )
        diffs = [
            AttrDiff(k, observed.get(k), v, k in self.replace_on)
            for k, v in desired.items()
            if k not in self.informative and not same(observed.get(k), v)
        ]
        if not diffs:
            return self.change(
                Action.NOOP, self.noop_reason(observed), before=dict(observed), after=dict(observed)
            )
        forced = [d.path for d in diffs if d.forces_replacement]
        if forced:
            # Only the attributes that force it are named: the others would change in place.
            reason = f"{', '.join(forced)} cannot be changed in place"
        else:
            reason = f"{', '.join(d.path for d in diffs)} changed"
        return self.change(
            Action.REPLACE if forced else Action.UPDATE,
            reason,
            before=dict(observed),
            after={**observed, **desired},
            diffs=diffs,
        )

    # ---- mutation ------------------------------------------------------------------------------
    def create(self, ctx: C, change: Change) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, ctx: C, change: Change) -> dict[str, Any]:
        raise NotImplementedError(f"{self.type} cannot be updated in place")

    def replace(self, ctx: C, change: Change) -> dict[str, Any]:
        """Replace in the declared order; a create-first resource must make the new one not collide."""
        if self.replace_order is ReplaceOrder.CREATE_FIRST:
            attrs = self.create(ctx, change)
            self.delete(ctx, change)
            return attrs
        self.delete(ctx, change)
        return self.create(ctx, change)

    def delete(self, ctx: C, change: Change) -> None:
        raise NotImplementedError


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class Stack(Generic[C]):
    """The resources of one configuration, how to rebuild one only the state knows, the outputs, and
    the run context. Providers subclass it; tests subclass it with in-memory resources."""

    def resources(self) -> list[Resource[C]]:
        raise NotImplementedError

    def orphan(self, address: str, record: ResourceState) -> Resource[C] | None:
        """A resource recorded in state but no longer wanted, rebuilt by its class so it can be deleted."""
        cls = resource_class(record.type)
        return cls.from_state(self, address, record) if cls is not None else None

    def scope(self) -> str:
        """What a state of this stack is bound to (a GCP project): recorded in the state, and a state
        of another scope is refused. "" for none."""
        return ""

    def upgrade(self, state: State) -> None:
        """Bring a state written by an older version up to date, in place (its records' classes
        migrate them; providers also infer what older states did not record)."""
        renames = {}
        for address, record in state.resources.items():
            cls = resource_class(record.type)
            if cls is not None:
                cls.upgrade_record(record, state)
                if (current := cls.current_address(address, record)) != address:
                    renames[address] = current
        if renames:
            state.rename(renames)

    def identity_errors(self, state: State) -> list[str]:
        """Records whose identity contradicts the state's scope ("ADDRESS: why"), e.g. an id that
        names another project. The state is refused while there are any."""
        return []

    def outputs(self, state: State) -> dict[str, Any]:
        return {}

    def notes(self, state: State) -> list[str]:
        """What the user should do next after an apply (the CLI prints them after the summary)."""
        return []

    def details(self, plan: Plan) -> dict[str, Any]:
        """What ``status`` shows beyond each resource's line (e.g. the cluster and its workload)."""
        return {}

    def prefetch(self) -> None:
        """Start slow look-ups that ``cost`` needs (prices) while the plan refreshes the resources."""

    def cost(self, plan: Plan, state: State | None, *, now: bool = False) -> dict[str, Any] | None:
        """The itemised hourly cost of what the plan would run (``now``: of what runs now), as plain
        data for ``Plan.cost`` and ``status``; None when the provider does not estimate it."""
        return None

    def context(self, listener: Listener | None) -> C:
        raise NotImplementedError
