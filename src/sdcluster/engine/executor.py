"""Apply and destroy: run a plan's changes as their dependencies complete, saving state after each.

Independent changes run concurrently. On the first failure nothing new starts, the changes in flight
finish, the state is saved, and ``ApplyError`` names the failed address and what completed. Deletes
run in reverse dependency order. A second apply of an unchanged config makes zero mutating calls:
every change is a noop and noops call nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar, assert_never

from ..errors import ApplyError, SdclusterError, translate
from ..state import Backend, ResourceState, State
from .model import Action, Change, Event
from .resource import Context, Resource

C = TypeVar("C", bound=Context)
MAX_WORKERS = 8


def execute(
    changes: list[Change],
    resources: Mapping[str, Resource[C]],
    ctx: C,
    backend: Backend,
    state: State,
    *,
    outputs: Callable[[State], dict[str, Any]] | None = None,
) -> State:
    """Run ``changes``; state is written after each completed change, with the ``outputs`` derived
    from what it then records (so outputs never describe what is gone, nor wait for the end of a run
    that may be interrupted). Returns the final state."""
    state_lock = threading.Lock()
    deps = change_dependencies(changes)
    pending = {c.address: c for c in changes}
    done: set[str] = set()
    completed: list[str] = []
    failure: tuple[str, BaseException] | None = None

    def record_address(address: str, attrs: dict[str, Any] | None) -> None:
        with state_lock:
            r = resources[address]
            if attrs is None:
                state.resources.pop(address, None)
            else:
                state.resources[address] = ResourceState(
                    type=r.type, id=r.state_id(attrs), attributes=attrs, dependencies=list(r.dependencies)
                )
            if outputs is not None:
                state.outputs = outputs(state)
            backend.write(state)

    def record(change: Change, attrs: dict[str, Any] | None) -> None:
        record_address(change.address, attrs)

    def run(change: Change) -> None:
        r = resources[change.address]
        ctx.started(change.address)
        attrs: dict[str, Any] | None
        match change.action:
            case Action.NOOP:
                # No API call; still record what was observed (adopts what exists; forgets what is
                # gone, and on destroy what is not ours to delete).
                record(change, change.after)
                return
            case Action.KEEP:
                # Retained on destroy: left running and left in the state, so a later destroy (with
                # --delete-bucket, say) can still delete it.
                return
            case Action.CREATE | Action.UPDATE | Action.REPLACE | Action.DELETE:
                pass
            case _:
                assert_never(change.action)
        ctx.emit(Event("start", change.address, change.action))
        try:
            match change.action:
                case Action.CREATE:
                    attrs = r.create(ctx, change)
                case Action.UPDATE:
                    attrs = r.update(ctx, change)
                case Action.REPLACE:
                    attrs = r.replace(ctx, change)
                case Action.DELETE:
                    r.delete(ctx, change)
                    attrs = None
        except SdclusterError:
            raise
        except Exception as e:
            raise translate(e, context=change.address) from e
        record(change, attrs)
        ctx.emit(Event("done", change.address, change.action, elapsed=ctx.elapsed(change.address)))

    ctx.on_checkpoint = record_address
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
                    continue
                if failure is None:
                    failure = (c.address, err)
                ctx.emit(Event("failed", c.address, c.action, message=str(err)))
    ctx.on_checkpoint = None

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


def change_dependencies(changes: list[Change]) -> dict[str, set[str]]:
    """Which changes each change waits for. Creates/updates wait for their dependencies' changes;
    deletes wait for the deletes of everything that depends on them (reverse order)."""
    in_plan = {c.address: c for c in changes}
    deps: dict[str, set[str]] = {c.address: set() for c in changes}
    for c in changes:
        if not c.mutating:
            continue
        if c.action is Action.DELETE:
            for other in changes:
                if c.address in other.dependencies and other.action in (Action.DELETE, Action.REPLACE):
                    deps[c.address].add(other.address)
        else:
            for d in c.dependencies:
                if d in in_plan and in_plan[d].action is not Action.DELETE:
                    deps[c.address].add(d)
    return deps
