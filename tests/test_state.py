"""State: atomic writes, backup rotation, refusal of future/corrupt files, locking across processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdcluster import state as st
from sdcluster.errors import StateCorrupt, StateError, StateLocked, StateVersionError
from sdcluster.state import LocalBackend, ResourceState, State


def sample(n: int = 1) -> State:
    s = State.new()
    for i in range(n):
        s.resources[f"test.thing.t{i}"] = ResourceState(type="test.thing", id=f"t{i}", attributes={"size": i})
    return s


def test_write_read_roundtrip_mode_0600_and_serial(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "deep" / "dir" / "state.json")
    s = sample(2)
    b.write(s)
    assert stat.S_IMODE(os.stat(b.path).st_mode) == 0o600
    back = b.read()
    assert back is not None and back.to_dict() == s.to_dict() and back.serial == 1
    # No content change: serial stays and nothing is rewritten.
    mtime = os.stat(b.path).st_mtime_ns
    b.write(back)
    assert b.read().serial == 1 and os.stat(b.path).st_mtime_ns == mtime  # type: ignore[union-attr]
    back.resources["test.thing.t9"] = ResourceState(type="test.thing", id="t9")
    b.write(back)
    assert b.read().serial == 2  # type: ignore[union-attr]


def test_backup_keeps_previous_content(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "state.json")
    s = sample(1)
    b.write(s)
    first = b.path.read_text()
    s.resources["test.thing.x"] = ResourceState(type="test.thing", id="x")
    b.write(s)
    assert b.backup_path.read_text() == first
    assert stat.S_IMODE(os.stat(b.backup_path).st_mode) == 0o600


def test_crash_between_write_and_rename_leaves_parseable_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = LocalBackend(tmp_path / "state.json")
    s = sample(1)
    b.write(s)
    s.resources["test.thing.new"] = ResourceState(type="test.thing", id="new")

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(st.os, "replace", crash)
    with pytest.raises(StateError, match="simulated crash"):
        b.write(s)
    monkeypatch.undo()
    back = b.read()
    assert back is not None and "test.thing.new" not in back.resources  # old content, intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp file cleaned


def test_future_format_refused_and_untouched(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "state.json")
    doc = {**sample().to_dict(), "format_version": 99, "sdcluster_version": "9.0"}
    b.path.write_text(json.dumps(doc))
    with pytest.raises(StateVersionError, match="format_version 99") as err:
        b.read()
    assert "upgrade" in err.value.hint
    with pytest.raises(StateVersionError):
        b.write(sample())
    assert json.loads(b.path.read_text())["format_version"] == 99


@pytest.mark.parametrize(
    "content", ["", "{", '{"format_version": 1, "serial": 1}', "[1, 2]", '{"serial": "x"}']
)
def test_corrupt_or_truncated_file_refused_with_pointer_to_backup(tmp_path: Path, content: str) -> None:
    b = LocalBackend(tmp_path / "state.json")
    b.write(sample())
    s = b.read()
    s.resources["test.thing.y"] = ResourceState(type="test.thing", id="y")  # type: ignore[union-attr]
    b.write(s)  # type: ignore[arg-type]
    b.path.write_text(content)
    with pytest.raises(StateCorrupt) as err:
        b.read()
    assert str(b.backup_path) in err.value.hint
    with pytest.raises(StateCorrupt):
        b.write(sample())
    assert b.path.read_text() == content  # never overwritten silently


def test_other_lineage_is_not_overwritten(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "state.json")
    b.write(sample())
    with pytest.raises(StateError, match="another lineage"):
        b.write(sample())


LOCKER = textwrap.dedent(
    """
    import sys, time
    from sdcluster.state import LocalBackend
    b = LocalBackend(sys.argv[1])
    with b.lock("apply"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_two_processes_contend_one_gets_state_locked_naming_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        contender = subprocess.run(
            [sys.executable, "-c", LOCKER, str(path), "0"], capture_output=True, text=True, timeout=60
        )
        assert contender.returncode != 0
        assert "StateLocked" in contender.stderr and f"pid {holder.pid}" in contender.stderr
        with pytest.raises(StateLocked) as err, LocalBackend(path).lock("plan"):
            pass
        assert err.value.holder["pid"] == holder.pid and err.value.holder["operation"] == "apply"
        assert "force-unlock" in err.value.hint
        with pytest.raises(StateLocked, match="live process"):
            LocalBackend(path).force_unlock()
    finally:
        holder.kill()
        holder.wait()
    # The holder died: the OS released its lock, the next run proceeds.
    with LocalBackend(path).lock("apply") as info:
        assert info.pid == os.getpid()


def test_force_unlock_removes_a_dead_lock_record(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    p = subprocess.run(
        [sys.executable, "-c", LOCKER + "\nimport os; os._exit(0)", str(path), "0"], timeout=60
    )
    assert p.returncode == 0
    b = LocalBackend(path)
    b.lock_path.write_text(
        json.dumps({"operation": "apply", "pid": 999999, "host": "gone", "started_at": "then"})
    )
    info = b.force_unlock()
    assert info is not None and info.pid == 999999 and not b.lock_path.exists()
    assert b.force_unlock() is None
    with b.lock("plan") as held:
        assert held.operation == "plan"


def test_temp_files_of_a_killed_write_are_removed_when_the_lock_is_taken(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "state.json")
    b.write(sample())
    leftovers = [tmp_path / ".state.json.4242.deadbeef.tmp", tmp_path / ".state.json.backup.4242.cafe.tmp"]
    for f in leftovers:
        f.write_text("partial")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("mine")
    with b.lock("apply"):
        pass
    assert not any(f.exists() for f in leftovers) and unrelated.exists()
