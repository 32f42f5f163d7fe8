"""Plan = concurrent refresh + pure diff; and the check that a saved plan still fits the state.

``plan_changes`` reads every resource concurrently (reads never mutate), then diffs each in
dependency order. Resources the state records but the configuration no longer names are rebuilt by
the stack (``Stack.orphan``) and planned for deletion. Something that exists but is not in the state
is shown as adopted (imported): from then on destroy will delete it. Destroy never deletes what the
state does not record.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import SdclusterError, StalePlan, translate
from ..state import ResourceState, State
from .model import UNREADABLE, Action, Change, Event, Plan
from .resource import Context, Resource

C = TypeVar("C", bound=Context)
MAX_WORKERS = 8

ADOPT = "exists but is not in the state: it will be adopted, and `sdcluster destroy` will delete it"


def plan_changes(
    resources: list[Resource[C]],
    state: State | None,
    ctx: C,
    *,
    destroy: bool = False,
    orphan: Callable[[str, ResourceState], Resource[C] | None] | None = None,
) -> tuple[list[Change], list[str], dict[str, Resource[C]]]:
    """Refresh all resources concurrently and diff. Returns (changes, warnings, resources by address)."""
    by_address = {r.address: r for r in resources}
    if state is not None and orphan is not None:
        for address, record in state.resources.items():
            if address not in by_address:
                r = orphan(address, record)
                if r is not None:
                    by_address[address] = r
    wanted = {r.address for r in resources}

    unreadable: dict[str, str] = {}

    def refresh(r: Resource[C]) -> tuple[dict[str, Any] | None, list[str]]:
        ctx.emit(Event("refresh", r.address, message="refreshing"))
        prior = state.resources.get(r.address) if state else None
        try:
            observed = r.read(ctx, prior)
        except Exception as e:
            err = translate(e, context=f"reading {r.address}")
            why = None if destroy else ctx.absent_because(err)
            if why is None:
                if err is e:
                    raise
                raise err from e
            # Cannot be read until apply fixes something first (e.g. enables an API): absent.
            unreadable[r.address] = why
            observed = None
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
    for r in topological(list(by_address.values())):
        observed, warns = results[r.address]
        warnings.extend(warns)
        managed = state is not None and r.address in state.resources
        if destroy or r.address not in wanted:
            orphaned = r.address not in wanted and not destroy
            changes.append(destroy_change(r, observed, orphaned=orphaned, managed=managed))
            continue
        change = r.diff(r.desired(), observed)
        if r.address in unreadable:
            change.reason = f"{r.type} {r.name} is {UNREADABLE} ({unreadable[r.address]}): planned as absent"
        change.warnings.extend(warns)
        if observed is not None and not managed and not r.retain_on_destroy:
            # It exists but sdcluster never recorded it (made by hand, by the tutorial's Terraform, or by
            # a run that died before saving): say so, because from now on destroy will delete it.
            change.adopt = True
            if change.action is Action.NOOP:
                change.reason = f"{r.type} {r.name} {ADOPT}"
            else:
                change.reason = f"{change.reason}; it {ADOPT}"
        changes.append(change)
    for why in sorted(set(unreadable.values())):
        names = sorted(a for a, w in unreadable.items() if w == why)
        warnings.append(
            f"{len(names)} resource(s) {UNREADABLE}, planned as absent ({why}): {', '.join(names)}"
        )
    return changes, warnings, by_address


def destroy_change(
    r: Resource[Any], observed: dict[str, Any] | None, orphaned: bool, managed: bool
) -> Change:
    if observed is None:
        return r.change(Action.NOOP, f"{r.type} {r.name} is already gone")
    if not managed:
        # Never delete what sdcluster did not record as its own: no surprise deletions.
        return r.change(
            Action.NOOP,
            f"{r.type} {r.name} exists but is not in the state (not managed by sdcluster): left alone",
        )
    if r.retain_on_destroy and r.forget_on_destroy:
        return r.change(Action.NOOP, r.retain_on_destroy, before=dict(observed), after=None)
    if r.retain_on_destroy:
        return r.change(Action.KEEP, r.retain_on_destroy, before=dict(observed), after=dict(observed))
    reason = "no longer in the configuration" if orphaned else "destroy requested"
    return r.change(Action.DELETE, reason, before=dict(observed))


def topological(resources: list[Resource[C]]) -> list[Resource[C]]:
    """Dependencies first; ties broken by address so plans render stably."""
    by_address = {r.address: r for r in resources}
    done: set[str] = set()
    out: list[Resource[C]] = []

    def visit(r: Resource[C], path: tuple[str, ...]) -> None:
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
