"""The engine with small in-memory resources: ordering, waves, failure and resume, destroy order,
retention, stale saved plans, zero mutations on re-apply."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import sdcluster
from sdcluster.api import Workspace
from sdcluster.engine.display import plan_lines
from sdcluster.errors import AdoptionRefused, ApplyError, DestroyIncomplete, StalePlan
from sdcluster.state import LocalBackend, State

from .memstore import MARK, MemStack, Store, Thing


def make_ws(tmp_path: Path, store: Store, things: list[Thing]) -> Workspace:
    cfg = sdcluster.Config.build(project="demo-proj", user="user:demo@example.com")
    return Workspace(config=cfg, backend=LocalBackend(tmp_path / "state.json"), stack=MemStack(store, things))


def diamond(store: Store, **kw: Any) -> list[Thing]:
    # a <- b, a <- c, (b, c) <- d
    return [
        Thing(store, "a", **kw),
        Thing(store, "b", ("test.thing.a",)),
        Thing(store, "c", ("test.thing.a",)),
        Thing(store, "d", ("test.thing.b", "test.thing.c")),
    ]


def starts(store: Store) -> list[str]:
    return [a for kind, a, _ in store.timeline if kind == "start"]


def test_fresh_apply_creates_in_dependency_order_and_records_state(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    plan = sdcluster.plan(ws)
    assert [c.action for c in plan.changes] == ["create"] * 4
    assert plan.counts() == {"import": 0, "add": 4, "change": 0, "destroy": 0}
    state = sdcluster.apply(plan)
    order = [a for verb, a in store.mutations]
    assert order.index("test.thing.a") < order.index("test.thing.b") < order.index("test.thing.d")
    assert order.index("test.thing.c") < order.index("test.thing.d")
    assert sorted(state.resources) == ["test.thing.a", "test.thing.b", "test.thing.c", "test.thing.d"]
    assert state.resources["test.thing.d"].dependencies == ["test.thing.b", "test.thing.c"]
    assert state.outputs == {"count": 4}
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert on_disk["serial"] == state.serial and on_disk["lineage"] == state.lineage


def test_independent_changes_run_concurrently(tmp_path: Path) -> None:
    store = Store()
    things = diamond(store)
    store.delay.update({"test.thing.b": 0.3, "test.thing.c": 0.3})
    sdcluster.apply(sdcluster.plan(make_ws(tmp_path, store, things)))
    # b and c overlap: c started before b ended.
    t = {(k, a): ts for k, a, ts in store.timeline}
    assert t[("start", "test.thing.c")] < t[("end", "test.thing.b")]
    assert t[("start", "test.thing.b")] < t[("end", "test.thing.c")]
    assert store.max_active >= 2


class SlowBackend(LocalBackend):
    """A state location slow to write (a remote backend, a network file system): each write takes
    ``delay`` s and is logged with when it ended and the pending records it held."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay
        self.writes: list[tuple[float, set[str]]] = []

    def write(self, state: State) -> State:
        time.sleep(self.delay)
        stored = super().write(state)
        pending = {a for a, r in state.resources.items() if r.pending}
        self.writes.append((time.monotonic(), pending))
        return stored


def test_changes_starting_together_share_state_writes_and_each_is_recorded_before_its_call(
    tmp_path: Path,
) -> None:
    store = Store()
    things = [Thing(store, f"t{i}") for i in range(6)]
    cfg = sdcluster.Config.build(project="demo-proj", user="user:demo@example.com")
    backend = SlowBackend(tmp_path / "state.json", delay=0.3)
    ws = Workspace(config=cfg, backend=backend, stack=MemStack(store, things))
    state = sdcluster.apply(sdcluster.plan(ws))
    assert sorted(state.resources) == sorted(t.address for t in things)
    assert not any(r.pending for r in state.resources.values())
    # One at a time, 6 creates make 12 writes (pending, then done). The five that start while the
    # first one's pending record is written share the next write, and so on.
    assert len(backend.writes) <= 8, len(backend.writes)
    for kind, address, at in store.timeline:
        if kind == "start":  # the create call: after a finished write that holds it as pending
            assert any(end <= at and address in held for end, held in backend.writes), address
    on_disk = LocalBackend(tmp_path / "state.json").read()
    assert on_disk is not None and on_disk.serial == state.serial and on_disk.content() == state.content()


def test_second_apply_is_all_noop_and_makes_zero_mutating_calls(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    sdcluster.apply(sdcluster.plan(ws))
    serial = ws.backend.read().serial  # type: ignore[union-attr]
    store.calls.clear()
    plan = sdcluster.plan(ws)
    assert {c.action for c in plan.changes} == {"noop"}
    assert not plan.has_changes
    assert all("exists and matches" in c.reason for c in plan.changes)
    sdcluster.apply(plan)
    assert store.mutations == []
    assert ws.backend.read().serial == serial  # type: ignore[union-attr]


def test_update_and_replace_are_planned_attribute_by_attribute(tmp_path: Path) -> None:
    store = Store()
    sdcluster.apply(sdcluster.plan(make_ws(tmp_path, store, diamond(store))))
    store.objects["test.thing.b"]["size"] = 5  # drift made out of band
    things = diamond(store)
    things[2] = Thing(store, "c", ("test.thing.a",), flavor="spicy")
    plan = sdcluster.plan(make_ws(tmp_path, store, things))
    by = {c.address: c for c in plan.changes}
    assert by["test.thing.b"].action == "update"
    assert [(d.path, d.before, d.after) for d in by["test.thing.b"].diffs] == [("size", 5, 1)]
    assert by["test.thing.c"].action == "replace"
    assert by["test.thing.c"].diffs[0].forces_replacement
    assert plan.counts() == {"import": 0, "add": 1, "change": 1, "destroy": 1}
    store.calls.clear()
    sdcluster.apply(plan)
    assert ("update", "test.thing.b") in store.mutations
    assert store.objects["test.thing.b"]["size"] == 1
    assert store.objects["test.thing.c"]["flavor"] == "spicy"


def test_failure_mid_apply_saves_progress_and_rerun_continues(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    store.fail["test.thing.c"] = "create"
    store.delay["test.thing.b"] = 0.2  # in flight while c fails: must finish and be recorded
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(sdcluster.plan(ws))
    assert err.value.address == "test.thing.c"
    assert "test.thing.a" in err.value.completed and "test.thing.b" in err.value.completed
    assert "test.thing.c failed" in str(err.value) and "completed before the failure" in str(err.value)
    assert "test.thing.d" not in store.objects  # nothing new started after the failure
    saved = ws.backend.read()
    assert saved is not None and sorted(saved.resources) == ["test.thing.a", "test.thing.b", "test.thing.c"]
    # The failed create stays recorded as pending (it was written before the call); it does not exist,
    # so the next plan creates it again.
    assert [a for a, r in saved.resources.items() if r.pending] == ["test.thing.c"]
    store.calls.clear()
    plan = sdcluster.plan(ws)
    assert {c.address: c.action for c in plan.changes} == {
        "test.thing.a": "noop",
        "test.thing.b": "noop",
        "test.thing.c": "create",
        "test.thing.d": "create",
    }
    sdcluster.apply(plan)
    assert sorted(a for _, a in store.mutations) == ["test.thing.c", "test.thing.d"]


def test_destroy_runs_in_reverse_dependency_order(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    sdcluster.apply(sdcluster.plan(ws))
    store.calls.clear()
    store.timeline.clear()
    state = sdcluster.destroy(ws)
    order = [a for _, a in store.mutations]
    assert order[0] == "test.thing.d" and order[-1] == "test.thing.a"
    assert store.objects == {} and state.resources == {}


def test_retained_resource_is_reported_as_kept_not_deleted(tmp_path: Path) -> None:
    store = Store()
    things = diamond(store)
    things[0].retain_on_destroy = "kept on destroy (bucket.keep_on_destroy = true)"
    ws = make_ws(tmp_path, store, things)
    sdcluster.apply(sdcluster.plan(ws))
    plan = sdcluster.plan(ws, destroy=True)
    kept = [c for c in plan.changes if c.action == "keep"]
    assert [c.address for c in kept] == ["test.thing.a"] and "keep_on_destroy" in kept[0].reason
    assert "1 to keep" in str(plan)
    sdcluster.apply(plan)
    assert list(store.objects) == ["test.thing.a"]
    # The kept one stays in the state, so a later destroy can still delete it.
    assert list(ws.backend.read().resources) == ["test.thing.a"]  # type: ignore[union-attr]


def test_resource_removed_from_config_is_deleted_as_orphan(tmp_path: Path) -> None:
    store = Store()
    sdcluster.apply(sdcluster.plan(make_ws(tmp_path, store, diamond(store))))
    plan = sdcluster.plan(make_ws(tmp_path, store, diamond(store)[:3]))
    d = next(c for c in plan.changes if c.address == "test.thing.d")
    assert d.action == "delete" and "no longer in the configuration" in d.reason
    sdcluster.apply(plan)
    assert "test.thing.d" not in store.objects


def test_saved_plan_applies_exactly_and_refuses_when_stale(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    planfile = sdcluster.save_plan(sdcluster.plan(ws), tmp_path / "plan.json")
    loaded = sdcluster.load_plan(
        planfile, state=str(tmp_path / "state.json"), stack=MemStack(store, diamond(store))
    )
    sdcluster.apply(loaded)
    assert len(store.objects) == 4
    # The state moved on (serial changed): the same saved plan is now stale.
    again = sdcluster.load_plan(
        planfile, state=str(tmp_path / "state.json"), stack=MemStack(store, diamond(store))
    )
    store.calls.clear()
    with pytest.raises(StalePlan) as err:
        sdcluster.apply(again)
    assert "serial" in str(err.value) and store.mutations == []


def test_hand_edited_saved_plan_is_refused(tmp_path: Path) -> None:
    store = Store()
    ws = make_ws(tmp_path, store, diamond(store))
    planfile = sdcluster.save_plan(sdcluster.plan(ws), tmp_path / "plan.json")
    data = json.loads(planfile.read_text())
    data["changes"][0]["after"]["size"] = 99
    planfile.write_text(json.dumps(data))
    with pytest.raises(StalePlan, match="modified after it was saved"):
        sdcluster.load_plan(
            planfile, state=str(tmp_path / "state.json"), stack=MemStack(store, diamond(store))
        )


def test_plan_renders_terraform_idiom(tmp_path: Path) -> None:
    store = Store()
    sdcluster.apply(sdcluster.plan(make_ws(tmp_path, store, diamond(store)[:2])))
    things = diamond(store)
    things[1] = Thing(store, "b", ("test.thing.a",), size=3)
    p = sdcluster.plan(make_ws(tmp_path, store, things))
    text = str(p)
    # Unchanged resources fold into one line; --show-unchanged lists them with their reasons.
    assert text.startswith("  = 1 unchanged (list them: sdcluster plan --show-unchanged)\n")
    assert "test.thing.a" not in text
    listed = "\n".join(line for _, line in plan_lines(p, show_unchanged=True))
    assert "  = test.thing.a: test.thing a exists and matches" in listed
    assert "  # test.thing.b will be updated in-place" in text
    assert "      ~ size = 1 -> 3" in text
    assert '  + resource "test.thing" "c" {' in text
    assert text.rstrip().endswith("Plan: 2 to add, 1 to change, 0 to destroy.")
    html = p._repr_html_()
    # Jupyter: the summary first, unchanged ones in a folded line, lines wrap instead of scrolling.
    assert html.index("Plan: 2 to add") < html.index("test.thing.b")
    assert "<details><summary>1 unchanged</summary>" in html and "pre-wrap" in html


def test_unrecorded_resource_made_by_sdcluster_is_adopted_visibly(tmp_path: Path) -> None:
    store = Store()
    # Made by sdcluster (it carries the mark), but the state lost track of it.
    store.objects["test.thing.a"] = {"size": 1, "flavor": "plain", MARK: "sdcluster"}
    ws = make_ws(tmp_path, store, diamond(store))
    p = sdcluster.plan(ws)
    a = next(c for c in p.changes if c.address == "test.thing.a")
    assert a.action == "noop" and a.adopt and not a.conflict and "will be adopted" in a.reason
    assert p.counts()["import"] == 1 and "Plan: 1 to import, 3 to add" in str(p)
    store.calls.clear()
    sdcluster.apply(p)
    assert ("create", "test.thing.a") not in store.mutations
    assert "test.thing.a" in ws.backend.read().resources  # type: ignore[union-attr]
    sdcluster.destroy(ws)
    assert store.objects == {}  # now managed: destroyed


def test_someone_elses_resource_with_our_name_is_a_conflict_apply_refuses_unless_adopting(
    tmp_path: Path,
) -> None:
    store = Store()
    store.objects["test.thing.a"] = {"size": 5, "flavor": "plain"}  # made by hand: no sdcluster mark
    ws = make_ws(tmp_path, store, diamond(store))
    # destroy leaves what the state does not record alone, and does not claim success while it runs.
    d = sdcluster.plan(ws, destroy=True)
    a = next(c for c in d.changes if c.address == "test.thing.a")
    assert a.action == "noop" and "not managed by sdcluster" in a.reason and a.conflict
    with pytest.raises(DestroyIncomplete, match=r"test\.thing\.a") as left:
        sdcluster.apply(d)
    assert "sdcluster import test.thing.a a" in left.value.hint
    assert store.objects["test.thing.a"] == {"size": 5, "flavor": "plain"}
    # The plan shows the conflict distinctly; apply refuses before any change and says how to adopt.
    p = sdcluster.plan(ws)
    a = next(c for c in p.changes if c.address == "test.thing.a")
    assert a.action == "update" and a.adopt and a.conflict and "not made by sdcluster" in a.reason
    assert "<! resource" in str(p) and "1 conflict(s): apply refuses" in str(p)
    store.calls.clear()
    with pytest.raises(AdoptionRefused) as err:
        sdcluster.apply(p)
    assert store.mutations == []
    assert "sdcluster import test.thing.a a" in err.value.hint and "sdcluster apply --adopt" in err.value.hint
    assert "test.thing.a" not in ws.backend.read().resources  # type: ignore[union-attr]
    # Told to adopt: it is recorded (and updated), and from then on destroy deletes it.
    sdcluster.apply(p, adopt=True)
    assert store.objects["test.thing.a"]["size"] == 1
    sdcluster.destroy(ws)
    assert store.objects == {}
