"""Upload a TensorFlow SavedModel into the model bucket, where TF Serving loads it from.

TF Serving watches ``--model_base_path`` (``cfg.model_path``, ``gs://<bucket>/stable_diffusion_model``)
and loads the **highest numeric version** directory below it, so the model goes to
``<model_path>/<version>/``:

- ``version=None`` reuses the highest version already in the bucket (a rerun of the same upload is
  then a no-op), or 1 when there is none. TF Serving does not reload a version it has loaded: to roll
  out a *new* model, upload it as a higher version (``version=N+1``) and TF Serving switches to it.
- Files whose size and CRC32C already match the object in the bucket are skipped (one listing of the
  version prefix, no per-file requests), so an interrupted upload resumes where it stopped.
- The rest goes through ``transfer.send``: many files in parallel, large files in parallel parts
  composed into one object, streamed from disk, CRC32C-checked, resumable: the sessions of an
  interrupted run are kept in a journal next to the state, and the next run sends only what they
  do not hold yet (``bytes_sent`` counts what went over the wire).

Objects under the version that are not in the directory are left alone and reported (``stale``).

Example::

    result = upload_model(cfg, "./stable_diffusion_model", factory=factory)
    result.message  # 'TF Serving will load version 1 from gs://demo-proj-bucket/stable_diffusion_model/1/'
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
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
    "LocalFile",
    "UploadProgress",
    "UploadResult",
    "crc32c_b64",
    "saved_model_files",
    "summarize",
    "upload_model",
]

MAX_WORKERS = 8
# Progress events while bytes flow are throttled; per-phase events are always sent.
PROGRESS_INTERVAL_S = 0.2


@dataclass(frozen=True)
class LocalFile:
    """One file of the SavedModel: ``name`` relative to the directory, with ``/`` separators."""

    path: Path
    name: str
    size: int


@dataclass(frozen=True)
class UploadProgress:
    """A progress report. ``phase``: "checking" (comparing checksums), "uploading", "done".

    ``bytes_done`` counts skipped files, bytes earlier sessions hold, and bytes read for sending.
    """

    phase: Literal["checking", "uploading", "done"]
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed_s: float

    bytes_at_start: int = 0  # skipped or already held when bytes began to flow

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
    tracker.skip(tracker.bytes_total - sum(f.size for f in todo))

    journal = transfer.journal_for(cfg.state.path, destination)
    sent = _upload(client.bucket(bucket_name), prefix, todo, tracker, max_workers, cfg.project, journal)
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
        bytes_sent=sent.bytes_sent,
        elapsed_s=tracker.elapsed(),
        workers=len(sent.workers),
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
    return transfer.crc32c_of(path)


def _upload(
    bucket: Any,
    prefix: str,
    files: list[LocalFile],
    tracker: _Tracker,
    max_workers: int,
    project: str,
    journal: Path,
) -> transfer.Sent:
    if not files:
        transfer.Journal(journal).clear()
        return transfer.Sent()
    tracker.emit("uploading", force=True)
    tracker.mark_start()
    return transfer.send(
        bucket,
        prefix,
        files,
        journal_path=journal,
        project=project,
        max_workers=max_workers,
        on_bytes=tracker.advance,
    )


# --------------------------------------------------------------------------------------------------
# Progress: a file wrapper that counts what the uploader reads


class _Tracker:
    """Thread-safe counters behind the progress events."""

    def __init__(self, files_total: int, bytes_total: int, progress: Progress | None) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.progress = progress
        self.bytes_done = 0
        self.bytes_at_start = 0
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

    def advance(self, n: int) -> None:
        with self._lock:
            self.bytes_done = min(self.bytes_total, self.bytes_done + n)  # a retry re-reads bytes
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
                phase,
                self.files_total,
                self.bytes_done,
                self.bytes_total,
                now - self.start,
                self.bytes_at_start,
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
