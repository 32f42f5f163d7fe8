"""The state document (in the spirit of terraform.tfstate) and where it is kept.

The document::

    {"format_version": 1, "serial": 7, "lineage": "<uuid>", "sdcluster_version": "0.1.0",
     "project": "demo-proj",
     "resources": {"iam.service_account.gke-admin": {"type": "...", "id": "...",
                   "attributes": {...}, "dependencies": [...]},
                   "gke.cluster.sd-cluster": {..., "pending": true}},
     "outputs": {"endpoint": "http://..."}}

``serial`` is bumped on every write that changes content; ``lineage`` is fixed at creation, so a
saved plan can tell whether the state it was made from is still the current one. ``project`` is the
project the resources live in (a state is bound to one project; an empty value is a state written
before it was recorded). A record with ``"pending": true`` is a create that was started and not
yet confirmed (written before the create call, so a run killed at any point leaves nothing the next
run cannot find). Reading is strict: a field of the wrong type or out of range is refused with its
name (and the backup to turn to), never guessed at or overwritten.

``LocalBackend`` writes atomically (temp file in the same directory, fsync, ``os.replace``, fsync of
the directory), keeps the previous content as ``<path>.backup`` (a hard link to the file replaced,
nothing copied), uses mode 0600, and locks with an OS-level lock plus a small info record (pid,
host, operation, started-at) so a second run fails fast with ``StateLocked`` naming the holder. A
symlinked state file is written through to its target (the link stays a link). A write that fails
(full disk, read-only directory) raises ``StateWriteError`` naming the file and the reason;
``check_writable`` finds such a location before anything is changed.

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
import errno
import functools
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
    StateWriteError,
)

FORMAT_VERSION = 1


@dataclass
class ResourceState:
    type: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    # A create that was started but not confirmed: the thing may or may not exist (see the module doc).
    pending: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "attributes": copy.deepcopy(self.attributes),
            "dependencies": list(self.dependencies),
        }
        if self.pending:
            d["pending"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResourceState:
        return cls(
            type=str(d["type"]),
            id=str(d.get("id", "")),
            attributes=dict(d.get("attributes") or {}),
            dependencies=[str(x) for x in d.get("dependencies") or []],
            pending=bool(d.get("pending", False)),
        )


@dataclass
class State:
    lineage: str
    serial: int = 0
    resources: dict[str, ResourceState] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    sdcluster_version: str = __version__
    project: str = ""  # "" in states written before the project was recorded

    @classmethod
    def new(cls, project: str = "") -> State:
        return cls(lineage=str(uuid.uuid4()), project=project)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "serial": self.serial,
            "lineage": self.lineage,
            "sdcluster_version": self.sdcluster_version,
        }
        if self.project:
            d["project"] = self.project
        d["resources"] = {a: r.to_dict() for a, r in sorted(self.resources.items())}
        d["outputs"] = copy.deepcopy(self.outputs)
        return d

    def rename(self, renames: dict[str, str]) -> None:
        """Move records to new addresses, in place, with the dependencies that name them."""
        self.resources = {renames.get(a, a): r for a, r in self.resources.items()}
        for r in self.resources.values():
            r.dependencies = [renames.get(d, d) for d in r.dependencies]

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
        """Validate strictly (``StateCorrupt`` names the first bad field) and build the state."""
        if not isinstance(d, dict):
            raise StateCorrupt(f"{source} is not a JSON object")
        version = d.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise StateVersionError(
                f"{source} has format_version {version}, written by a newer sdcluster "
                f"({d.get('sdcluster_version', '?')}); this is {__version__} (format {FORMAT_VERSION})",
                hint="upgrade sdcluster (pip install -U sdcluster); the file was left untouched",
            )
        doc = _validated(d, source)
        return cls(
            format_version=doc.format_version,
            serial=doc.serial,
            lineage=doc.lineage,
            sdcluster_version=doc.sdcluster_version,
            project=doc.project,
            resources={
                a: ResourceState(r.type, r.id, dict(r.attributes), list(r.dependencies), r.pending)
                for a, r in doc.resources.items()
            },
            outputs=dict(doc.outputs),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


@functools.cache
def _document_schema() -> Any:
    """The schema a state document must satisfy (strict: 3.7 is no serial, "12" no lineage, true no 1).

    Built on first use: pydantic is the heaviest import here, and ``sdcluster --help`` needs none of it.
    """
    from pydantic import BaseModel, ConfigDict, Field

    class _Record(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        type: str = Field(min_length=1)
        id: str = ""
        attributes: dict[str, Any] = Field(default_factory=dict)
        dependencies: list[str] = Field(default_factory=list)
        pending: bool = False

    class _Document(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        format_version: int = Field(ge=1, le=FORMAT_VERSION)
        serial: int = Field(ge=0)
        lineage: str = Field(min_length=1)
        sdcluster_version: str = ""
        project: str = ""
        resources: dict[str, _Record] = Field(default_factory=dict)
        outputs: dict[str, Any] = Field(default_factory=dict)

    return _Document


def _validated(d: dict[str, Any], source: str) -> Any:
    from pydantic import ValidationError

    try:
        return _document_schema().model_validate(d)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        got = (
            "" if first["type"] == "missing" else f" (got {json.dumps(first.get('input'), default=str)[:80]})"
        )
        raise StateCorrupt(f"{source} is malformed: {where}: {first['msg'].lower()}{got}") from None


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

    def check_writable(self) -> None:
        """Raise ``StateWriteError`` now if a write would fail (called before the first mutating call)."""
        ...

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
    """State in a local JSON file, written atomically with a backup, locked with flock.

    The backup and the lock live next to the file the state is really in: for a symlinked
    ``state.json``, next to the link's target, which is written through (the link stays a link).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.name in ("", ".", ".."):
            raise StateError(
                f"the state path {str(path)!r} is a directory, not a file",
                hint='name a file, e.g. state.path = ".sdcluster/state.json" (or --state PATH)',
            )
        self._held: LockInfo | None = None

    def describe(self) -> str:
        return str(self.path)

    @property
    def file(self) -> Path:
        """The file the state is in (a symlink's target)."""
        return Path(os.path.realpath(self.path)) if self.path.is_symlink() else self.path

    @property
    def backup_path(self) -> Path:
        f = self.file
        return f.with_name(f.name + ".backup")

    @property
    def lock_path(self) -> Path:
        f = self.file
        return f.with_name(f.name + ".lock")

    # ---- reading ---------------------------------------------------------------------------------
    def read(self) -> State | None:
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._unusable(self.path, e, "read") from e
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise self._corrupt(f"is not UTF-8 text (byte {e.start})") from e
        except json.JSONDecodeError as e:
            raise self._corrupt(f"is not valid JSON ({e.msg} at line {e.lineno})") from e
        except RecursionError:
            raise self._corrupt("is nested too deeply to be a state document") from None
        try:
            return State.from_dict(data, source=f"state file {self.path}")
        except StateCorrupt as e:
            raise self._corrupt(str(e).replace(f"state file {self.path} ", "")) from e

    def _corrupt(self, what: str) -> StateCorrupt:
        if self.backup_path.is_file():
            hint = (
                f"the previous version is in {self.backup_path}; inspect it and, if it is right, "
                f"copy it over {self.path}. sdcluster will not overwrite a corrupt state."
            )
        else:
            hint = f"fix or move {self.path} away; sdcluster will not overwrite a corrupt state"
        return StateCorrupt(f"state file {self.path} {what}", hint=hint)

    def _unusable(self, where: Path, e: OSError, doing: str) -> StateWriteError:
        """An OSError on the state location as an error naming the place and the reason."""
        reason = e.strerror or str(e)
        if isinstance(e, IsADirectoryError) or (where.exists() and where.is_dir()):
            reason = "it is a directory, not a file"
        elif isinstance(e, NotADirectoryError | FileExistsError):
            reason = f"{_first_non_directory(where)} is a file, not a directory"
        return StateWriteError(
            f"cannot {doing} the state at {where}: {reason}",
            hint=(
                f"nothing was written. Make {self.file.parent} a writable directory with free space "
                "(or keep the state elsewhere: --state PATH / state.path)"
            ),
            path=str(where),
        )

    # ---- writing ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail now (``StateWriteError``) if the state could not be written later: a path that is a
        directory, a parent that is a file, a read-only or full file system. Writes and removes a
        probe file the size of the current state."""
        f = self.file
        for where in (f, self.backup_path, self.lock_path):
            if where.is_dir():
                raise self._unusable(where, IsADirectoryError(21, "Is a directory"), "write")
        size = f.stat().st_size if f.is_file() else 4096
        probe = f.with_name(f".{f.name}.{os.getpid()}.probe.tmp")
        try:
            f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b" " * (2 * size + 4096))  # room for the state and its backup growing
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise self._unusable(f, e, "write") from e
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def write(self, state: State) -> State:
        """Persist ``state`` if its content changed (bumping serial). Returns what is now stored.

        Raises ``StateWriteError`` when nothing could be written (the stored state is unchanged)."""
        current = self.read()
        if not next_serial(current, state, str(self.path)):
            return state
        f = self.file
        where = f
        try:
            f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if current is not None:
                where = self.backup_path
                _keep_as(f, where)
            where = f
            atomic_write(f, state.to_json().encode("utf-8"))
        except OSError as e:
            raise self._unusable(where, e, "write") from e
        return state

    # ---- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        import fcntl

        if self._held is not None:  # re-entrant within one process (e.g. apply inside a locked plan)
            yield self._held
            return
        lock_path = self.lock_path
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise self._unusable(lock_path, e, "lock") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise locked_error(self._read_lock_info(), str(self.path)) from None
            info = LockInfo(operation=operation)
            self._remove_stale_temp_files()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info.to_dict()).encode(), 0)
                os.fsync(fd)
            except OSError as e:
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise self._unusable(lock_path, e, "lock") from e
            self._held = info
            try:
                yield info
            finally:
                self._held = None
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a write that was killed before its rename (we hold the lock: none is live)."""
        f = self.file
        for name in (f.name, self.backup_path.name):
            for tmp in f.parent.glob(f".{name}.*.tmp"):
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
        lock_path = self.lock_path
        if not lock_path.exists():
            return None
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError as e:
            raise self._unusable(lock_path, e, "unlock") from e
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
            lock_path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return info


def _first_non_directory(path: Path) -> Path:
    """The first component of ``path`` that exists and is not a directory (for error messages)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path


def _keep_as(path: Path, backup: Path) -> None:
    """Make ``backup`` the current content of ``path``, atomically: a second name (hard link) for
    the file, which is never written in place (``atomic_write`` replaces it), so nothing is copied
    and the one directory sync of the write that follows covers both names. Where hard links are
    not supported, a copy."""
    tmp = _temp_beside(backup)
    try:
        os.chmod(path, 0o600)  # the backup shares its mode: a file from an older version may be 0644
        os.link(path, tmp)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        atomic_write(backup, path.read_bytes())
        return
    try:
        os.replace(tmp, backup)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _temp_beside(path: Path) -> Path:
    """A temporary name next to ``path`` (``.NAME.PID.RANDOM.tmp``: what the lock's taker removes)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content."""
    tmp = _temp_beside(path)
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
