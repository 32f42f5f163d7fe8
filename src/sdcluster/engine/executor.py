"""Apply and destroy: run a plan's changes as their dependencies complete, saving state after each.

Independent changes run concurrently. A create is recorded as *pending* before its call (so a run
killed at any moment leaves a record to find), and as done once it returns. On the first failure
nothing new starts, the changes in flight finish, the state is saved, and ``ApplyError`` names the
failed address and what completed. Deletes run in reverse dependency order. A second apply of an
unchanged config makes zero mutating calls: every change is a noop and noops call nothing.

Interrupts: after ``retry.cancel()`` (the CLI's signal handler) nothing new starts and the waits in
flight end at once; the state (with its pending creates) is saved and ``Interrupted`` raised. A
``KeyboardInterrupt`` in the calling thread (Ctrl-C in a notebook) does the same; a second one stops
waiting for the changes in flight (their pending records are already saved) and raises at once.

If the state cannot be written, nothing new starts and the error says which changes were made but
could not be recorded, and where the state should have gone; it never claims a save that did not
happen.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar, assert_never

from .. import retry
from ..errors import ApplyError, Interrupted, SdclusterError, StateWriteError, translate
from ..state import Backend, ResourceState, State
from .model import Action, Change, Event
from .resource import Context, Resource

C = TypeVar("C", bound=Context)
MAX_WORKERS = 8
WAKE_S = 0.5

_DONE = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.REPLACE: "replaced",
    Action.DELETE: "deleted",
}


class _Unsaved(Exception):
    """A change was made but the state write after it failed (the error is ``write_error``)."""


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
    unsaved: list[str] = []  # made, but the state write after it failed
    failure: tuple[str, BaseException] | None = None
    write_error: StateWriteError | None = None
    abandoned = False  # a second interrupt: in-flight changes no longer write the state

    # Group commit: a change returns once a finished write includes it. The state is copied under
    # the lock and written outside it, so the changes made meanwhile (six creates starting at once)
    # share the next write instead of queueing for one each.
    made = saved = 0  # changes to ``state`` so far / of them, in the last finished write
    writing = False
    failed: tuple[int, BaseException] | None = None  # the last failed write (what it held, why)
    written = threading.Condition(state_lock)

    def commit(n: int) -> None:
        """Return once change ``n`` is written; raise the error of a failed write that held it."""
        nonlocal saved, writing, failed, write_error
        with state_lock:
            while True:
                if abandoned or saved >= n:
                    return
                if failed is not None and failed[0] >= n:
                    raise failed[1]
                if not writing:
                    break
                written.wait()
            writing, upto = True, made
            if outputs is not None:
                state.outputs = outputs(_confirmed(state))
            snapshot = copy.deepcopy(state)
        error: BaseException | None = None
        try:
            backend.write(snapshot)  # sets its serial
        except BaseException as e:  # whatever it is, the next waiter may write again
            error = e
        with state_lock:
            writing = False
            written.notify_all()
            if error is not None:
                failed = (upto, error)
                if isinstance(error, StateWriteError):
                    write_error = error
                raise error
            state.serial, state.sdcluster_version = snapshot.serial, snapshot.sdcluster_version
            saved = upto

    def changed() -> int:
        """Count a change to ``state`` (under the lock); commit(the number) writes it."""
        nonlocal made
        made += 1
        return made

    def put(change: Change, attrs: dict[str, Any] | None, *, is_pending: bool = False) -> None:
        with state_lock:
            r = resources[change.address]
            if attrs is None:
                state.resources.pop(change.address, None)
            else:
                state.resources[change.address] = ResourceState(
                    type=r.type,
                    id=r.state_id(attrs),
                    attributes=attrs,
                    dependencies=list(r.dependencies),
                    pending=is_pending,
                )
            n = changed()
        commit(n)

    def checkpoint(address: str, attrs: dict[str, Any]) -> None:
        """Merge a change's partial progress into its record (a create's stays pending)."""
        with state_lock:
            r = resources[address]
            record = state.resources.get(address)
            if record is None:
                record = state.resources[address] = ResourceState(
                    type=r.type, id="", dependencies=list(r.dependencies), pending=True
                )
            record.attributes = {**record.attributes, **attrs}
            record.id = r.state_id(record.attributes)
            n = changed()
        commit(n)

    def run(change: Change) -> None:
        r = resources[change.address]
        ctx.started(change.address)
        attrs: dict[str, Any] | None
        match change.action:
            case Action.NOOP:
                # No API call; still record what was observed (adopts what exists; forgets what is
                # gone, and on destroy what is not ours to delete).
                put(change, change.after)
                return
            case Action.KEEP:
                # Retained on destroy: left running and left in the state, so a later destroy (with
                # --delete-bucket, say) can still delete it.
                return
            case Action.CREATE | Action.UPDATE | Action.REPLACE | Action.DELETE:
                pass
            case _:
                assert_never(change.action)
        if change.action is Action.CREATE:
            # Before the call: whatever happens next, the next run or destroy finds this record.
            put(change, dict(change.after or r.desired()), is_pending=True)
        ctx.emit(Event("start", change.address, change.action))
        ctx.begin(change.address, str(change.action))
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
        finally:
            ctx.end(change.address)
        try:
            put(change, attrs)
        except StateWriteError as e:
            raise _Unsaved(str(e)) from e
        ctx.emit(Event("done", change.address, change.action, elapsed=ctx.elapsed(change.address)))

    def schedule() -> None:
        nonlocal failure
        while pending or running:
            if failure is None and not retry.cancelled():
                ready = [c for a, c in pending.items() if deps[a] <= done]
                for c in ready:
                    del pending[c.address]
                    running[pool.submit(run, c)] = c
            if not running:
                return  # failure or interrupt: nothing in flight, nothing more to start
            # Woken now and then, so a Ctrl-C reaches this thread even when the OS delivered the
            # signal to another one (a notebook kernel's interrupt).
            finished, _ = wait(running, timeout=WAKE_S, return_when=FIRST_COMPLETED)
            for fut in finished:
                c = running.pop(fut)
                err = fut.exception()
                if err is None:
                    done.add(c.address)
                    if c.mutating:
                        completed.append(c.address)
                    continue
                if isinstance(err, _Unsaved):
                    unsaved.append(c.address)
                if failure is None:
                    failure = (c.address, err)
                ctx.emit(Event("failed", c.address, c.action, message=str(err)))

    interrupted = False  # by a KeyboardInterrupt here (not by the CLI's cancel)
    ctx.on_checkpoint = checkpoint
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS)
    running: dict[Future[None], Change] = {}
    try:
        while True:
            try:
                schedule()
                break
            except KeyboardInterrupt:
                if not retry.cancelled():
                    # First Ctrl-C (a notebook): stop the waits, let the changes in flight settle.
                    interrupted = True
                    retry.cancel()
                    continue
                # Again: stop waiting for them (their pending records are saved); raise now.
                with state_lock:
                    abandoned = True
                raise Interrupted(
                    f"interrupted again: stopped without waiting for {_names(running.values())}",
                    hint=_pending_hint(backend),
                    completed=completed,
                ) from None
    finally:
        ctx.on_checkpoint = None
        pool.shutdown(wait=not abandoned, cancel_futures=True)
        if interrupted:
            retry.reset_cancel()  # a library caller: the next run may wait again

    if write_error is not None:
        raise _write_failed(write_error, changes, completed, unsaved)
    stopped = failure is not None and isinstance(failure[1], Interrupted)
    if stopped or (pending and (interrupted or retry.cancelled())):
        raise _interrupted(completed, pending, failure, backend)

    if failure is not None:
        address, err = failure
        cause = err if isinstance(err, SdclusterError) else translate(err)
        done_s = ", ".join(completed) if completed else "none"
        raise ApplyError(
            f"{address} failed: {cause}\ncompleted before the failure: {done_s}",
            hint=(cause.hint + "; " if cause.hint else "")
            + f"the state was saved ({backend.describe()}); fix the cause and run apply again to continue",
            address=address,
            completed=completed,
            cause=cause,
        ) from err
    return state


def _confirmed(state: State) -> State:
    """``state`` without its pending creates (outputs describe only what is known to exist)."""
    if not any(r.pending for r in state.resources.values()):
        return state
    view = copy.copy(state)
    view.resources = {a: r for a, r in state.resources.items() if not r.pending}
    return view


def _names(changes: Any) -> str:
    return ", ".join(sorted(c.address for c in changes)) or "nothing"


def _pending_hint(backend: Backend) -> str:
    return (
        f"the state is saved ({backend.describe()}), creates in progress recorded as pending: run the "
        "command again to continue (`sdcluster apply` finishes them, `sdcluster destroy` deletes them)"
    )


def _interrupted(
    completed: list[str],
    not_started: Mapping[str, Change],
    failure: tuple[str, BaseException] | None,
    backend: Backend,
) -> Interrupted:
    parts = []
    if failure is not None and isinstance(failure[1], Interrupted):
        parts.append(f"stopped waiting for {failure[0]}")
    elif failure is not None:
        parts.append(f"{failure[0]} failed: {failure[1]}")
    parts.append(f"{len(completed)} change(s) completed")
    left = [c for c in not_started.values() if c.mutating]
    if left:
        parts.append(f"{len(left)} not started ({_names(left)})")
    return Interrupted("interrupted: " + "; ".join(parts), hint=_pending_hint(backend), completed=completed)


def _write_failed(
    error: StateWriteError, changes: list[Change], completed: list[str], unsaved: list[str]
) -> StateWriteError:
    """What was made and whether the state records it, when the state could not be written."""
    by_address = {c.address: c for c in changes}
    made = [f"{a} ({_DONE.get(by_address[a].action, 'changed')})" for a in [*completed, *unsaved]]
    not_recorded = (
        f"; NOT recorded in the state: {', '.join(unsaved)} (a create among them is recorded as pending)"
        if unsaved
        else ""
    )
    return StateWriteError(
        f"the state could not be written: {error.message}\n"
        f"made by this run: {', '.join(made) or 'nothing'}{not_recorded}",
        hint=error.hint
        + "; then run apply again: it adopts what this run created (pending records) and continues",
        path=error.path,
    )


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
