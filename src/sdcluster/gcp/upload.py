"""Upload a TensorFlow SavedModel into the model bucket and publish it as a version TF Serving loads.

TF Serving watches ``--model_base_path`` (``cfg.model_path``, ``gs://<bucket>/stable_diffusion_model``),
polls it every second and loads the **highest numeric version** directory below it. It tries a
version as soon as any object under ``<N>/`` exists: a version written in place, file by file, is
seen half-uploaded (and given up after TF Serving's 5 load retries). So a version is published in
two steps, and TF Serving only ever finds it complete:

1. **staging**: the files go to ``<model_path>/_staging/<N>/`` (a non-numeric directory, which TF
   Serving ignores) through ``transfer.send``: many files in parallel, large files in parallel parts
   composed into one object, CRC32C-checked, resumable (the sessions of an interrupted run are kept
   in a journal next to the state, and the next run sends only what they do not hold yet). A file
   whose size and CRC32C match an object already in the bucket (a published version, or the staging
   area of an interrupted upload) is not sent again.
2. **publish**: server-side copies into ``<model_path>/<N>/`` (no bytes leave the bucket), every file
   first and ``saved_model.pb`` last: TF Serving cannot load a version without it, and once it is
   there everything else is too. Then the staging area is deleted (with the parts of large files).

Which version: ``version=None`` takes the highest version in the bucket when it already holds exactly
this model (a rerun is a no-op) or was left unfinished (the rerun completes it), else the next one
(TF Serving switches to it); with ``version=N``, N must not already hold another model (TF Serving
does not reload a version it has loaded). Objects under the version that are not in the directory are
left alone and reported (``stale``).

Example::

    result = upload_model(cfg, "./stable_diffusion_model", factory=factory)
    result.message  # 'published version 1 at gs://demo-proj-bucket/stable_diffusion_model/1/'
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import retry
from ..errors import NotFound, UsageError
from . import transfer

if TYPE_CHECKING:
    from ..config import Config
    from .clients import ClientFactory

__all__ = [
    "STAGING",
    "LocalFile",
    "Survey",
    "UploadProgress",
    "UploadResult",
    "crc32c_b64",
    "model_digest",
    "saved_model_files",
    "size_text",
    "split_model_path",
    "summarize",
    "survey",
    "upload_model",
    "version_record",
    "versions_under",
]

MAX_WORKERS = 8
COPY_WORKERS = 32  # a publish's server-side copies at once (a SavedModel has a few dozen files)
MIB = 1024 * 1024
# Progress events while bytes flow are throttled; per-phase events are always sent.
PROGRESS_INTERVAL_S = 0.2
STAGING = "_staging"  # below the model path: TF Serving aspires numeric directories only
GRAPHS = ("saved_model.pb", "saved_model.pbtxt")  # what makes a version loadable: published last


@dataclass(frozen=True)
class LocalFile:
    """One file of the SavedModel: ``name`` relative to the directory, with ``/`` separators."""

    path: Path
    name: str
    size: int


@dataclass(frozen=True)
class UploadProgress:
    """A progress report. ``phase``: "checking" (comparing checksums), "uploading" (to the staging
    area), "publishing" (server-side copies into the version), "done".

    ``bytes_done`` counts skipped files, bytes earlier sessions hold, and bytes read for sending.
    """

    phase: Literal["checking", "uploading", "publishing", "done"]
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed_s: float

    bytes_at_start: int = 0  # skipped or already held when bytes began to flow
    version: int = 0  # the version being published
    files_done: int = 0  # sent or skipped so far
    # Set on the event that reports one file done (``detail`` says how): for verbose output.
    file: str = ""
    detail: str = ""

    @property
    def rate_bps(self) -> float:
        """Bytes sent per second since the upload started."""
        sent = self.bytes_done - self.bytes_at_start
        return sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before bytes flow)."""
        rate = self.rate_bps
        return (self.bytes_total - self.bytes_done) / rate if rate > 0 else None

    def describe_file(self) -> str:
        """The per-file line of an event that reports a file, e.g. ``variables/x (9.9 MiB): sent in
        2.4 s (4.1 MiB/s); 5/18 files, 30%, ETA 4 s``."""
        pct = 100 * self.bytes_done / self.bytes_total if self.bytes_total else 100
        eta = self.eta_s
        left = f", ETA {eta:.0f} s" if eta is not None and self.bytes_done < self.bytes_total else ""
        return f"{self.file}: {self.detail}; {self.files_done}/{self.files_total} files, {pct:.0f}%{left}"

    def describe(self) -> str:
        """One line, e.g. ``uploading: 12.0/40.0 MiB (30%) at 8.1 MiB/s, ETA 4 s``."""
        if self.phase == "checking":
            return f"checking {self.files_total} file(s) against the bucket..."
        if self.phase == "publishing":
            return f"publishing version {self.version}: server-side copies, saved_model.pb last..."
        if self.phase == "done" and self.bytes_done == self.bytes_at_start:
            return f"unchanged: {self.files_total} file(s), 0 B sent"  # every file was already there
        pct = 100 * self.bytes_done / self.bytes_total if self.bytes_total else 100
        line = (
            f"{self.phase}: {self.bytes_done / MIB:.1f}/{self.bytes_total / MIB:.1f} MiB ({pct:.0f}%) "
            f"at {self.rate_bps / MIB:.1f} MiB/s"
        )
        eta = self.eta_s
        return f"{line}, ETA {eta:.0f} s" if self.phase == "uploading" and eta is not None else line


@dataclass(frozen=True)
class UploadResult:
    """What ``upload_model`` did. ``uploaded``/``skipped``/``stale`` are file names below ``destination``:
    sent to the bucket, not sent (already there), in the version but not in the directory."""

    destination: str  # gs://BUCKET/PREFIX/N/
    version: int
    serving_version: int  # the version TF Serving will serve: the highest in the bucket
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    stale: tuple[str, ...]
    bytes_sent: int
    elapsed_s: float
    workers: int  # upload threads that carried files (0 when no file was sent)
    published: bool = False  # objects were copied into the version (False: it already held the model)
    served: str = ""  # what TF Serving serves once it has loaded it ("" when not waited for)

    @property
    def message(self) -> str:
        """One line for the user, e.g. 'published version 1 at gs://b/m/1/'."""
        done = (
            f"published version {self.version} at {self.destination}"
            if self.published
            else f"version {self.version} at {self.destination} already holds this model"
        )
        if self.serving_version != self.version:
            done = f"{done}, but TF Serving serves the highest version, {self.serving_version}"
        return f"{done}; TF Serving serves {self.served}" if self.served else done


Progress = Callable[[UploadProgress], None]


def upload_model(
    cfg: Config,
    directory: str | Path,
    *,
    version: int | None = None,
    factory: ClientFactory,
    progress: Progress | None = None,
    max_workers: int = MAX_WORKERS,
    clean: bool = True,
) -> UploadResult:
    """Upload the SavedModel in ``directory`` and publish it as ``<cfg.model_path>/<version>/``.

    ``version=None``: see the module docstring. ``progress`` is called from upload threads, one call
    at a time. ``clean=False`` leaves the staging area, with the parts large files were composed
    from, for the caller's ``clean_staging`` (which can then run while TF Serving loads the
    version). Raises UsageError for a directory that is not a SavedModel or a bad version,
    NotFound when the bucket does not exist, and the translated storage error when an upload fails.

    Example::

        upload_model(cfg, "model/", version=2, factory=ClientFactory.for_user(cfg.user))
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise UsageError(
            f"model version must be a positive integer, got {version!r}",
            hint="TF Serving loads numbered version directories: use --version 1, 2, ...",
        )
    files = saved_model_files(directory)
    bucket_name, base = split_model_path(cfg.model_path)
    client = factory.storage(cfg.project)
    tracker = _Tracker(len(files), sum(f.size for f in files), progress)
    tracker.emit("checking", force=True)
    seen = survey(cfg, files, factory=factory, version=version)
    remote, versions, sums, chosen = seen.remote, seen.versions, seen.sums, seen.version
    tracker.version = chosen
    target, staging = f"{chosen}/", f"{STAGING}/{chosen}/"
    destination = f"gs://{bucket_name}/{base}/{target}"

    # Where each file of the version comes from: already in place, a copy of an identical object in
    # the bucket, or an upload to the staging area first.
    sources: dict[str, str] = {}
    todo: list[LocalFile] = []
    for f in files:
        if sums.same(f, remote.get(target + f.name)):
            continue
        twin = next((n for n, meta in remote.items() if sums.same(f, meta)), None)
        if twin is None:
            todo.append(f)
            twin = staging + f.name
        sources[f.name] = twin
    tracker.skip(tracker.bytes_total - sum(f.size for f in todo))
    for f in files:
        if f.name not in sources:
            tracker.file_done(f, f"{size_text(f.size)} already in version {chosen}: not sent")
        elif sources[f.name] != staging + f.name:
            tracker.file_done(
                f, f"{size_text(f.size)} already in the bucket ({sources[f.name]}): copied, not sent"
            )
    bucket = client.bucket(bucket_name)
    journal = transfer.journal_for(cfg.state.path, destination)
    # The lanes are cut over what this version's staging area gets, sent now or by an interrupted
    # run: a rerun cuts them where that run did, so its journaled sessions match (transfer.lanes).
    staged = [f for f in files if f in todo or sources.get(f.name) == staging + f.name]
    # A caller that cleans the staging area while TF Serving loads (clean=False) gets the parts of
    # large files left for it; cleaning here, their deletes overlap the other streams' sending.
    sent = _upload(
        bucket, f"{base}/{staging}", todo, staged, tracker, max_workers, cfg.project, journal, not clean
    )
    tracker.emit("publishing", force=True)
    _publish(bucket, base, target, sources, max_workers, cfg.project)
    if clean:
        clean_staging(cfg, chosen, factory=factory)
    tracker.emit("done", force=True)
    local = {f.name for f in files}
    uploaded = {f.name for f in todo}
    return UploadResult(
        destination=destination,
        version=chosen,
        serving_version=max([*versions, chosen]),
        uploaded=tuple(sorted(uploaded)),
        skipped=tuple(sorted(local - uploaded)),
        stale=tuple(sorted({n.removeprefix(target) for n in remote if n.startswith(target)} - local)),
        bytes_sent=sent.bytes_sent,
        elapsed_s=tracker.elapsed(),
        workers=len(sent.workers),
        published=bool(sources),
    )


@dataclass(frozen=True)
class Survey:
    """What the bucket holds under the model path, against a local SavedModel (one listing).

    ``version``: the version an upload publishes (see the module docstring); ``holds``: that version
    already holds exactly these files (same names, sizes and CRC32Cs), so an upload is a no-op.
    """

    files: list[LocalFile]
    remote: dict[str, tuple[int, str]]  # name below the model path -> (size, base64 CRC32C)
    versions: list[int]  # numeric version directories, ascending
    version: int
    holds: bool
    sums: _Checksums

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    def record(self, version: int) -> dict[str, Any] | None:
        """What the bucket holds as ``version`` (``version_record``)."""
        return _record(self.remote, version)


def version_record(cfg: Config, version: int, *, factory: ClientFactory) -> dict[str, Any] | None:
    """What the bucket holds as ``version``, from one listing: its number, file count, bytes and
    ``digest`` (``model_digest`` of its objects), or None when it holds nothing under it."""
    bucket_name, base = split_model_path(cfg.model_path)
    prefix = f"{base}/{version}/"
    remote = _remote_objects(factory.storage(cfg.project), bucket_name, prefix, cfg.project)
    return _record({f"{version}/{n}": m for n, m in remote.items()}, version)


def _record(remote: dict[str, tuple[int, str]], version: int) -> dict[str, Any] | None:
    prefix = f"{version}/"
    objects = {n.removeprefix(prefix): m for n, m in remote.items() if n.startswith(prefix)}
    if not objects:
        return None
    return {
        "version": version,
        "files": len(objects),
        "bytes": sum(size for size, _ in objects.values()),
        "digest": model_digest(objects),
    }


def survey(
    cfg: Config, files: list[LocalFile], *, factory: ClientFactory, version: int | None = None
) -> Survey:
    """List the model path once and decide which version ``files`` go to (``version=None``: the
    module docstring's rule). CRC32Cs are computed only for files whose size matches an object.
    NotFound when the bucket does not exist; UsageError for a ``version`` holding another model."""
    bucket_name, base = split_model_path(cfg.model_path)
    remote = _remote_objects(factory.storage(cfg.project), bucket_name, f"{base}/", cfg.project)
    versions = sorted({int(n.split("/", 1)[0]) for n in remote if n.split("/", 1)[0].isdigit()})
    sums = _Checksums()
    chosen = _choose_version(version, versions, files, remote, sums)
    holds = all(sums.same(f, remote.get(f"{chosen}/{f.name}")) for f in files)
    return Survey(files, remote, versions, chosen, holds, sums)


def model_digest(objects: dict[str, tuple[int, str]]) -> str:
    """A short digest of a model version's files (name -> (size, base64 CRC32C)): equal for equal
    files, computable from a bucket listing alone (no object is read)."""
    import hashlib

    lines = "".join(f"{name}\t{size}\t{crc}\n" for name, (size, crc) in sorted(objects.items()))
    return "crc32c-sha256:" + hashlib.sha256(lines.encode()).hexdigest()[:16]


def _choose_version(
    asked: int | None,
    versions: list[int],
    files: list[LocalFile],
    remote: dict[str, tuple[int, str]],
    sums: _Checksums,
) -> int:
    def holds_this_model(v: int) -> bool:
        return all(sums.same(f, remote.get(f"{v}/{f.name}")) for f in files)

    def complete(v: int) -> bool:
        return any(f"{v}/{g}" in remote for g in GRAPHS)

    if asked is not None:
        if asked in versions and complete(asked) and not holds_this_model(asked):
            raise UsageError(
                f"version {asked} already holds another model",
                hint=(
                    "TF Serving does not reload a version it has loaded: publish the new model as a new "
                    f"version (--version {max(versions) + 1}, or leave --version out)"
                ),
            )
        return asked
    if not versions:
        return 1
    top = versions[-1]
    # The highest version: this very model (a rerun), or one an interrupted upload left unpublished.
    if holds_this_model(top) or not complete(top):
        return top
    return top + 1


def _publish(
    bucket: Any, base: str, target: str, sources: dict[str, str], max_workers: int, project: str
) -> None:
    """Server-side copies into the version: everything else first, the graph (saved_model.pb) last."""
    graphs = {n: src for n, src in sources.items() if n in GRAPHS}
    rest = {n: src for n, src in sources.items() if n not in GRAPHS}

    def copy(item: tuple[str, str]) -> None:
        name, src = item
        retry.call(
            lambda: bucket.copy_blob(bucket.blob(f"{base}/{src}"), bucket, f"{base}/{target}{name}"),
            project=project,
            context=f"copy gs://{bucket.name}/{base}/{src}",
        )

    # Server-side copies send no bytes over the link: all at once (up to COPY_WORKERS), not
    # max_workers streams' worth.
    with ThreadPoolExecutor(max_workers=max(1, min(len(rest), max(max_workers, COPY_WORKERS)))) as pool:
        list(pool.map(copy, rest.items()))
    for item in graphs.items():
        copy(item)


def clean_staging(cfg: Config, version: int, *, factory: ClientFactory) -> None:
    """Delete the staging area of ``version`` and the parts its large files were composed from
    (what a finished publish no longer needs), many objects at a time (each delete is one request:
    a round trip apiece)."""
    from google.api_core import exceptions as gexc

    bucket_name, base = split_model_path(cfg.model_path)
    client = factory.storage(cfg.project)
    bucket = client.bucket(bucket_name)
    staging, project = f"{base}/{STAGING}/{version}/", cfg.project

    def delete(name: str) -> None:
        try:
            bucket.blob(name).delete()
        except gexc.NotFound:
            pass  # a retried delete that had gone through

    def clean(name: str) -> None:
        retry.call(lambda: delete(name), project=project, context=f"clean up {staging}")

    # The staged files, and the parts their large files were composed from (left by the upload).
    names = [
        prefix + name
        for prefix in (staging, transfer.parts_prefix(staging))
        for name in _remote_objects(client, bucket_name, prefix, project)
    ]
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), COPY_WORKERS))) as pool:
        list(pool.map(clean, names))


def saved_model_files(directory: str | Path) -> list[LocalFile]:
    """The regular files of a SavedModel directory, largest first; UsageError naming what is missing.

    A SavedModel is ``saved_model.pb`` (or ``saved_model.pbtxt``) plus a ``variables/`` directory.

    Example: ``saved_model_files("model/")[0].name == "variables/variables.data-00000-of-00001"``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(
            f"{root} is not a directory", hint="pass the directory that holds saved_model.pb and variables/"
        )
    missing = []
    if not ((root / "saved_model.pb").is_file() or (root / "saved_model.pbtxt").is_file()):
        missing.append("saved_model.pb")
    if not (root / "variables").is_dir():
        missing.append("variables/")
    if missing:
        raise UsageError(
            f"{root} is not a SavedModel: missing {' and '.join(missing)}",
            hint="export it with tf.saved_model.save(model, DIR) (Keras: model.export(DIR)) and pass DIR",
        )
    files = [
        LocalFile(p, p.relative_to(root).as_posix(), p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    # Largest first: the long transfers start at once instead of trailing behind the small ones.
    return sorted(files, key=lambda f: -f.size)


# --------------------------------------------------------------------------------------------------
# The bucket side


def split_model_path(model_path: str) -> tuple[str, str]:
    """``gs://b/a/b/`` -> ``("b", "a/b")`` (Config has validated the form)."""
    bucket, _, prefix = model_path.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def versions_under(client: Any, bucket: str, base: str, project: str) -> list[int]:
    """The numeric version directories under ``base``: what TF Serving would try to load.

    Raises NotFound (with a hint) when the bucket does not exist.
    """

    def list_prefixes() -> set[str]:
        pages = client.list_blobs(bucket, prefix=f"{base}/", delimiter="/", retry=_storage_retry())
        for _ in pages:  # prefixes are filled in as the pages are read
            pass
        return set(pages.prefixes)

    try:
        prefixes = retry.call(list_prefixes, project=project, context=f"list gs://{bucket}/{base}/")
    except NotFound as e:
        raise NotFound(
            f"bucket {bucket} does not exist", hint="create it: sdcluster apply (it manages the model bucket)"
        ) from e
    names = (p.removeprefix(f"{base}/").rstrip("/") for p in prefixes)
    return sorted(int(n) for n in names if n.isdigit() and int(n) > 0)


def _remote_objects(client: Any, bucket: str, prefix: str, project: str) -> dict[str, tuple[int, str]]:
    """Object name (relative to ``prefix``) -> (size, base64 CRC32C) for everything under it, from
    one listing. NotFound (with a hint) when the bucket does not exist."""
    try:
        blobs = retry.call(
            lambda: list(client.list_blobs(bucket, prefix=prefix, retry=_storage_retry())),
            project=project,
            context=f"list gs://{bucket}/{prefix}",
        )
    except NotFound as e:
        raise NotFound(
            f"bucket {bucket} does not exist", hint="create it: sdcluster apply (it manages the model bucket)"
        ) from e
    return {b.name.removeprefix(prefix): (int(b.size or 0), b.crc32c or "") for b in blobs}


def _storage_retry() -> Any:
    """google-cloud-storage's default retry (transient errors, 1 s doubling to 60 s, 120 s in all),
    scaled like sdcluster's other backoffs (tests shrink ``retry.BACKOFF_SCALE``).

    Passed to uploads too: by default the library retries a media upload only under a generation
    precondition, but re-sending a whole file is idempotent for us (same name, same bytes).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    scale = retry.BACKOFF_SCALE
    return DEFAULT_RETRY.with_delay(initial=1.0 * scale, maximum=60.0 * scale, multiplier=2.0)


class _Checksums:
    """Local CRC32Cs, each file read once per upload (and only when a remote object's size matches)."""

    def __init__(self) -> None:
        self._crc: dict[Path, str] = {}

    def same(self, local: LocalFile, remote: tuple[int, str] | None) -> bool:
        if remote is None or remote[0] != local.size:  # size first: a cheap no that spares a read
            return False
        if local.path not in self._crc:
            self._crc[local.path] = crc32c_b64(local.path)
        return remote[1] == self._crc[local.path]


def crc32c_b64(path: Path) -> str:
    """The file's CRC32C as Cloud Storage reports it (base64 of the big-endian 32-bit value).

    Example: ``crc32c_b64(Path("empty"))  # 'AAAAAA=='``.
    """
    return transfer.crc32c_of(path)


def _upload(
    bucket: Any,
    prefix: str,
    files: list[LocalFile],
    layout: list[LocalFile],
    tracker: _Tracker,
    max_workers: int,
    project: str,
    journal: Path,
    keep_parts: bool,
) -> transfer.Sent:
    tracker.mark_start()  # nothing to send: the done event then says 0 B sent
    if not files:
        transfer.Journal(journal).clear()
        return transfer.Sent()
    tracker.emit("uploading", force=True)
    return transfer.send(
        bucket,
        prefix,
        files,
        journal_path=journal,
        project=project,
        max_workers=max_workers,
        on_bytes=tracker.advance,
        on_file=tracker.sent_file,
        layout=layout,
        keep_parts=keep_parts,
    )


# --------------------------------------------------------------------------------------------------
# Progress


class _Tracker:
    """Thread-safe counters behind the progress events."""

    def __init__(self, files_total: int, bytes_total: int, progress: Progress | None) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.progress = progress
        self.bytes_done = 0
        self.bytes_at_start = 0
        self.version = 0
        self.files_done = 0
        self.start = time.monotonic()
        self._last_emit = 0.0
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def skip(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def mark_start(self) -> None:
        with self._lock:
            self.bytes_at_start = self.bytes_done
            self.start = time.monotonic()

    def file_done(self, f: LocalFile, detail: str) -> None:
        """One file sent (or skipped): a forced event naming it, for per-file (verbose) output."""
        with self._lock:
            self.files_done += 1
        self.emit("uploading", force=True, file=f.name, detail=f"{detail}")

    def sent_file(self, f: Any, seconds: float) -> None:
        rate = f" ({f.size / MIB / seconds:.1f} MiB/s)" if seconds > 0 else ""
        self.file_done(f, f"sent {size_text(f.size)} in {seconds:.1f} s{rate}")

    def advance(self, n: int) -> None:
        with self._lock:
            self.bytes_done = min(self.bytes_total, self.bytes_done + n)  # a retry re-reads bytes
        self.emit("uploading")

    def emit(
        self,
        phase: Literal["checking", "uploading", "publishing", "done"],
        *,
        force: bool = False,
        file: str = "",
        detail: str = "",
    ) -> None:
        if self.progress is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_emit < PROGRESS_INTERVAL_S:
                return
            self._last_emit = now
            event = UploadProgress(
                phase,
                self.files_total,
                self.bytes_done,
                self.bytes_total,
                now - self.start,
                self.bytes_at_start,
                self.version,
                self.files_done,
                file,
                detail,
            )
            # Under the lock: the callback is never entered by two upload threads at once.
            self.progress(event)


def summarize(result: UploadResult) -> dict[str, Any]:
    """The result as plain data, for ``--json`` output (``bytes_sent``: over the wire this run)."""
    return {
        **dataclasses.asdict(result),
        "files_uploaded": len(result.uploaded),
        "files_skipped": len(result.skipped),
        "seconds": round(result.elapsed_s, 3),
        "message": result.message,
    }


def size_text(n: int) -> str:
    """``1.9 GiB``, ``24.0 MiB``, ``1.0 KiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
