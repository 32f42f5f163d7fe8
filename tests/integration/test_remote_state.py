"""Team use: state in Cloud Storage (the emulator's), locking across processes, lost updates,
migration, import and forget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sdcluster
from sdcluster import api
from sdcluster.errors import StateConflict
from sdcluster.gcp.remote_state import GcsBackend
from sdcluster.state import LocalBackend, ResourceState, State
from sdcluster.ui.cli import app

from ..helpers import factory

PROJECT = "demo-proj"
USER = "user:demo@example.com"
STATE_URL = "gs://demo-proj-tfstate/sd/state.json"
EXE = str(Path(sys.executable).with_name("sdcluster"))
runner = CliRunner()


@pytest.fixture
def team(make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An emulator, and a project directory initialised with remote state."""
    emu = make_emu(operation_s=1.0, rollout_s=0.3, lb_s=0.3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    r = runner.invoke(app, ["init", "--project", PROJECT, "--user", "demo@example.com", "--state", STATE_URL])
    assert r.exit_code == 0, r.output
    assert "Created the state bucket demo-proj-tfstate" in r.output
    return emu


def backend(emu: Any) -> GcsBackend:
    return GcsBackend(STATE_URL, factory(emu, USER), PROJECT)


def test_init_creates_a_versioned_private_state_bucket(team: Any) -> None:
    bucket = factory(team).storage(PROJECT).get_bucket("demo-proj-tfstate")
    assert bucket.versioning_enabled
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled
    assert bucket.iam_configuration.public_access_prevention == "enforced"
    assert 'path = "gs://demo-proj-tfstate/sd/state.json"' in Path("sdcluster.toml").read_text()


def test_two_processes_one_holds_the_lock_the_other_fails_fast_then_sees_the_result(team: Any) -> None:
    env = {**os.environ, "SDCLUSTER_EMULATOR": team.address}
    first = subprocess.Popen(
        [EXE, "apply", "-y"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lock = factory(team).storage(PROJECT).bucket("demo-proj-tfstate").blob("sd/state.json.lock")
    for _ in range(400):  # until the first run holds the lock
        if lock.exists():
            break
        time.sleep(0.025)
    else:
        first.kill()
        pytest.fail("the first apply never took the lock")
    second = subprocess.run([EXE, "apply", "-y"], capture_output=True, text=True, env=env, timeout=120)
    out1, _ = first.communicate(timeout=240)
    assert second.returncode == 1
    assert f"locked by pid {first.pid}" in second.stderr and "(apply)" in second.stderr
    assert "force-unlock" in second.stderr
    assert first.returncode == 0, out1[-3000:]
    assert not lock.exists()  # released
    again = subprocess.run(
        [EXE, "plan", "--detailed-exitcode"], capture_output=True, text=True, env=env, timeout=120
    )
    assert again.returncode == 0 and "No changes." in again.stdout  # sees the first run's resources


def test_lost_update_is_detected_not_overwritten(team: Any) -> None:
    a, b = backend(team), backend(team)
    s = State.new()
    a.write(s)
    sa, sb = a.read(), b.read()
    assert sa is not None and sb is not None
    sa.resources["x.one"] = ResourceState(type="x", id="1")
    a.write(sa)
    sb.resources["x.two"] = ResourceState(type="x", id="2")
    with pytest.raises(StateConflict, match="changed by someone else"):
        b.write(sb)
    final = backend(team).read()
    assert final is not None and "x.one" in final.resources and "x.two" not in final.resources


def test_stale_lock_names_holder_and_force_unlock_clears_it(team: Any) -> None:
    lock = factory(team).storage(PROJECT).bucket("demo-proj-tfstate").blob("sd/state.json.lock")
    holder = {
        "operation": "apply",
        "pid": 4121,
        "host": "laptop-7",
        "user": "ana",
        "started_at": "2026-11-28T10:00:00+00:00",
    }
    lock.upload_from_string(json.dumps(holder), if_generation_match=0)
    # Read-only commands still work and name the holder; a mutating one refuses.
    r = runner.invoke(app, ["plan"])
    assert (
        r.exit_code == 0
        and "another sdcluster run holds the state lock: pid 4121 on host laptop-7" in r.output
    )
    r = runner.invoke(app, ["apply", "-y"])
    assert r.exit_code == 1 and "pid 4121 on host laptop-7" in r.output and "2026-11-28T10:00:00" in r.output
    team.log.clear()
    r = runner.invoke(app, ["force-unlock"])
    assert r.exit_code == 0 and "pid 4121" in r.output
    assert runner.invoke(app, ["plan"]).exit_code == 0


def test_migration_local_remote_local_keeps_lineage_and_content(team: Any, tmp_path: Path) -> None:
    local = LocalBackend(tmp_path / "local" / "state.json")
    s = State.new()
    s.resources["x.one"] = ResourceState(type="x", id="1", attributes={"a": 1})
    s.outputs = {"endpoint": "http://x"}
    local.write(s)
    original = local.read()
    assert original is not None
    moved = api.copy_state(local, backend(team))
    assert moved is not None and moved.lineage == original.lineage and moved.serial == original.serial
    back_path = LocalBackend(tmp_path / "back" / "state.json")
    api.copy_state(backend(team), back_path)
    final = back_path.read()
    assert final is not None and final.to_dict() == original.to_dict()
    other = State.new()
    with pytest.raises(sdcluster.SdclusterError, match="another state"):
        api.copy_state(LocalBackend(_write(tmp_path / "other.json", other)), backend(team))


def test_init_migrate_state_moves_local_state_to_remote(
    make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emu()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    assert runner.invoke(app, ["init", "--project", PROJECT, "--user", "demo@example.com"]).exit_code == 0
    local = LocalBackend(".sdcluster/state.json")
    s = State.new()
    s.resources["x.one"] = ResourceState(type="x", id="1")
    local.write(s)
    r = runner.invoke(
        app,
        ["init", "--project", PROJECT, "--user", "demo@example.com", "--state", STATE_URL, "--migrate-state"],
    )
    assert r.exit_code == 0, r.output
    assert f"Migrated the state (lineage {s.lineage}, serial 1)" in r.output
    remote = backend(emu).read()
    assert remote is not None and remote.lineage == s.lineage and "x.one" in remote.resources


def test_state_rm_then_plan_shows_an_import_and_import_then_plan_is_noop(team: Any) -> None:
    r = runner.invoke(app, ["apply", "-y"])
    assert r.exit_code == 0, r.output
    address = "iam.service_account.gke-node"
    email = f"gke-node@{PROJECT}.iam.gserviceaccount.com"
    r = runner.invoke(app, ["state", "rm", address])
    assert r.exit_code == 0 and "not touched" in r.output
    # Forgotten, not deleted: the next plan shows it as an import (it exists), not as a create.
    r = runner.invoke(app, ["plan", "--detailed-exitcode"])
    assert r.exit_code == 2 and f"# {address} will be imported" in r.output
    assert "Plan: 1 to import, 0 to add, 0 to change, 0 to destroy." in r.output
    # ...and destroy would leave it alone while it is not in the state.
    r = runner.invoke(app, ["plan", "--destroy", "--show-unchanged"])
    assert f"= {address}: iam.service_account gke-node exists but is not in the state" in r.output
    r = runner.invoke(app, ["import", address, "wrong@example.com"])
    assert r.exit_code == 1 and f"is {email}, not wrong@example.com" in r.output
    r = runner.invoke(app, ["import", address, email])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plan", "--detailed-exitcode"])
    assert r.exit_code == 0 and "No changes." in r.output


def test_state_pull_and_push_roundtrip_with_serial_check(team: Any, tmp_path: Path) -> None:
    b = backend(team)
    s = State.new()
    b.write(s)
    r = runner.invoke(app, ["state", "pull"])
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["lineage"] == s.lineage
    doc["resources"]["x.one"] = {"type": "x", "id": "1", "attributes": {}, "dependencies": []}
    f = tmp_path / "edited.json"
    f.write_text(json.dumps(doc))
    r = runner.invoke(app, ["state", "push", str(f)])
    assert r.exit_code == 0 and "serial 2" in r.output
    doc["serial"] = 1
    doc["resources"] = {}
    f.write_text(json.dumps(doc))
    r = runner.invoke(app, ["state", "push", str(f)])
    assert r.exit_code == 1 and "older" in r.output
    stored = backend(team).read()
    assert stored is not None and "x.one" in stored.resources


def test_the_bucket_holding_the_state_is_never_deleted(make_emu: Callable[..., Any], tmp_path: Path) -> None:
    emu = make_emu()
    cfg = sdcluster.Config.build(
        project=PROJECT, user=USER, state={"path": "gs://demo-proj-bucket/state/state.json"}
    )
    from sdcluster.gcp.stack import GcpStack

    stack = GcpStack(cfg, factory=factory(emu, USER), delete_bucket=True, force_bucket=True)
    bucket = next(r for r in stack.resources() if r.address == "storage.bucket.demo-proj-bucket")
    assert bucket.retain_on_destroy


def _write(path: Path, state: State) -> Path:
    LocalBackend(path).write(state)
    return path
