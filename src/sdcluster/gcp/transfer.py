"""How bytes get from local files to objects under a prefix: in parallel, resumable, verified.

``send(bucket, prefix, files, ...)`` guarantees on return that ``<prefix><file.name>`` exists for
every file, with the file's CRC32C, and that no temporary object it made is left behind. Callers
(``upload.upload_model``, or a publish step that stages a version under one prefix and copies it to
another) decide which files to send and where; this module only moves bytes.

How (Cloud Storage's JSON API, https://cloud.google.com/storage/docs/performing-resumable-uploads
and https://cloud.google.com/storage/docs/parallel-composite-uploads):

- every file, and every ``PART_SIZE`` slice of a large file, is one **resumable session** sent as
  one streamed PUT, read from disk in 1 MiB blocks (memory does not grow with the file);
- up to ``max_workers`` sessions run at once; a large file's parts are composed into the final
  object (at most 32 per compose), then the part objects are deleted (or left to a caller that
  deletes the whole prefix: ``keep_parts``);
- the streams end together: the files, largest first, are cut into ``max_workers`` lanes of equal
  bytes (McNaughton's wrap-around rule for splittable jobs on parallel machines), each lane sent
  part after part by one stream, a file that straddles two lanes going up as two parts. Largest
  first alone leaves the last files to a few streams while the others idle (16 equal files and one
  small one on 8 streams: the small one runs alone at the end); the wrap adds at most one part per
  lane. Small uploads (lanes under ``MIN_LANE``) keep one part per file, largest first;
- each session's URI is written to a journal **before** its first byte is sent (``journal_path``,
  next to the state, mode 0600): an interrupted run leaves it behind, and the next run asks each
  session how much it holds (``Content-Range: bytes */SIZE``) and sends only the rest; a finished
  part's object (generation, CRC32C) replaces its session there, so the finished parts of a large
  file interrupted before its compose are not sent again either;
- a lost or cut answer (connection reset, truncated JSON) and 5xx/429 are retried by asking the
  session where it stands; 404/410 on a session (expired, cancelled) starts that part again;
- every part's CRC32C is checked against the bytes read, and every final object's against the file.

Example::

    sent = send(bucket, "model/1/", files, journal_path=Path(".sdcluster/uploads/x.json"), project="p")
    sent.bytes_sent  # bytes that went over the wire this run
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from .. import retry
from ..errors import NotFound, SdclusterError, translate

T = TypeVar("T")
MIB = 1024 * 1024
PART_SIZE = 32 * MIB  # files above this go up in parallel parts, then compose
MAX_PARTS = 32  # one compose request; larger files get larger parts
MIN_LANE = 4 * MIB  # below this per stream, cutting files for balance costs more requests than it saves
_UNIT = 256 * 1024  # resumable uploads persist in 256 KiB units: parts are multiples of it
_READ = MIB
ATTEMPTS = 8
COMPONENTS = ".sdcluster-upload/"  # where parts of large files wait for their compose


def parts_prefix(prefix: str) -> str:
    """Where the parts of the files sent to ``prefix`` are (``keep_parts`` leaves them there)."""
    return f"{COMPONENTS}{prefix}"


class LocalFileLike(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...


class Stopped(SdclusterError):
    """The transfer was asked to stop (Ctrl-C); the journal keeps what the next run resumes."""


class UploadCorrupted(SdclusterError):
    """Cloud Storage holds other bytes than the file (the CRC32C differs)."""


@dataclass(frozen=True)
class Part:
    file: LocalFileLike
    index: int
    count: int
    offset: int
    size: int
    object_name: str  # the final object for a one-part file, else the part's own object

    @property
    def key(self) -> str:
        return self.object_name


@dataclass
class Sent:
    """What ``send`` did this run."""

    bytes_sent: int = 0  # over the wire, re-sent bytes included
    bytes_resumed: int = 0  # held by sessions of an earlier run: not sent again
    files: int = 0
    parts: int = 0
    sessions_resumed: int = 0
    workers: set[int] = field(default_factory=set)


def split(files: Sequence[LocalFileLike], prefix: str) -> list[Part]:
    """The parts to send, largest first: a file of at most ``PART_SIZE`` is one part."""
    return sorted((p for f in files for p in _parts(f, prefix, [(0, f.size)])), key=lambda p: -p.size)


def _part_size(f: LocalFileLike, cuts: int = 0) -> int:
    """The largest part of ``f``: ``PART_SIZE``, or more so that its parts (and ``cuts`` more made
    at lane ends) fit in one compose."""
    size = max(PART_SIZE, -(-f.size // max(1, MAX_PARTS - cuts)))
    return size + -size % _UNIT


def _parts(f: LocalFileLike, prefix: str, ranges: list[tuple[int, int]], cuts: int = 0) -> list[Part]:
    """``f``'s parts: each (start, end) byte range, cut into parts of at most ``_part_size``."""
    size = _part_size(f, cuts)
    pieces = [(o, min(size, end - o)) for start, end in ranges for o in range(start, end, size)]
    pieces = pieces or [(0, 0)]  # an empty file is one empty object
    if len(pieces) == 1:
        return [Part(f, 0, 1, 0, f.size, prefix + f.name)]
    n = len(pieces)
    return [
        Part(f, i, n, offset, length, f"{parts_prefix(prefix)}{f.name}.part-{i + 1:02d}-of-{n:02d}")
        for i, (offset, length) in enumerate(pieces)
    ]


def lanes(
    files: Sequence[LocalFileLike], prefix: str, streams: int, layout: Sequence[LocalFileLike] = ()
) -> list[list[Part]]:
    """The parts of ``files``, as lanes of about equal bytes, one stream each (see the module
    docstring); small uploads get one lane per part, largest first.

    ``layout``: the files the lanes are cut over (default ``files``), a superset that stays the
    same when a run resumes an interrupted one (its files already sent are left out of ``files``,
    not of ``layout``): the same cuts give the same parts, so the journal's sessions still match.
    """
    members = sorted(layout or files, key=lambda f: (-f.size, f.name))
    wanted = {f.name for f in files}
    total = sum(f.size for f in members)
    n = max(1, min(streams, MAX_PARTS))
    quota = -(-total // n)
    if n == 1 or quota < MIN_LANE:
        return [[p] for p in split(files, prefix)]
    # Walk the files as one run of bytes, lane k ending near byte (k + 1) * total / n: cut at a
    # 256 KiB unit of the file (resumable sessions persist whole units, so every part but a file's
    # last is whole), which leaves each lane within a unit of its share, the shortfall not adding up.
    ranges: dict[str, list[tuple[int, int, int]]] = {}  # name -> (lane, start, end)
    lane, pos = 0, 0

    def room() -> int:
        return (lane + 1) * total // n - pos

    for f in members:
        spans = ranges.setdefault(f.name, [])
        start = 0
        while True:
            take = f.size - start
            if take > room() and lane < n - 1:
                take = max(0, room() - room() % _UNIT)
            if take > 0 or f.size == 0:
                spans.append((lane, start, start + take))
            start, pos = start + take, pos + take
            if room() < _UNIT and lane < n - 1:  # this lane is full: the next one goes on
                lane += 1
            if start >= f.size:
                break
    out: list[list[Part]] = [[] for _ in range(n)]
    for f in members:
        if f.name not in wanted:
            continue
        spans = ranges[f.name]
        parts = _parts(f, prefix, [(a, b) for _, a, b in spans], cuts=len(spans) if len(spans) > 1 else 0)
        for part in parts:
            lane_of = next(i for i, a, b in spans if a <= part.offset < b or (a == b == part.offset))
            out[lane_of].append(part)
    return [lane_parts for lane_parts in out if lane_parts]


# --------------------------------------------------------------------------------------------------
# The journal of open sessions


class Journal:
    """Session URIs by part, with the identity of the file they were made for (size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        try:
            self.sessions = dict(json.loads(path.read_text(encoding="utf-8")).get("sessions") or {})
        except (OSError, ValueError):
            self.sessions = {}

    @staticmethod
    def identity(part: Part) -> dict[str, Any]:
        stat = part.file.path.stat()
        return {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "offset": part.offset,
            "length": part.size,
        }

    def session(self, part: Part) -> str | None:
        with self._lock:
            entry = self.sessions.get(part.key)
        if entry and "uri" in entry and all(entry.get(k) == v for k, v in self.identity(part).items()):
            return str(entry["uri"])
        return None

    def put(self, part: Part, uri: str) -> None:
        with self._lock:
            self.sessions[part.key] = {"uri": uri, **self.identity(part)}
            self._save()

    def done(self, part: Part, obj: dict[str, Any]) -> None:
        """The part's object exists: a rerun that finds it (same generation) does not send it again
        (a large file's finished parts wait for its last one, then the compose)."""
        with self._lock:
            entry = {"object": {"generation": str(obj.get("generation", "")), "crc32c": obj.get("crc32c")}}
            self.sessions[part.key] = {**entry, **self.identity(part)}
            self._save()

    def finished(self, part: Part) -> dict[str, Any] | None:
        """The object an earlier run recorded as this part's, if any (its file unchanged since)."""
        with self._lock:
            entry = self.sessions.get(part.key)
        if entry and "object" in entry and all(entry.get(k) == v for k, v in self.identity(part).items()):
            return dict(entry["object"])
        return None

    def clear(self) -> None:
        """Forget every session: the destination holds every file (sessions of files that finished
        but whose answer never arrived are done too)."""
        with self._lock:
            self.sessions = {}
            self._save()

    def _save(self) -> None:
        if not self.sessions:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # session URIs let anyone upload
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "sessions": self.sessions}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------------------
# One part: a resumable session, streamed


class _Slice:
    """A byte range of a file, read in blocks as requests sends it, counting and checksumming
    (``len`` is what is left to send: requests takes it as the Content-Length)."""

    def __init__(
        self, path: Path, start: int, length: int, on_read: Callable[[int], None], stop: threading.Event
    ):
        self._file = path.open("rb")
        self._file.seek(start)
        self._left = length
        self._on_read = on_read
        self._stop = stop
        self.crc = _Crc()

    def __len__(self) -> int:
        return self._left

    def __iter__(self) -> Iterator[bytes]:
        """The bytes in ``_READ`` blocks. An iterable, not a file: urllib3 reads a file-like body
        16 KiB at a time (a call, a checksum update and a progress count each), but sends each
        block an iterable yields with one ``sendall``."""
        while self._left > 0:
            if self._stop.is_set():
                raise Stopped("upload interrupted", hint="run it again: it resumes where it stopped")
            data = self._file.read(min(self._left, _READ))
            if not data:
                return
            self._left -= len(data)
            self.crc.update(data)
            self._on_read(len(data))
            yield data

    def close(self) -> None:
        self._file.close()


class _Crc:
    def __init__(self) -> None:
        import google_crc32c

        self._sum = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def update(self, data: bytes) -> None:
        self._sum.update(data)  # type: ignore[no-untyped-call]

    def b64(self) -> str:
        return base64.b64encode(self._sum.digest()).decode()  # type: ignore[no-untyped-call]


def crc32c_of(path: Path, start: int = 0, length: int | None = None) -> str:
    """CRC32C (base64, as GCS reports it) of ``length`` bytes of ``path`` from ``start``."""
    crc = _Crc()
    with path.open("rb") as f:
        f.seek(start)
        left = path.stat().st_size - start if length is None else length
        while left > 0 and (block := f.read(min(left, _READ))):
            crc.update(block)
            left -= len(block)
    return crc.b64()


class _Transient(Exception):
    """A request whose outcome is unknown or failed transiently: ask the session, then go on."""


class _Gone(Exception):
    """The session no longer exists (404/410): the part starts over in a new session."""


class _Transfer:
    def __init__(
        self,
        bucket: Any,
        journal: Journal,
        project: str,
        stop: threading.Event,
        on_bytes: Callable[[int], None],
    ) -> None:
        self.bucket = bucket
        self.http = bucket.client._http  # the client's authorized requests session
        self.base = bucket.client._connection.API_BASE_URL.rstrip("/")
        self.journal = journal
        self.project = project
        self.stop = stop
        self.on_bytes = on_bytes
        self.sent = Sent()
        self._lock = threading.Lock()

    # ---- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        try:
            response = self.http.request(method, url, timeout=(30, 300), **kwargs)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Transient(str(e)) from e
        if response.status_code in (404, 410) and "upload_id=" in url:
            raise _Gone(response.status_code)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 499:
            from google.api_core import exceptions as gexc

            error = gexc.from_http_response(response)  # type: ignore[no-untyped-call]
            raise translate(error, project=self.project, context=f"upload {url.split('?')[0]}")
        return response

    def _json(self, response: Any) -> dict[str, Any]:
        try:
            return dict(response.json())
        except ValueError as e:  # a cut answer: "JSONDecodeError: Unterminated string ..."
            raise _Transient(f"incomplete answer: {e}") from e

    def _start(self, part: Part) -> str:
        url = f"{self.base}/upload/storage/v1/b/{self.bucket.name}/o"
        response = self._request(
            "POST",
            url,
            params={"uploadType": "resumable", "name": part.object_name},
            data=json.dumps({"name": part.object_name, "contentType": "application/octet-stream"}),
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "X-Upload-Content-Length": str(part.size),
            },
        )
        return str(response.headers["Location"])

    def _status(self, uri: str, size: int) -> int | dict[str, Any]:
        """Bytes the session holds, or the finished object."""
        response = self._request("PUT", uri, data=b"", headers={"Content-Range": f"bytes */{size}"})
        if response.status_code in (200, 201):
            return self._json(response)
        held = response.headers.get("Range")
        return int(held.rsplit("-", 1)[1]) + 1 if held else 0

    # ---- one part --------------------------------------------------------------------------------
    def send_part(self, part: Part) -> dict[str, Any]:
        """The part's object, uploaded (or found finished), its CRC32C checked."""
        with self._lock:
            self.sent.workers.add(threading.get_ident())
        found = self._finished(part)
        if found is not None:
            return found
        uri = self.journal.session(part)
        if uri is not None:
            with self._lock:
                self.sent.sessions_resumed += 1
        for attempt in range(ATTEMPTS):
            try:
                if uri is None:
                    uri = self._start(part)
                    self.journal.put(part, uri)
                    held: int | dict[str, Any] = 0
                else:
                    held = self._status(uri, part.size)
                    if isinstance(held, int) and attempt == 0 and held:
                        with self._lock:
                            self.sent.bytes_resumed += held
                        self.on_bytes(held)  # held by the session: done, not sent again
                sent_crc: str | None = None
                if isinstance(held, dict):
                    obj = held
                else:
                    obj, sent_crc = self._put(uri, part, held)
                self._verify(part, obj, sent_crc)
                self.journal.done(part, obj)
                return obj
            except _Gone:
                uri = None  # expired or cancelled: this part starts over, the others are untouched
            except _Transient:
                if attempt == ATTEMPTS - 1:
                    raise
                _backoff(attempt)
        raise AssertionError("unreachable")

    def _finished(self, part: Part) -> dict[str, Any] | None:
        """The part's object, when an earlier run finished it and it is still there, unchanged."""
        recorded = self.journal.finished(part)
        if recorded is None:
            return None
        url = f"{self.base}/storage/v1/b/{self.bucket.name}/o/{quote(part.object_name, safe='')}"
        try:
            obj = _again_on_transient(
                lambda: self._json(self._request("GET", url, params={"generation": recorded["generation"]}))
            )
        except NotFound:
            return None  # gone (deleted, or a compose that went through): send it again
        if obj.get("crc32c") != recorded["crc32c"] or int(obj.get("size", -1)) != part.size:
            return None
        with self._lock:
            self.sent.bytes_resumed += part.size
        self.on_bytes(part.size)  # held since an earlier run: done, not sent again
        return obj

    def _put(self, uri: str, part: Part, held: int) -> tuple[dict[str, Any], str | None]:
        """The session's answer, and the CRC32C of the bytes sent when they were the whole part."""
        body = _Slice(part.file.path, part.offset + held, part.size - held, self._count, self.stop)
        try:
            headers = {
                "Content-Range": f"bytes {held}-{part.size - 1}/{part.size}"
                if part.size
                else f"bytes */{part.size}"
            }
            response = self._request("PUT", uri, data=body if part.size - held else b"", headers=headers)
        finally:
            body.close()
        if response.status_code == 308:  # the session holds less than we sent: ask and go on
            raise _Transient("session holds fewer bytes than sent")
        whole = held == 0 and len(body) == 0
        return self._json(response), body.crc.b64() if whole else None

    def _count(self, n: int) -> None:
        with self._lock:
            self.sent.bytes_sent += n
        self.on_bytes(n)

    def _verify(self, part: Part, obj: dict[str, Any], sent_crc: str | None = None) -> None:
        """The part's object holds the file's bytes: its CRC32C is that of the bytes this run read
        and sent (``sent_crc``, when they were the whole part), else of the part read again."""
        want = sent_crc or crc32c_of(part.file.path, part.offset, part.size)
        if obj.get("crc32c") != want or int(obj.get("size", -1)) != part.size:
            raise UploadCorrupted(
                f"gs://{self.bucket.name}/{part.object_name} holds other bytes than {part.file.path} "
                f"(CRC32C {obj.get('crc32c')} != {want})",
                hint="run the upload again: the object is replaced",
            )

    # ---- a large file's parts -> its object ------------------------------------------------------
    def compose(
        self, f: LocalFileLike, name: str, parts: list[tuple[Part, dict[str, Any]]], keep_parts: bool = False
    ) -> None:
        parts = sorted(parts, key=lambda pair: pair[0].index)
        body = {
            "sourceObjects": [{"name": p.object_name, "generation": obj["generation"]} for p, obj in parts],
            "destination": {"contentType": "application/octet-stream"},
        }
        url = f"{self.base}/storage/v1/b/{self.bucket.name}/o/{quote(name, safe='')}/compose"
        # Idempotent: the same sources make the same object.
        obj = _again_on_transient(
            lambda: self._json(
                self._request(
                    "POST", url, data=json.dumps(body), headers={"Content-Type": "application/json"}
                )
            )
        )
        if obj.get("crc32c") != crc32c_of(f.path) or int(obj.get("size", -1)) != f.size:
            raise UploadCorrupted(
                f"gs://{self.bucket.name}/{name} does not match {f.path}", hint="run the upload again"
            )
        if keep_parts:
            return

        def delete(part: Part, obj: dict[str, Any]) -> None:
            url = f"{self.base}/storage/v1/b/{self.bucket.name}/o/{quote(part.object_name, safe='')}"
            self._request("DELETE", url, params={"generation": obj["generation"]})

        for p, part_obj in parts:
            # Best effort: gone already (a retried delete whose answer was lost), or left behind.
            with contextlib.suppress(_Transient, SdclusterError):
                _again_on_transient(functools.partial(delete, p, part_obj))


def _again_on_transient(fn: Callable[[], T]) -> T:
    """``fn()`` (an idempotent request), again after a backoff while its outcome is unknown."""
    for attempt in range(ATTEMPTS - 1):
        try:
            return fn()
        except _Transient:
            _backoff(attempt)
    return fn()


def _backoff(attempt: int) -> None:
    delay = min(30.0, 0.5 * 2**attempt) * retry.BACKOFF_SCALE
    time.sleep(delay * (0.5 + random.random() / 2))


# --------------------------------------------------------------------------------------------------
# The entry point


def journal_for(state_path: str, destination: str) -> Path:
    """The journal file of uploads to ``destination``: next to a local state, else in .sdcluster/."""
    base = Path(".sdcluster") if state_path.startswith("gs://") else Path(state_path).parent
    digest = hashlib.sha256(destination.encode()).hexdigest()[:16]
    return base / "uploads" / f"{digest}.json"


def send(
    bucket: Any,
    prefix: str,
    files: Sequence[LocalFileLike],
    *,
    journal_path: Path,
    project: str,
    max_workers: int = 8,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_file: Callable[[LocalFileLike, float], None] = lambda f, s: None,
    stop: threading.Event | None = None,
    layout: Sequence[LocalFileLike] = (),
    keep_parts: bool = False,
) -> Sent:
    """Upload ``files`` to ``<prefix><name>`` (see the module docstring). ``on_file(file, seconds)``
    is called once a file's object exists (seconds since its first part started). ``layout``: see
    ``lanes``. ``keep_parts``: a composed file's part objects (under ``parts_prefix(prefix)``) are
    left for the caller to delete with the rest of a staging area, not deleted one by one on the
    way. Raises ``Stopped`` when ``stop`` is set (or on Ctrl-C) with the journal saved, and the
    translated error otherwise."""
    stop = stop or threading.Event()
    transfer = _Transfer(bucket, Journal(journal_path), project, stop, on_bytes)
    streams = lanes(files, prefix, max_workers, layout)
    parts = [p for lane in streams for p in lane]
    pending: dict[str, list[tuple[Part, dict[str, Any]]]] = {}
    started: dict[str, float] = {}
    lock = threading.Lock()

    def job(part: Part) -> None:
        with lock:
            started.setdefault(part.file.name, time.monotonic())
        obj = transfer.send_part(part)
        if part.count > 1:
            with lock:
                done = pending.setdefault(part.file.name, [])
                done.append((part, obj))
                complete = len(done) == part.count
            if not complete:
                return
            transfer.compose(part.file, prefix + part.file.name, done, keep_parts)
        on_file(part.file, time.monotonic() - started[part.file.name])

    def lane_job(lane: list[Part]) -> None:
        for part in lane:
            if stop.is_set():  # another lane failed or the run was interrupted: start no session
                raise Stopped("upload interrupted", hint="run it again: it resumes where it stopped")
            job(part)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="upload") as pool:
        futures: list[Future[None]] = [pool.submit(lane_job, lane) for lane in streams]
        try:
            while True:
                if retry.cancelled():  # an interrupted apply (its upload runs in a worker thread)
                    stop.set()
                finished, running = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
                failed = [f for f in finished if f.exception() is not None]
                if failed or not running:
                    break
        except KeyboardInterrupt:
            stop.set()
            for f in futures:
                f.cancel()
            wait(futures)
            raise
        if failed:
            stop.set()
            for f in futures:
                f.cancel()
            wait(futures)
            error = failed[0].exception()
            if isinstance(error, _Transient):
                raise translate(
                    ConnectionError(str(error)), project=project, context=f"upload to {prefix}"
                ) from error
            assert error is not None
            raise error
    transfer.journal.clear()
    transfer.sent.files = len(files)
    transfer.sent.parts = len(parts)
    return transfer.sent
