"""Plan = concurrent refresh + pure diff; and the check that a saved plan still fits the state.

``plan_changes`` reads every resource concurrently (reads never mutate), then diffs each in
dependency order. Resources the state records but the configuration no longer names are rebuilt by
the stack (``Stack.orphan``) and planned for deletion. Destroy never deletes what the state does not
record.

Something that exists but is not in the state is adopted (imported; from then on destroy deletes
it) only if it is ours: a pending create of an interrupted run, or a thing carrying sdcluster's mark
(``Resource.owned``). Anything else with our name is a conflict: the plan shows it, apply refuses
to take it over unless told to adopt. A pending record whose thing is absent is planned as a create.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .. import retry
from ..errors import Interrupted, SdclusterError, StalePlan, translate
from ..state import ResourceState, State
from .executor import WAKE_S
from .model import UNREADABLE, Action, Change, Event, Plan
from .resource import Context, Resource

C = TypeVar("C", bound=Context)
MAX_WORKERS = 8

ADOPT = "exists but is not in the state: it will be adopted, and `sdcluster destroy` will delete it"
PENDING = (
    "was being created by an interrupted run (pending in the state): it will be recorded, "
    "and `sdcluster destroy` will delete it"
)


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
            # On destroy, only what the state does not record as made may be taken as absent (a
            # pending create behind an API that was never enabled cannot have happened).
            done = prior is not None and not prior.pending
            why = None if destroy and done else ctx.absent_because(err)
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
    interrupted = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS * 2, len(ordered)))) as pool:
            futures = {r.address: pool.submit(refresh, r) for r in ordered}
            try:
                for address, fut in futures.items():
                    while address not in results:
                        try:  # woken now and then, so a Ctrl-C reaches this thread (see executor)
                            results[address] = fut.result(timeout=WAKE_S)
                        except TimeoutError:
                            continue
            except KeyboardInterrupt:
                # Ctrl-C in a notebook: wake the waits of the other reads, so the pool ends at once.
                interrupted = not retry.cancelled()
                retry.cancel()
                raise Interrupted("interrupted during the refresh", hint="nothing was changed") from None
    finally:
        if interrupted:
            retry.reset_cancel()

    changes: list[Change] = []
    warnings: list[str] = []
    for r in topological(list(by_address.values())):
        observed, warns = results[r.address]
        warnings.extend(warns)
        recorded = state.resources.get(r.address) if state is not None else None
        if destroy or r.address not in wanted:
            orphaned = r.address not in wanted and not destroy
            changes.append(destroy_change(r, observed, orphaned=orphaned, record=recorded))
            continue
        change = r.diff(r.desired(), observed)
        if r.address in unreadable:
            change.reason = f"{r.type} {r.name} is {UNREADABLE} ({unreadable[r.address]}): planned as absent"
        change.warnings.extend(warns)
        if observed is not None:
            change.id = r.state_id(observed)
        if observed is not None and (recorded is None or recorded.pending):
            # It exists but the state does not record it as done: a create of ours that a run did not
            # confirm (pending), something sdcluster made and lost track of (its mark), or someone
            # else's with our name: only the last is a conflict (apply will not silently take it over).
            # What is kept on destroy and carries our mark (an API, our bucket) is recorded quietly.
            why = ""
            if recorded is not None:
                why = PENDING
            elif not r.owned(observed):
                change.conflict = True
                why = conflict_reason(change.address, change.id)
            elif not r.retain_on_destroy:
                why = ADOPT
            if why:
                change.adopt = True
                if change.action is Action.NOOP:
                    change.reason = f"{r.type} {r.name} {why}"
                else:
                    change.reason = f"{change.reason}; it {why}"
        changes.append(change)
    for why in sorted(set(unreadable.values())):
        names = sorted(a for a, w in unreadable.items() if w == why)
        warnings.append(
            f"{len(names)} resource(s) {UNREADABLE}, planned as absent ({why}): {', '.join(names)}"
        )
    return changes, warnings, by_address


def conflict_reason(address: str, resource_id: str) -> str:
    return (
        "exists but was not made by sdcluster (it has no sdcluster mark and is not in the state): "
        f"apply will not take it over; to adopt it: sdcluster import {address} {resource_id}, "
        "or sdcluster apply --adopt"
    )


def destroy_change(
    r: Resource[Any], observed: dict[str, Any] | None, orphaned: bool, record: ResourceState | None
) -> Change:
    if observed is None:
        return r.change(Action.NOOP, f"{r.type} {r.name} is already gone")
    resource_id = r.state_id(observed)
    if record is None:
        # Never delete what sdcluster did not record as its own: no surprise deletions. But say that
        # it still runs (a retained kind, kept by an earlier destroy, is no news).
        return r.change(
            Action.NOOP,
            f"{r.type} {r.name} exists but is not in the state (not managed by sdcluster): left alone",
            conflict=not r.retain_on_destroy,
            id=resource_id,
        )
    if r.retain_on_destroy and r.forget_on_destroy:
        return r.change(Action.NOOP, r.retain_on_destroy, before=dict(observed), after=None)
    if r.retain_on_destroy:
        return r.change(
            Action.KEEP, r.retain_on_destroy, before=dict(observed), after=dict(observed), id=resource_id
        )
    if record.pending:
        reason = "a create an interrupted run started (pending in the state)"
    else:
        reason = "no longer in the configuration" if orphaned else "destroy requested"
    return r.change(Action.DELETE, reason, before=dict(observed), id=resource_id)


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
