"""The state document (in the spirit of terraform.tfstate) and where it is kept.

The document::

    {"format_version": 1, "serial": 7, "lineage": "<uuid>", "sdcluster_version": "0.1.0",
     "resources": {"iam.service_account.gke-admin": {"type": "...", "id": "...",
                   "attributes": {...}, "dependencies": [...]}},
     "outputs": {"endpoint": "http://..."}}

``serial`` is bumped on every write that changes content; ``lineage`` is fixed at creation, so a
saved plan can tell whether the state it was made from is still the current one.

``LocalBackend`` writes atomically (temp file in the same directory, fsync, ``os.replace``, fsync of
the directory), keeps the previous content as ``<path>.backup``, uses mode 0600, and locks with an
OS-level lock plus a small info record (pid, host, operation, started-at) so a second run fails fast
with ``StateLocked`` naming the holder.

Example::

    backend = LocalBackend(".sdcluster/state.json")
    with backend.lock("apply"):
        state = backend.read() or State.new()
        state.resources["x"] = ResourceState(type="demo", id="x")
        backend.write(state)
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._version import __version__
from .errors import (
    StateCorrupt,
    StateError,
    StateLocked,
    StateVersionError,
)

FORMAT_VERSION = 1


@dataclass
class ResourceState:
    type: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "attributes": copy.deepcopy(self.attributes),
            "dependencies": list(self.dependencies),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResourceState:
        return cls(
            type=str(d["type"]),
            id=str(d.get("id", "")),
            attributes=dict(d.get("attributes") or {}),
            dependencies=[str(x) for x in d.get("dependencies") or []],
        )


@dataclass
class State:
    lineage: str
    serial: int = 0
    resources: dict[str, ResourceState] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    sdcluster_version: str = __version__

    @classmethod
    def new(cls) -> State:
        return cls(lineage=str(uuid.uuid4()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "serial": self.serial,
            "lineage": self.lineage,
            "sdcluster_version": self.sdcluster_version,
            "resources": {a: r.to_dict() for a, r in sorted(self.resources.items())},
            "outputs": copy.deepcopy(self.outputs),
        }

    def content(self) -> dict[str, Any]:
        """What counts as a change (serial and writer version excluded)."""
        d = self.to_dict()
        d.pop("serial")
        d.pop("sdcluster_version")
        return d

    def copy(self) -> State:
        return State.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "state") -> State:
        if not isinstance(d, dict):
            raise StateCorrupt(f"{source} is not a JSON object")
        version = d.get("format_version")
        if not isinstance(version, int):
            raise StateCorrupt(f"{source} has no format_version")
        if version > FORMAT_VERSION:
            raise StateVersionError(
                f"{source} has format_version {version}, written by a newer sdcluster "
                f"({d.get('sdcluster_version', '?')}); this is {__version__} (format {FORMAT_VERSION})",
                hint="upgrade sdcluster (pip install -U sdcluster); the file was left untouched",
            )
        try:
            return cls(
                format_version=version,
                serial=int(d["serial"]),
                lineage=str(d["lineage"]),
                sdcluster_version=str(d.get("sdcluster_version", "")),
                resources={str(a): ResourceState.from_dict(r) for a, r in (d.get("resources") or {}).items()},
                outputs=dict(d.get("outputs") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StateCorrupt(f"{source} is malformed: {e!r}") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


@dataclass
class LockInfo:
    operation: str
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    user: str = field(default_factory=lambda: os.environ.get("USER", ""))
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} ({self.operation}) since {self.started_at}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LockInfo:
        known = {k: d[k] for k in ("operation", "pid", "host", "user", "started_at", "id") if k in d}
        return cls(**known)


class Backend(Protocol):
    """Where state lives: LocalBackend (a file) or GcsBackend (an object in Cloud Storage)."""

    def describe(self) -> str: ...

    def read(self) -> State | None: ...

    def write(self, state: State) -> State: ...

    def lock(self, operation: str) -> contextlib.AbstractContextManager[LockInfo]: ...

    def force_unlock(self) -> LockInfo | None: ...

    def holder(self) -> LockInfo | None:
        """Who holds the lock now (None: nobody), without taking it or creating anything."""
        ...

    def lock_is_mine(self) -> bool:
        """True while this object holds the lock."""
        ...


def locked_error(info: LockInfo | None, where: str) -> StateLocked:
    holder = info.describe() if info else "another process"
    return StateLocked(
        f"the state {where} is locked by {holder}",
        hint="wait for that run to finish; if that run is dead: sdcluster force-unlock",
        holder=info.to_dict() if info else {},
    )


def next_serial(stored: State | None, state: State, where: str) -> bool:
    """Prepare ``state`` to replace ``stored``: False when nothing changed (serial kept); otherwise
    bump the serial. Refuses to replace a state of another lineage."""
    if stored is None:
        state.serial = max(state.serial, 1)
    else:
        if stored.lineage != state.lineage:
            raise StateError(
                f"refusing to overwrite state {where}: it belongs to another lineage "
                f"({stored.lineage}, not {state.lineage})",
                hint="use a different state location, or move the existing one away",
            )
        if stored.content() == state.content():
            state.serial = stored.serial
            return False
        state.serial = max(state.serial, stored.serial) + 1
    state.sdcluster_version = __version__
    return True


class LocalBackend:
    """State in a local JSON file, written atomically with a backup, locked with flock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._held: LockInfo | None = None

    def describe(self) -> str:
        return str(self.path)

    # ---- reading ---------------------------------------------------------------------------------
    def read(self) -> State | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise self._corrupt(f"is not UTF-8 text (byte {e.start})") from e
        except json.JSONDecodeError as e:
            raise self._corrupt(f"is not valid JSON ({e.msg} at line {e.lineno})") from e
        try:
            return State.from_dict(data, source=f"state file {self.path}")
        except StateCorrupt as e:
            raise self._corrupt(str(e).replace(f"state file {self.path} ", "")) from e

    def _corrupt(self, what: str) -> StateCorrupt:
        if self.backup_path.exists():
            hint = (
                f"the previous version is in {self.backup_path}; inspect it and, if it is right, "
                f"copy it over {self.path}. sdcluster will not overwrite a corrupt state."
            )
        else:
            hint = f"fix or move {self.path} away; sdcluster will not overwrite a corrupt state"
        return StateCorrupt(f"state file {self.path} {what}", hint=hint)

    # ---- writing ---------------------------------------------------------------------------------
    def write(self, state: State) -> State:
        """Persist ``state`` if its content changed (bumping serial). Returns what is now stored."""
        current = self.read()
        if not next_serial(current, state, str(self.path)):
            return state
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if current is not None:
            atomic_write(self.backup_path, self.path.read_bytes())
        atomic_write(self.path, state.to_json().encode("utf-8"))
        return state

    # ---- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        import fcntl

        if self._held is not None:  # re-entrant within one process (e.g. apply inside a locked plan)
            yield self._held
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise locked_error(self._read_lock_info(), str(self.path)) from None
            info = LockInfo(operation=operation)
            self._remove_stale_temp_files()
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info.to_dict()).encode(), 0)
            os.fsync(fd)
            self._held = info
            try:
                yield info
            finally:
                self._held = None
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a write that was killed before its rename (we hold the lock: none is live)."""
        for name in (self.path.name, self.backup_path.name):
            for tmp in self.path.parent.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def lock_is_mine(self) -> bool:
        return self._held is not None

    def holder(self) -> LockInfo | None:
        import fcntl

        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None  # no lock file (or not readable): nobody can hold it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read_lock_info() or LockInfo(operation="unknown", pid=0, host="?")
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _read_lock_info(self) -> LockInfo | None:
        try:
            return LockInfo.from_dict(json.loads(self.lock_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def force_unlock(self) -> LockInfo | None:
        """Remove a lock left behind. A lock still held by a live process here is not removed."""
        import fcntl

        info = self._read_lock_info()
        if not self.lock_path.exists():
            return None
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = info.describe() if info else "a running process"
                raise StateLocked(
                    f"the lock on {self.path} is held by a live process: {holder}",
                    hint="stop that process first (the OS releases its lock when it exits)",
                    holder=info.to_dict() if info else {},
                ) from None
            self.lock_path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return info


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
