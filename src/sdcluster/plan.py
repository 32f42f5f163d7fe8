"""The engine: the resource contract, plans and changes, refresh + diff, apply/destroy scheduling.

This module imports no Google or Kubernetes library and knows no concrete resource; resource modules
(iam, gke, storage, serving) implement ``Resource`` and ``stack.py`` lists them for a config.

The contract (see GUIDE.md §3):

- ``address``: stable name, e.g. ``iam.service_account.gke-admin``; ``dependencies``: addresses.
- ``read(ctx, prior) -> observed | None``: no mutation, safe to run in parallel with other reads.
- ``diff(desired, observed) -> Change``: pure; a ``noop`` carries a reason too.
- ``create/update/replace/delete(ctx, change)``: the only mutating calls. If ``create`` raises, the
  thing must not exist or must be adoptable by the next run (ALREADY_EXISTS => read and adopt).

``plan_changes`` refreshes every resource concurrently and diffs purely. ``execute`` runs the changes
as soon as their dependencies are done (independent changes concurrently), writes state after each
completed change, and on the first failure starts nothing new, lets in-flight changes finish, saves,
and raises ``ApplyError`` naming the failed address and the completed ones. Deletes run in reverse
dependency order. A second apply of an unchanged config makes zero mutating calls: every change is a
``noop`` and noops call nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .errors import ApplyError, SdclusterError, StalePlan, translate
from .state import Backend, ResourceState, State

Action = Literal["create", "update", "replace", "delete", "noop", "keep", "import"]
MUTATING: frozenset[str] = frozenset({"create", "update", "replace", "delete"})
MAX_WORKERS = 8


# --------------------------------------------------------------------------------------------------
# Changes and plans


@dataclass
class AttrDiff:
    path: str
    before: Any
    after: Any
    forces_replacement: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "forces_replacement": self.forces_replacement,
        }


@dataclass
class Change:
    address: str
    type: str
    action: Action
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diffs: list[AttrDiff] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "action": self.action,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "diffs": [d.to_dict() for d in self.diffs],
            "dependencies": list(self.dependencies),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        return cls(
            address=str(d["address"]),
            type=str(d["type"]),
            action=d["action"],
            reason=str(d.get("reason", "")),
            before=d.get("before"),
            after=d.get("after"),
            diffs=[AttrDiff(**x) for x in d.get("diffs", [])],
            dependencies=list(d.get("dependencies", [])),
            warnings=list(d.get("warnings", [])),
        )


@dataclass
class Plan:
    """What apply would do. Renders as a terraform-style diff (``str(plan)``, Jupyter HTML)."""

    changes: list[Change]
    destroy: bool = False
    lineage: str | None = None  # of the state the plan was made from (None: no state yet)
    serial: int = 0
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the config the plan was made from
    # Not serialized: what the library needs to apply an in-memory plan.
    resources: dict[str, Resource] = field(default_factory=dict, repr=False, compare=False)
    context: Any = field(default=None, repr=False, compare=False)

    FORMAT: ClassVar[str] = "sdcluster-plan/1"

    @property
    def has_changes(self) -> bool:
        return any(c.mutating or c.action in ("keep", "import") for c in self.changes)

    def counts(self) -> dict[str, int]:
        add = sum(1 for c in self.changes if c.action in ("create", "replace"))
        change = sum(1 for c in self.changes if c.action == "update")
        destroy = sum(1 for c in self.changes if c.action in ("delete", "replace"))
        imported = sum(1 for c in self.changes if c.action == "import")
        return {"import": imported, "add": add, "change": change, "destroy": destroy}

    def to_dict(self) -> dict[str, Any]:
        body = self._body()
        return {"format": self.FORMAT, "digest": _digest(body), **body}

    def _body(self) -> dict[str, Any]:
        return {
            "destroy": self.destroy,
            "lineage": self.lineage,
            "serial": self.serial,
            "summary": self.counts(),
            "warnings": list(self.warnings),
            "config": self.config,
            "changes": [c.to_dict() for c in self.changes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        if not isinstance(d, Mapping) or d.get("format") != cls.FORMAT:
            raise StalePlan(
                "this file is not a plan saved by this sdcluster version",
                hint="make a new one: sdcluster plan --out plan.json",
            )
        body = {k: v for k, v in d.items() if k not in ("format", "digest")}
        if d.get("digest") != _digest(body):
            raise StalePlan(
                "the saved plan was modified after it was saved (its digest does not match)",
                hint="make a new one: sdcluster plan --out plan.json",
            )
        try:
            return cls(
                changes=[Change.from_dict(c) for c in d["changes"]],
                destroy=bool(d.get("destroy", False)),
                lineage=d.get("lineage"),
                serial=int(d.get("serial", 0)),
                warnings=list(d.get("warnings", [])),
                config=dict(d.get("config") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise StalePlan(
                f"the saved plan is malformed: {e!r}", hint="make a new one: sdcluster plan --out plan.json"
            ) from e

    def __str__(self) -> str:
        from .render import plan_text

        return plan_text(self)

    def _repr_html_(self) -> str:
        from .render import plan_html

        return plan_html(self)


# --------------------------------------------------------------------------------------------------
# Progress events


@dataclass
class Event:
    kind: Literal["refresh", "start", "progress", "done", "failed"]
    address: str
    action: str = ""
    message: str = ""
    elapsed: float = 0.0


Listener = Callable[[Event], None]


class Context:
    """What resources get at run time. Subclasses (stack.GcpContext) add clients and config.

    Resources report progress on long waits with ``ctx.report(address, "waiting for operation")``;
    they never print.
    """

    def __init__(self, listener: Listener | None = None) -> None:
        self.listener = listener
        # True while planning/applying a destroy (a resource may skip work its parent's deletion does).
        self.destroying = False
        self._starts: dict[str, float] = {}
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        if self.listener is not None:
            self.listener(event)

    def report(self, address: str, message: str) -> None:
        with self._lock:
            start = self._starts.get(address, time.monotonic())
        self.emit(Event("progress", address, message=message, elapsed=time.monotonic() - start))

    def _started(self, address: str) -> None:
        with self._lock:
            self._starts[address] = time.monotonic()

    def _elapsed(self, address: str) -> float:
        with self._lock:
            return time.monotonic() - self._starts.get(address, time.monotonic())


# --------------------------------------------------------------------------------------------------
# The resource contract


class Resource:
    """Base of every managed thing. Subclasses set ``type`` and implement read/create/delete."""

    type: ClassVar[str] = "resource"
    # Attributes whose change cannot be made in place (the plan shows "forces replacement").
    replace_on: ClassVar[frozenset[str]] = frozenset()
    # Attributes shown in the plan but never diffed (server-assigned, informative).
    informative: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, address: str, desired: dict[str, Any], dependencies: Iterable[str] = ()) -> None:
        self.address = address
        self._desired = desired
        self.dependencies: tuple[str, ...] = tuple(dependencies)
        # Non-empty: the reason this resource is kept (not deleted) on destroy.
        self.retain_on_destroy = ""

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
    def read(self, ctx: Any, prior: ResourceState | None) -> dict[str, Any] | None:
        raise NotImplementedError

    def warnings(self, ctx: Any, observed: Mapping[str, Any] | None) -> list[str]:
        return []

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"{self.type} {self.name} exists and matches"

    def diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        """Pure. Compares only the attributes sdcluster manages (the keys of ``desired``)."""
        if observed is None:
            return Change(
                self.address,
                self.type,
                "create",
                f"{self.type} {self.name} does not exist",
                before=None,
                after=dict(desired),
                dependencies=list(self.dependencies),
            )
        diffs = [
            AttrDiff(k, observed.get(k), v, k in self.replace_on)
            for k, v in desired.items()
            if k not in self.informative and not _same(observed.get(k), v)
        ]
        if not diffs:
            return Change(
                self.address,
                self.type,
                "noop",
                self.noop_reason(observed),
                before=dict(observed),
                after=dict(observed),
                dependencies=list(self.dependencies),
            )
        replace = any(d.forces_replacement for d in diffs)
        names = ", ".join(d.path for d in diffs)
        return Change(
            self.address,
            self.type,
            "replace" if replace else "update",
            f"{names} {'cannot be changed in place' if replace else 'changed'}",
            before=dict(observed),
            after={**observed, **desired},
            diffs=diffs,
            dependencies=list(self.dependencies),
        )

    # ---- mutation ------------------------------------------------------------------------------
    def create(self, ctx: Any, change: Change) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, ctx: Any, change: Change) -> dict[str, Any]:
        raise NotImplementedError(f"{self.type} cannot be updated in place")

    def replace(self, ctx: Any, change: Change) -> dict[str, Any]:
        self.delete(ctx, change)
        return self.create(ctx, change)

    def delete(self, ctx: Any, change: Change) -> None:
        raise NotImplementedError


def _digest(body: Mapping[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# --------------------------------------------------------------------------------------------------
# Plan = concurrent refresh + pure diff


def plan_changes(
    resources: list[Resource],
    state: State | None,
    ctx: Context,
    *,
    destroy: bool = False,
    orphan: Callable[[str, ResourceState], Resource | None] | None = None,
) -> tuple[list[Change], list[str], dict[str, Resource]]:
    """Refresh all resources concurrently and diff. Returns (changes, warnings, resources by address).

    Resources recorded in state but no longer wanted (``orphan`` rebuilds them from state) are
    planned for deletion.
    """
    by_address = {r.address: r for r in resources}
    if state is not None and orphan is not None:
        for address, rstate in state.resources.items():
            if address not in by_address:
                r = orphan(address, rstate)
                if r is not None:
                    by_address[address] = r
    wanted = {r.address for r in resources}

    def refresh(r: Resource) -> tuple[dict[str, Any] | None, list[str]]:
        ctx.emit(Event("refresh", r.address, message="refreshing"))
        prior = state.resources.get(r.address) if state else None
        try:
            observed = r.read(ctx, prior)
        except SdclusterError:
            raise
        except Exception as e:
            raise translate(e, context=f"reading {r.address}") from e
        warns = [] if destroy else r.warnings(ctx, observed)
        return observed, warns

    results: dict[str, tuple[dict[str, Any] | None, list[str]]] = {}
    ordered = sorted(by_address.values(), key=lambda r: r.address)
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS * 2, len(ordered)))) as pool:
        futures = {r.address: pool.submit(refresh, r) for r in ordered}
        for address, fut in futures.items():
            results[address] = fut.result()

    changes: list[Change] = []
    warnings: list[str] = []
    for r in _topological(list(by_address.values())):
        observed, warns = results[r.address]
        warnings.extend(warns)
        managed = state is not None and r.address in state.resources
        if destroy or r.address not in wanted:
            changes.append(
                _destroy_change(
                    r, observed, orphaned=r.address not in wanted and not destroy, managed=managed
                )
            )
            continue
        change = r.diff(r.desired(), observed)
        change.warnings.extend(warns)
        if observed is not None and not managed and not r.retain_on_destroy:
            # It exists but sdcluster never recorded it (made by hand, by the tutorial's Terraform, or by
            # a run that died before saving): say so, because from now on destroy will delete it.
            adopt = (
                "exists but is not in the state: it will be adopted, and `sdcluster destroy` will delete it"
            )
            if change.action == "noop":
                change.action = "import"
                change.reason = f"{r.type} {r.name} {adopt}"
            else:
                change.reason = f"{change.reason}; it {adopt}"
        changes.append(change)
    return changes, warnings, by_address


def _destroy_change(r: Resource, observed: dict[str, Any] | None, orphaned: bool, managed: bool) -> Change:
    if observed is None:
        return Change(
            r.address, r.type, "noop", f"{r.type} {r.name} is already gone", dependencies=list(r.dependencies)
        )
    if not managed:
        # Never delete what sdcluster did not record as its own: no surprise deletions.
        return Change(
            r.address,
            r.type,
            "noop",
            f"{r.type} {r.name} exists but is not in the state (not managed by sdcluster): left alone",
            dependencies=list(r.dependencies),
        )
    if r.retain_on_destroy:
        return Change(
            r.address,
            r.type,
            "keep",
            r.retain_on_destroy,
            before=dict(observed),
            after=dict(observed),
            dependencies=list(r.dependencies),
        )
    reason = "no longer in the configuration" if orphaned else "destroy requested"
    return Change(
        r.address, r.type, "delete", reason, before=dict(observed), dependencies=list(r.dependencies)
    )


def _topological(resources: list[Resource]) -> list[Resource]:
    """Dependencies first; ties broken by address so plans render stably."""
    by_address = {r.address: r for r in resources}
    done: set[str] = set()
    out: list[Resource] = []

    def visit(r: Resource, path: tuple[str, ...]) -> None:
        if r.address in done:
            return
        if r.address in path:
            raise SdclusterError(f"dependency cycle: {' -> '.join((*path, r.address))}")
        for d in sorted(r.dependencies):
            if d in by_address:
                visit(by_address[d], (*path, r.address))
        done.add(r.address)
        out.append(r)

    for r in sorted(resources, key=lambda r: r.address):
        visit(r, ())
    return out


# --------------------------------------------------------------------------------------------------
# Apply / destroy


def check_fresh(plan: Plan, current: State | None) -> None:
    """Refuse a plan made from another state than the current one (StalePlan)."""
    lineage = current.lineage if current else None
    serial = current.serial if current else 0
    if plan.lineage != lineage or plan.serial != serial:
        raise StalePlan(
            f"the plan was made from state serial {plan.serial} (lineage {plan.lineage}), but the state is now "
            f"serial {serial} (lineage {lineage})",
            hint="the state changed since the plan was made; make a new plan: sdcluster plan --out plan.json",
        )


def execute(
    changes: list[Change],
    resources: Mapping[str, Resource],
    ctx: Context,
    backend: Backend,
    state: State,
    *,
    outputs: Callable[[State], dict[str, Any]] | None = None,
) -> State:
    """Run ``changes``; state is written after each completed change. Returns the final state."""
    state_lock = threading.Lock()
    deps = _change_dependencies(changes)
    pending = {c.address: c for c in changes}
    done: set[str] = set()
    completed: list[str] = []
    failure: tuple[str, BaseException] | None = None

    def record(change: Change, attrs: dict[str, Any] | None) -> None:
        with state_lock:
            r = resources[change.address]
            if attrs is None:
                state.resources.pop(change.address, None)
            else:
                state.resources[change.address] = ResourceState(
                    type=r.type, id=r.state_id(attrs), attributes=attrs, dependencies=list(r.dependencies)
                )
            backend.write(state)

    def run(change: Change) -> None:
        r = resources[change.address]
        ctx._started(change.address)
        if change.action in ("noop", "keep", "import"):
            # No API call. A noop still records what was observed (adopts what exists); a kept
            # resource is forgotten, so destroy leaves no entry behind.
            record(change, change.after if change.action in ("noop", "import") else None)
            return
        ctx.emit(Event("start", change.address, change.action))
        try:
            if change.action == "create":
                attrs = r.create(ctx, change)
            elif change.action == "update":
                attrs = r.update(ctx, change)
            elif change.action == "replace":
                attrs = r.replace(ctx, change)
            else:
                r.delete(ctx, change)
                attrs = None
        except SdclusterError:
            raise
        except Exception as e:
            raise translate(e, context=change.address) from e
        record(change, attrs)
        ctx.emit(Event("done", change.address, change.action, elapsed=ctx._elapsed(change.address)))

    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        running: dict[Future[None], Change] = {}
        while pending or running:
            if failure is None:
                ready = [c for a, c in pending.items() if deps[a] <= done]
                for c in ready:
                    del pending[c.address]
                    running[pool.submit(run, c)] = c
            if not running:
                break  # failure: nothing in flight, nothing more to start
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                c = running.pop(fut)
                err = fut.exception()
                if err is None:
                    done.add(c.address)
                    if c.mutating:
                        completed.append(c.address)
                elif failure is None:
                    failure = (c.address, err)
                    ctx.emit(Event("failed", c.address, c.action, message=str(err)))
                else:
                    ctx.emit(Event("failed", c.address, c.action, message=str(err)))

    if outputs is not None and failure is None:
        with state_lock:
            state.outputs = outputs(state)
            backend.write(state)

    if failure is not None:
        address, err = failure
        cause = err if isinstance(err, SdclusterError) else translate(err)
        done_s = ", ".join(completed) if completed else "none"
        raise ApplyError(
            f"{address} failed: {cause}\ncompleted before the failure: {done_s}",
            hint=(cause.hint + "; " if cause.hint else "")
            + "state was saved; fix the cause and run apply again to continue",
            address=address,
            completed=completed,
            cause=cause,
        ) from err
    return state


def _change_dependencies(changes: list[Change]) -> dict[str, set[str]]:
    """Which changes each change waits for. Creates/updates wait for their dependencies' changes;
    deletes wait for the deletes of everything that depends on them (reverse order)."""
    in_plan = {c.address: c for c in changes}
    deps: dict[str, set[str]] = {c.address: set() for c in changes}
    for c in changes:
        if c.action in ("noop", "keep", "import"):
            continue
        if c.action == "delete":
            for other in changes:
                if c.address in other.dependencies and other.action in ("delete", "replace"):
                    deps[c.address].add(other.address)
        else:
            for d in c.dependencies:
                if d in in_plan and in_plan[d].action not in ("delete",):
                    deps[c.address].add(d)
    return deps
