"""State in Cloud Storage when an answer is lost after the write took effect (the emulator's faults
after the commit: the answer cut off halfway, or the connection reset before it). The retried
conditional write then fails its precondition on its own first attempt; sdcluster reads back what is
stored and takes its own lock and its own state as such (with their generations), instead of
reporting itself as the lock holder or a lost update. Earlier generations are the state's backups."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sdcluster
from sdcluster import api
from sdcluster.errors import StateCorrupt
from sdcluster.gcp.remote_state import GcsBackend
from sdcluster.state import ResourceState, State

from ..helpers import factory

PROJECT = "demo-proj"
USER = "user:demo@example.com"
BUCKET = "demo-proj-tfstate"
STATE_URL = f"gs://{BUCKET}/sd/state.json"
UPLOADS = {"method": "^POST /upload/", "resource": f"buckets/{BUCKET}$", "after": True}


@pytest.fixture
def emu(make_emu: Callable[..., Any]) -> Any:
    emu = make_emu()
    assert api.ensure_state_bucket(STATE_URL, factory(emu, USER), PROJECT, "us-central1")
    return emu


def backend(emu: Any) -> GcsBackend:
    return GcsBackend(STATE_URL, factory(emu, USER), PROJECT)


def lost(emu: Any) -> list[str]:
    return [e.method for e in emu.log.entries() if e.response_lost]


@pytest.mark.parametrize("lose", ["cut", "reset"])
def test_a_lost_answer_to_the_lock_or_a_state_write_is_recognised_as_this_runs(emu: Any, lose: str) -> None:
    b = backend(emu)
    emu.add_fault(**UPLOADS, lose=lose)  # the lock's create
    with b.lock("apply"):
        state = State.new(project=PROJECT)
        state.resources["t.a"] = ResourceState(type="t", id="a")
        emu.add_fault(**UPLOADS, lose=lose)  # the first state write
        b.write(state)
        state.resources["t.b"] = ResourceState(type="t", id="b")
        b.write(state)  # the generation the lost write made was taken: no false lost update
    assert len(lost(emu)) == 2  # both answers really were lost
    assert backend(emu).holder() is None  # the lock was released: no force-unlock needed
    stored = backend(emu).read()
    assert stored is not None and sorted(stored.resources) == ["t.a", "t.b"] and stored.serial == 2
    with backend(emu).lock("apply"):  # the next run takes it at once
        pass


def test_an_apply_whose_lock_and_first_state_write_lose_their_answers_completes(
    emu: Any, tmp_path: Path
) -> None:
    config = sdcluster.Config.build(project=PROJECT, user=USER, state={"path": STATE_URL})
    ws = sdcluster.Workspace.open(config, emulator=emu.address)
    emu.add_fault(**UPLOADS, count=2)  # the lock object, then the first state write (a pending record)
    state = sdcluster.apply(ws)
    assert len(lost(emu)) == 2
    assert "gke.cluster.sd-cluster" in state.resources
    assert backend(emu).holder() is None
    emu.log.clear()
    assert not sdcluster.plan(ws).has_changes
    sdcluster.apply(ws)
    assert [e for e in emu.log.mutating() if e.service != "storage"] == []


def test_the_backups_of_remote_state_are_its_earlier_generations(emu: Any) -> None:
    b = backend(emu)
    with b.lock("apply"):
        state = State.new(project=PROJECT)
        state.resources["t.a"] = ResourceState(type="t", id="a")
        b.write(state)
        state.resources["t.b"] = ResourceState(type="t", id="b")
        b.write(state)
    bucket = factory(emu, USER).storage(PROJECT).bucket(BUCKET)
    bucket.blob("sd/state.json").upload_from_string("{ not json")  # damaged by hand
    with pytest.raises(StateCorrupt) as err:
        backend(emu).read()
    assert f"gcloud storage ls -a {STATE_URL}" in err.value.hint
    generations = sorted(
        (blob.generation, blob)
        for blob in factory(emu, USER)
        .storage(PROJECT)
        .list_blobs(BUCKET, prefix="sd/state.json", versions=True)
        if blob.name == "sd/state.json"
    )
    assert len(generations) == 3
    previous = json.loads(generations[1][1].download_as_bytes())  # the one before the damage
    restored = State.from_dict(previous)
    assert restored.lineage == state.lineage and sorted(restored.resources) == ["t.a", "t.b"]
