"""Upload a TensorFlow SavedModel into the model bucket, where TF Serving loads it from.

TF Serving watches ``--model_base_path`` (``cfg.model_path``, ``gs://<bucket>/stable_diffusion_model``)
and loads the **highest numeric version** directory below it, so the model goes to
``<model_path>/<version>/``:

- ``version=None`` reuses the highest version already in the bucket (a rerun of the same upload is
  then a no-op), or 1 when there is none. TF Serving does not reload a version it has loaded: to roll
  out a *new* model, upload it as a higher version (``version=N+1``) and TF Serving switches to it.
- Files whose size and CRC32C already match the object in the bucket are skipped (one listing of the
  version prefix, no per-file requests), so an interrupted upload resumes where it stopped.
- The rest is uploaded in parallel by google-cloud-storage's ``transfer_manager`` (threads).

Objects under the version that are not in the directory are left alone and reported (``stale``).

Example::

    result = upload_model(cfg, "./stable_diffusion_model", factory=factory)
    result.message  # 'TF Serving will load version 1 from gs://demo-proj-bucket/stable_diffusion_model/1/'
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from .. import retry
from ..errors import NotFound, SdclusterError, UsageError, translate

if TYPE_CHECKING:
    from ..config import Config
    from .clients import ClientFactory

__all__ = [
    "LocalFile",
    "UploadProgress",
    "UploadResult",
    "crc32c_b64",
    "saved_model_files",
    "summarize",
    "upload_model",
]

MAX_WORKERS = 8
# Resumable uploads read and send this much per request; with MAX_WORKERS threads this bounds the
# memory held in flight (8 x 16 MiB). GCS wants a multiple of 256 KiB.
CHUNK_SIZE = 16 * 1024 * 1024
# Progress events while bytes flow are throttled; per-phase events are always sent.
PROGRESS_INTERVAL_S = 0.2
_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """One file of the SavedModel: ``name`` relative to the directory, with ``/`` separators."""

    path: Path
    name: str
    size: int


@dataclass(frozen=True)
class UploadProgress:
    """A progress report. ``phase``: "checking" (comparing checksums), "uploading", "done".

    ``bytes_done`` counts skipped files and bytes handed to the uploader: it leads what the server
    has acknowledged by at most one chunk (16 MiB) per file being uploaded.
    """

    phase: Literal["checking", "uploading", "done"]
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed_s: float

    @property
    def rate_bps(self) -> float:
        """Bytes per second since the upload started."""
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class UploadResult:
    """What ``upload_model`` did. ``uploaded``/``skipped``/``stale`` are object names below ``destination``."""

    destination: str  # gs://BUCKET/PREFIX/N/
    version: int
    serving_version: int  # the version TF Serving will serve: the highest in the bucket
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    stale: tuple[str, ...]
    bytes_sent: int
    elapsed_s: float
    workers: int  # upload threads that carried files (0 when every file was skipped)

    @property
    def message(self) -> str:
        """One line for the user, e.g. 'TF Serving will load version 1 from gs://b/m/1/'."""
        if self.serving_version == self.version:
            return f"TF Serving will load version {self.version} from {self.destination}"
        return (
            f"version {self.version} is uploaded to {self.destination}, but TF Serving serves the highest "
            f"version, {self.serving_version}"
        )


Progress = Callable[[UploadProgress], None]


def upload_model(
    cfg: Config,
    directory: str | Path,
    *,
    version: int | None = None,
    factory: ClientFactory,
    progress: Progress | None = None,
    max_workers: int = MAX_WORKERS,
) -> UploadResult:
    """Upload the SavedModel in ``directory`` to ``<cfg.model_path>/<version>/``.

    ``version=None``: the highest version already in the bucket, else 1 (see the module docstring).
    ``progress`` is called from upload threads, one call at a time. Raises UsageError for a directory
    that is not a SavedModel or a bad version, NotFound when the bucket does not exist, and the
    translated storage error when an upload fails.

    Example::

        upload_model(cfg, "model/", version=2, factory=ClientFactory.for_user(cfg.user))
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise UsageError(
            f"model version must be a positive integer, got {version!r}",
            hint="TF Serving loads numbered version directories: use --version 1, 2, ...",
        )
    files = saved_model_files(directory)
    bucket_name, base = _split_model_path(cfg.model_path)
    client = factory.storage(cfg.project)
    versions = _remote_versions(client, bucket_name, base, cfg.project)
    chosen = version if version is not None else max(versions, default=1)
    prefix = f"{base}/{chosen}/"
    destination = f"gs://{bucket_name}/{prefix}"

    tracker = _Tracker(len(files), sum(f.size for f in files), progress)
    tracker.emit("checking", force=True)
    remote = _remote_objects(client, bucket_name, prefix, cfg.project)
    todo = [f for f in files if not _same_content(f, remote.get(prefix + f.name))]
    sent = sum(f.size for f in todo)
    tracker.skip(tracker.bytes_total - sent)

    _upload(client.bucket(bucket_name), prefix, todo, tracker, max_workers, cfg.project, destination)
    tracker.emit("done", force=True)
    local = {f.name for f in files}
    uploaded = {f.name for f in todo}
    return UploadResult(
        destination=destination,
        version=chosen,
        serving_version=max([*versions, chosen]),
        uploaded=tuple(sorted(uploaded)),
        skipped=tuple(sorted(local - uploaded)),
        stale=tuple(sorted({n.removeprefix(prefix) for n in remote} - local)),
        bytes_sent=sent,
        elapsed_s=tracker.elapsed(),
        workers=len(tracker.threads),
    )


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


def _split_model_path(model_path: str) -> tuple[str, str]:
    """``gs://b/a/b/`` -> ``("b", "a/b")`` (Config has validated the form)."""
    bucket, _, prefix = model_path.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def _remote_versions(client: Any, bucket: str, base: str, project: str) -> list[int]:
    """The numeric version directories under ``base`` (TF Serving ignores non-numeric ones too)."""

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
    """Object name -> (size, base64 CRC32C) for everything under ``prefix``, from one listing."""
    blobs = retry.call(
        lambda: list(client.list_blobs(bucket, prefix=prefix, retry=_storage_retry())),
        project=project,
        context=f"list gs://{bucket}/{prefix}",
    )
    return {b.name: (int(b.size or 0), b.crc32c or "") for b in blobs}


def _storage_retry() -> Any:
    """google-cloud-storage's default retry (transient errors, 1 s doubling to 60 s, 120 s in all),
    scaled like sdcluster's other backoffs (tests shrink ``retry.BACKOFF_SCALE``).

    Passed to uploads too: by default the library retries a media upload only under a generation
    precondition, but re-sending a whole file is idempotent for us (same name, same bytes).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    scale = retry.BACKOFF_SCALE
    return DEFAULT_RETRY.with_delay(initial=1.0 * scale, maximum=60.0 * scale, multiplier=2.0)


def _same_content(local: LocalFile, remote: tuple[int, str] | None) -> bool:
    # Size first: a cheap no that spares reading the file.
    return remote is not None and remote[0] == local.size and remote[1] == crc32c_b64(local.path)


def crc32c_b64(path: Path) -> str:
    """The file's CRC32C as Cloud Storage reports it (base64 of the big-endian 32-bit value).

    Example: ``crc32c_b64(Path("empty"))  # 'AAAAAA=='``.
    """
    import google_crc32c

    checksum = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            checksum.update(block)  # type: ignore[no-untyped-call]
    return base64.b64encode(checksum.digest()).decode()  # type: ignore[no-untyped-call]


def _upload(
    bucket: Any,
    prefix: str,
    files: list[LocalFile],
    tracker: _Tracker,
    max_workers: int,
    project: str,
    destination: str,
) -> None:
    from google.cloud.storage import transfer_manager

    if not files:
        return
    pairs = []
    for f in files:
        blob = bucket.blob(prefix + f.name)
        blob.chunk_size = CHUNK_SIZE
        pairs.append((_CountingReader(f, tracker), blob))
    tracker.emit("uploading", force=True)
    try:
        transfer_manager.upload_many(
            pairs,
            upload_kwargs={"retry": _storage_retry()},
            worker_type=transfer_manager.THREAD,
            max_workers=max_workers,
            raise_exception=True,
        )
    except SdclusterError:
        raise
    except Exception as e:
        raise translate(e, project=project, context=f"upload to {destination}") from e
    finally:
        for reader, _ in pairs:
            reader.close()


# --------------------------------------------------------------------------------------------------
# Progress: a file wrapper that counts what the uploader reads


class _Tracker:
    """Thread-safe counters behind the progress events."""

    def __init__(self, files_total: int, bytes_total: int, progress: Progress | None) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.progress = progress
        self.bytes_done = 0
        self.threads: set[int] = set()  # identities of the upload threads that read a file
        self.start = time.monotonic()
        self._last_emit = 0.0
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def skip(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def started(self) -> None:
        with self._lock:
            self.threads.add(threading.get_ident())

    def advance(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n
        self.emit("uploading")

    def emit(self, phase: Literal["checking", "uploading", "done"], *, force: bool = False) -> None:
        if self.progress is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_emit < PROGRESS_INTERVAL_S:
                return
            self._last_emit = now
            event = UploadProgress(
                phase, self.files_total, self.bytes_done, self.bytes_total, now - self.start
            )
            # Under the lock: the callback is never entered by two upload threads at once.
            self.progress(event)


class _CountingReader:
    """A read-only binary file for ``blob.upload_from_file``, opened on first use, counting bytes read.

    Progress counts the furthest offset read, so a retry that rewinds does not count twice. The file
    is closed at end of file (and reopened if a retry seeks back), so a model with many files does not
    hold a descriptor per file for the whole upload.
    """

    def __init__(self, local: LocalFile, tracker: _Tracker) -> None:
        self.local = local
        self.tracker = tracker
        self._file: BinaryIO | None = None
        self._pos = 0
        self._furthest = 0
        self._started = False

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = self.local.path.open("rb")
            self._file.seek(self._pos)
            if not self._started:
                self._started = True
                self.tracker.started()
        return self._file

    def read(self, size: int = -1) -> bytes:
        data = self._open().read(size)
        self._pos += len(data)
        if self._pos > self._furthest:
            self.tracker.advance(self._pos - self._furthest)
            self._furthest = self._pos
        if self._pos >= self.local.size:
            self.close()
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.local.size}[whence]
        self._pos = base + offset
        if self._file is not None:
            self._file.seek(self._pos)
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def summarize(result: UploadResult) -> dict[str, Any]:
    """The result as plain data, for ``--json`` output."""
    return {**dataclasses.asdict(result), "message": result.message}
