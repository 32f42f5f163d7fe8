"""The engine interrupted from the calling thread, as a notebook's Ctrl-C does (KeyboardInterrupt in
the main thread): the waits in flight end at once, nothing new starts, the state is saved with the
create in progress recorded as pending (and what it checkpointed), ``Interrupted`` is raised, and
the next run may wait again."""

from __future__ import annotations

import _thread
import threading
from pathlib import Path
from typing import Any

import pytest

import sdcluster
from sdcluster import retry
from sdcluster.api import Workspace
from sdcluster.engine import Change
from sdcluster.errors import Interrupted
from sdcluster.state import LocalBackend

from .memstore import MemStack, Store, Thing


class SlowThing(Thing):
    """Created at once, then waits for something that takes minutes (a rollout, a GKE operation),
    after checkpointing what it learned."""

    def create(self, ctx: Any, change: Change) -> dict[str, Any]:
        attrs = super().create(ctx, change)
        ctx.checkpoint(self.address, {"operation": "op-1"})
        started.set()
        retry.until(lambda: None, timeout_s=300, what="the slow thing to settle", max_interval_s=60)
        return attrs


started = threading.Event()


def test_ctrl_c_in_the_calling_thread_stops_waits_saves_and_raises_interrupted(tmp_path: Path) -> None:
    store = Store()
    things = [
        Thing(store, "a"),
        SlowThing(store, "slow", ("test.thing.a",)),
        Thing(store, "c", ("test.thing.slow",)),
    ]
    cfg = sdcluster.Config.build(project="demo-proj", user="user:demo@example.com")
    ws = Workspace(config=cfg, backend=LocalBackend(tmp_path / "state.json"), stack=MemStack(store, things))
    started.clear()
    threading.Thread(target=lambda: started.wait(30) and _thread.interrupt_main(), daemon=True).start()
    with pytest.raises(Interrupted) as err:
        sdcluster.apply(ws)
    assert "stopped waiting for test.thing.slow" in str(err.value) and "1 not started" in str(err.value)
    saved = ws.backend.read()
    assert saved is not None
    slow = saved.resources["test.thing.slow"]
    assert slow.pending and slow.attributes["operation"] == "op-1"  # recorded, with its checkpoint
    assert not saved.resources["test.thing.a"].pending and "test.thing.c" not in saved.resources
    assert not retry.cancelled()  # the next run may wait again
    # It exists, the state says pending: the next plan adopts it (ours), and creates what is left.
    again = [
        Thing(store, "a"),
        Thing(store, "slow", ("test.thing.a",)),
        Thing(store, "c", ("test.thing.slow",)),
    ]
    p = sdcluster.plan(Workspace(config=cfg, backend=ws.backend, stack=MemStack(store, again)))
    actions = {c.address: (c.action, c.adopt, c.conflict) for c in p.changes}
    assert actions["test.thing.slow"] == ("noop", True, False) and actions["test.thing.c"][0] == "create"
