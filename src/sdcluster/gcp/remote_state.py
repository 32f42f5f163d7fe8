"""State in Cloud Storage (``gs://BUCKET/PREFIX/state.json``), for teams and CI."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from .. import retry
from ..errors import ConfigError, Conflict, NotFound, StateConflict, StateCorrupt
from ..state import LockInfo, State, locked_error, next_serial


class GcsBackend:
    """State in a Cloud Storage object, for teams and CI (``gs://BUCKET/PREFIX/state.json``).

    - Writes are compare-and-swap on the object's generation (``if_generation_match``): a writer
      that lost a race gets ``StateConflict``, never a silent overwrite. The previous generation
      stays readable as the backup when object versioning is on (``init --state`` turns it on;
      ``warnings`` says when it is off).
    - The lock is an object next to the state, created with ``if_generation_match=0`` (only one
      creator wins), holding pid, host, user, operation and started-at; released by deleting it
      with a generation precondition. ``force_unlock`` deletes it whoever holds it.
    """

    def __init__(self, url: str, factory: Any, project: str) -> None:
        bucket, _, name = url[len("gs://") :].partition("/")
        if not bucket or not name:
            raise ConfigError(f"bad state location {url}", hint="use gs://BUCKET/PREFIX/state.json")
        self.url = url
        self.bucket_name = bucket
        self.object_name = name
        self.lock_name = name + ".lock"
        self.factory = factory
        self.project = project
        self._generation: int | None = None  # of the state object as last read/written (0: absent)
        self._known: State | None = None  # its content
        self._held: LockInfo | None = None
        self._lock_generation: int | None = None
        self.warnings: list[str] = []

    def describe(self) -> str:
        return self.url

    def _bucket(self) -> Any:
        return self.factory.storage(self.project).bucket(self.bucket_name)

    def _call(self, fn: Any) -> Any:
        return retry.call(fn, context=f"state {self.url}")

    # ---- reading ---------------------------------------------------------------------------------
    def read(self) -> State | None:
        data = self._call(lambda: _download(self._bucket(), self.object_name))
        if data is None:
            self._generation = 0
            self._known = None
            return None
        raw, generation = data
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise StateCorrupt(
                f"state {self.url} (generation {generation}) is not valid JSON",
                hint=f"earlier generations are kept when versioning is on: gcloud storage ls -a {self.url}",
            ) from e
        state = State.from_dict(doc, source=f"state {self.url}")
        self._generation = generation
        self._known = state.copy()
        return state

    # ---- writing ---------------------------------------------------------------------------------
    def write(self, state: State) -> State:
        """Compare-and-swap on the generation this run last saw; a lost race is StateConflict."""
        if self._generation is None:
            self.read()
        if not next_serial(self._known, state, self.url):
            return state
        blob = self._bucket().blob(self.object_name)
        body = state.to_json()
        expected = self._generation or 0
        try:
            self._call(
                lambda: blob.upload_from_string(
                    body, content_type="application/json", if_generation_match=expected
                )
            )
        except Conflict as e:  # 412 precondition failed: someone else wrote since we read
            raise StateConflict(
                f"the state {self.url} was changed by someone else (this run expected generation {expected})",
                hint="another writer did not take the lock; inspect it (sdcluster state pull) and run again",
            ) from e
        self._generation = int(blob.generation or 0)
        self._known = state.copy()
        return state

    # ---- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        if self._held is not None:
            yield self._held
            return
        info = LockInfo(operation=operation)
        blob = self._bucket().blob(self.lock_name)
        try:
            self._call(
                lambda: blob.upload_from_string(
                    json.dumps(info.to_dict()), content_type="application/json", if_generation_match=0
                )
            )
        except Conflict:
            holder = self._lock_info()
            raise locked_error(holder, self.url) from None
        self._lock_generation = int(blob.generation or 0)
        self._held = info
        self._check_versioning()
        try:
            yield info
        finally:
            self._held = None
            generation = self._lock_generation
            self._lock_generation = None
            with contextlib.suppress(Exception):
                self._call(lambda: blob.delete(if_generation_match=generation))

    def _lock_info(self) -> LockInfo | None:
        try:
            data = self._call(lambda: _download(self._bucket(), self.lock_name))
            return LockInfo.from_dict(json.loads(data[0])) if data else None
        except Exception:
            return None

    def lock_is_mine(self) -> bool:
        return self._held is not None

    def holder(self) -> LockInfo | None:
        return self._lock_info()

    def force_unlock(self) -> LockInfo | None:
        info = self._lock_info()
        blob = self._bucket().blob(self.lock_name)
        try:
            self._call(blob.delete)
        except NotFound:
            return None
        return info or LockInfo(operation="unknown", pid=0, host="?")

    def _check_versioning(self) -> None:
        try:
            bucket = self._call(lambda: self.factory.storage(self.project).get_bucket(self.bucket_name))
        except Exception:
            return
        if not bucket.versioning_enabled:
            self.warnings.append(
                f"object versioning is off on gs://{self.bucket_name}: earlier state versions are not kept "
                f"(turn it on: gcloud storage buckets update gs://{self.bucket_name} --versioning)"
            )


def _download(bucket: Any, name: str) -> tuple[bytes, int] | None:
    """The object's bytes and generation (None when absent), read consistently."""
    from google.api_core import exceptions as gexc

    blob = bucket.get_blob(name)
    if blob is None:
        return None
    generation = int(blob.generation)  # read before the download, which clears blob properties
    try:
        return blob.download_as_bytes(if_generation_match=generation), generation
    except (gexc.NotFound, gexc.PreconditionFailed):
        return None  # replaced or deleted between the two calls: the caller's retry reads again
