"""Where the state lives, through the CLI: places it cannot be written to, full and read-only file
systems (real tmpfs mounts), a symlinked state file, and lax documents. Each unusable place exits 1
with ``Error: ...`` naming it, shows no traceback, and is found before the first mutating call; a
disk that fills up mid-apply is reported as what it is (what was made, that the state could not be
written, where), and the next run continues without creating anything twice.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sdcluster.state import LocalBackend, ResourceState, State
from sdcluster.ui.cli import app

from ..helpers import SDCLUSTER_APIS
from .runs import KNOBS
from .worldview import PROJECT, USER, Reference, creates

runner = CliRunner()
VALID = f'project = "{PROJECT}"\nuser = "{USER}"\n'
STATE = Path(".sdcluster/state.json")
SA = "iam.service_account.gke-admin"


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    from sdcluster.emulator import Emulator

    with Emulator(**KNOBS, enabled_services=SDCLUSTER_APIS) as emulator:
        yield emulator


@pytest.fixture
def project_dir(emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a valid sdcluster.toml, routed to the emulator, with a clean log."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    Path("sdcluster.toml").write_text(VALID)
    emu.log.clear()
    return tmp_path


def refused(emu: Any, args: list[str], *expected: str) -> str:
    """Run the CLI; assert exit 1, ``Error:`` with each ``expected`` text, no traceback, no mutation."""
    result = runner.invoke(app, args)
    out = result.output
    assert result.exit_code == 1, out + repr(result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Error: " in out and "Traceback" not in out, out
    for text in expected:
        assert text in out, out
    assert emu.log.mutating() == [], emu.log.mutating()
    return out


def small_state(path: Path = STATE, writes: int = 2) -> State:
    """A state recording one service account that does not exist (so apply would create it),
    written ``writes`` times (from 2 on, a backup exists)."""
    backend = LocalBackend(path)
    state = State.new()
    state.project = PROJECT
    for i in range(writes):
        state.resources[SA] = ResourceState(
            type="iam.service_account",
            id=f"gke-admin@{PROJECT}.iam.gserviceaccount.com",
            attributes={"display_name": f"v{i}"},
        )
        backend.write(state)
    return state


# --------------------------------------------------------------------------------------------------
# Places that are not a writable file


def _dir_state() -> None:
    STATE.mkdir(parents=True)


def _dir_lock() -> None:
    small_state()
    STATE.with_name("state.json.lock").mkdir()


def _file_parent() -> None:
    Path(".sdcluster").write_text("not a directory")


def _dir_backup() -> None:
    small_state()
    backup = STATE.with_name("state.json.backup")
    backup.unlink()
    backup.mkdir()


PLACES: dict[str, tuple[Callable[[], None], list[str], list[str]]] = {
    "state path is a directory": (_dir_state, [], ["state.json", "is a directory"]),
    ".lock is a directory": (_dir_lock, [], ["state.json.lock", "is a directory"]),
    ".sdcluster is a file": (_file_parent, [], [".sdcluster is a file, not a directory"]),
    "state.path is '.'": (lambda: None, ["--state", "."], ["'.'", "is a directory"]),
    "backup is a directory": (_dir_backup, [], ["state.json.backup", "is a directory"]),
}


@pytest.mark.parametrize("make, options, expected", PLACES.values(), ids=PLACES.keys())
def test_unwritable_state_places_are_refused_before_any_change(
    emu: Any, project_dir: Path, make: Callable[[], None], options: list[str], expected: list[str]
) -> None:
    make()
    refused(emu, [*options, "apply", "-y"], *expected)
    refused(emu, [*options, "destroy", "-y"], *expected)


def test_state_rm_with_the_backup_a_directory_is_refused_and_changes_nothing(
    emu: Any, project_dir: Path
) -> None:
    _dir_backup()
    before = STATE.read_bytes()
    refused(emu, ["state", "rm", SA], "state.json.backup", "is a directory")
    assert STATE.read_bytes() == before


def test_a_symlinked_state_file_is_written_through_to_its_target(emu: Any, project_dir: Path) -> None:
    shared = project_dir / "shared" / "state.json"
    small_state(shared)
    STATE.parent.mkdir()
    STATE.symlink_to(shared)
    result = runner.invoke(app, ["state", "rm", SA])
    assert result.exit_code == 0, result.output
    assert STATE.is_symlink() and STATE.resolve() == shared  # still a link, to the same target
    assert SA not in json.loads(shared.read_text())["resources"]  # the shared target was written
    assert shared.with_name("state.json.backup").is_file()  # the backup is next to the target
    assert not STATE.with_name("state.json.backup").exists()


# --------------------------------------------------------------------------------------------------
# Lax documents


def _edited(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.update(fields)


LAX: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "resources a list": (_edited(resources=[]), "resources"),
    "fractional serial": (_edited(serial=3.7), "serial"),
    "negative serial": (_edited(serial=-5), "serial"),
    "numeric lineage": (_edited(lineage=12), "lineage"),
    "format_version 0": (_edited(format_version=0), "format_version"),
    "format_version true": (_edited(format_version=True), "format_version"),
    "record without a type": (lambda d: d["resources"][SA].pop("type"), f"resources.{SA}.type"),
    "pending not a boolean": (lambda d: d["resources"][SA].update(pending="yes"), "pending"),
}


@pytest.mark.parametrize("edit, field", LAX.values(), ids=LAX.keys())
def test_lax_state_documents_are_refused_naming_the_field_and_the_backup(
    emu: Any, project_dir: Path, edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    small_state()
    doc = json.loads(STATE.read_text())
    edit(doc)
    STATE.write_text(json.dumps(doc))
    damaged = STATE.read_bytes()
    for command in (["plan"], ["apply", "-y"], ["destroy", "-y"], ["state", "rm", SA]):
        refused(emu, command, "malformed", field, "state.json.backup")
    assert STATE.read_bytes() == damaged  # never overwritten


def test_a_deeply_nested_state_file_is_refused_not_a_crash(emu: Any, project_dir: Path) -> None:
    STATE.parent.mkdir()
    STATE.write_text('{"format_version": 1, "outputs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(emu, ["plan"], "state.json", "nested too deeply")


# --------------------------------------------------------------------------------------------------
# Real file systems: full, read-only


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (tests run as root), unmounted whatever happens."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def test_read_only_state_directory_is_refused_before_any_change(emu: Any, project_dir: Path) -> None:
    with tmpfs(project_dir / ".sdcluster", "1m"):
        small_state()
        before = STATE.read_bytes()
        remount(project_dir / ".sdcluster", "ro")
        for command in (["apply", "-y"], ["destroy", "-y"], ["state", "rm", SA]):
            refused(emu, command, "state.json", "Read-only file system")
        assert STATE.read_bytes() == before


def test_a_disk_that_fills_up_mid_apply_is_reported_truthfully_and_the_rerun_continues(
    make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Reference
) -> None:
    emu = make_emu(**KNOBS)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    Path("sdcluster.toml").write_text(VALID)
    # 8 pages: room for the state, its backup and a temp copy while the state is small, not once it
    # has grown to a few records (about a third of the way through the apply).
    with tmpfs(tmp_path / ".sdcluster", "32k"):
        result = runner.invoke(app, ["apply", "-y"])
        out = result.output
        assert result.exit_code == 1, out
        assert isinstance(result.exception, SystemExit) and "Traceback" not in out, out
        assert "Error: the state could not be written" in out and "No space left on device" in out, out
        assert str(STATE) in out and "made by this run:" in out, out
        assert "state was saved" not in out, out
        # Whatever exists was recorded before it was made (done, or pending).
        stored = LocalBackend(STATE).read()
        assert stored is not None
        made = [e.method for e in emu.log.mutating()]
        assert made, "the disk filled before anything was made: the tmpfs is too small for this test"
        remount(tmp_path / ".sdcluster", "size=4m")  # space again
        again = runner.invoke(app, ["apply", "-y"])
        assert again.exit_code == 0, again.output
    assert creates(emu) == reference.creates  # nothing was created twice
