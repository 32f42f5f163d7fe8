"""The emulated Cloud Storage's data: buckets, objects with their generations, upload sessions.

Object bytes live in files under ``<root>/blobs`` (written as they arrive, never held in memory);
metadata lives in memory and, when the emulator persists, in ``<root>/meta.json`` (rewritten
atomically after each change). Only metadata changes happen under ``Store.lock``: bytes stream into
a fresh file outside it, and a finished upload becomes an object's new generation in one step.

Generations follow https://cloud.google.com/storage/docs/object-versioning: each write makes a new
generation (microseconds since the epoch, increasing); in a bucket with versioning on, overwriting or
deleting the live object keeps it as a noncurrent generation (``timeDeleted`` set), listable with
``versions=true`` and readable with ``generation=``; without versioning the old generation is gone.

Example::

    store = Store(None)  # a temporary directory, removed by close()
    path = store.new_blob_path()
    ...write bytes to path...
    obj = store.commit("b", {"name": "o", "bucket": "b", ...}, path)
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

import google_crc32c

BLOB_KEY = "_blob"  # the object's content file, relative to <root>/blobs (never sent to clients)


def now_rfc3339(t: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(t if t is not None else time.time(), dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"  # milliseconds, as GCS answers


class Checksums:
    """CRC32C and MD5 of bytes as they stream by, in GCS's base64 form."""

    def __init__(self) -> None:
        import hashlib

        self._crc = google_crc32c.Checksum()
        self._md5 = hashlib.md5()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._crc.update(data)
        self._md5.update(data)
        self.size += len(data)

    @property
    def crc32c(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()

    @property
    def md5(self) -> str:
        return base64.b64encode(self._md5.digest()).decode()


_ZEROS = bytes(1 << 20)


def _extend_zeros(crc: int, n: int) -> int:
    while n > 0:
        step = min(n, len(_ZEROS))
        crc = google_crc32c.extend(crc, _ZEROS[:step] if step < len(_ZEROS) else _ZEROS)
        n -= step
    return crc


def crc32c_concat(parts: list[tuple[str, int]]) -> str:
    """The CRC32C (GCS's base64) of the concatenation of parts given as (base64 CRC32C, size), as
    Cloud Storage computes a composite object's from its components', without reading them.

    CRC32C is affine in its input, so crc(A+B) = ext(crc(A), 0^n) ^ crc(B) ^ ext(0, 0^n) with n =
    len(B) and ext(c, 0^n) the CRC continued over n zero bytes.
    """
    total: int | None = None
    for b64, size in parts:
        crc = int.from_bytes(base64.b64decode(b64), "big")
        total = crc if total is None else _extend_zeros(total, size) ^ crc ^ _extend_zeros(0, size)
    value = 0 if total is None else total
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def file_checksums(path: str, start: int = 0, length: int | None = None) -> Checksums:
    sums = Checksums()
    with open(path, "rb") as f:
        f.seek(start)
        left = length if length is not None else os.path.getsize(path) - start
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            sums.update(block)
            left -= len(block)
    return sums


class Store:
    """Buckets, their IAM policies, object generations and upload sessions (see the module doc)."""

    def __init__(self, root: str | None) -> None:
        self.persistent = root is not None
        self.root = root or tempfile.mkdtemp(prefix="sdcluster-gcs-")
        self.blob_dir = os.path.join(self.root, "blobs")
        os.makedirs(self.blob_dir, exist_ok=True)
        self.lock = threading.RLock()
        self.buckets: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, list[dict[str, Any]]]] = {}  # generations, oldest first
        self.sessions: dict[str, dict[str, Any]] = {}  # resumable (JSON API) and multipart (XML API)
        self._last_generation = 0
        meta = os.path.join(self.root, "meta.json")
        if self.persistent and os.path.exists(meta):
            with open(meta, encoding="utf-8") as f:
                data = json.load(f)
            self.buckets, self.policies = data["buckets"], data["policies"]
            self.objects, self.sessions = data["objects"], data["sessions"]
            self._last_generation = int(data.get("last_generation", 0))

    def close(self) -> None:
        if not self.persistent:
            shutil.rmtree(self.root, ignore_errors=True)

    def save(self) -> None:
        """Write the metadata (under the lock) when the emulator persists its state."""
        if not self.persistent:
            return
        with self.lock:  # dump, write and replace together: a slower save must not land last
            text = json.dumps(
                {
                    "buckets": self.buckets,
                    "policies": self.policies,
                    "objects": self.objects,
                    "sessions": self.sessions,
                    "last_generation": self._last_generation,
                }
            )
            path = os.path.join(self.root, "meta.json")
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)

    # ---- content files ------------------------------------------------------------------------------
    def new_blob_path(self) -> str:
        return os.path.join(self.blob_dir, uuid.uuid4().hex)

    def blob_path(self, obj: dict[str, Any]) -> str:
        return os.path.join(self.blob_dir, str(obj[BLOB_KEY]))

    def _drop_blob(self, obj: dict[str, Any]) -> None:
        try:
            os.unlink(self.blob_path(obj))
        except FileNotFoundError:
            pass

    # ---- generations --------------------------------------------------------------------------------
    def next_generation(self) -> int:
        with self.lock:
            self._last_generation = max(self._last_generation + 1, int(time.time() * 1_000_000))
            return self._last_generation

    def live(self, bucket: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            generations = self.objects.get(bucket, {}).get(name) or []
            if generations and "timeDeleted" not in generations[-1]:
                return generations[-1]
            return None

    def find(self, bucket: str, name: str, generation: str | None = None) -> dict[str, Any] | None:
        """The live object, or the given generation (live or noncurrent)."""
        if not generation:
            return self.live(bucket, name)
        with self.lock:
            for obj in self.objects.get(bucket, {}).get(name) or []:
                if obj["generation"] == str(generation):
                    return obj
        return None

    def commit(self, bucket: str, resource: dict[str, Any], blob_path: str) -> dict[str, Any]:
        """Make ``resource`` (with its bytes in ``blob_path``) the object's new live generation."""
        with self.lock:
            versioned = bool((self.buckets[bucket].get("versioning") or {}).get("enabled"))
            generations = self.objects.setdefault(bucket, {}).setdefault(resource["name"], [])
            self._retire_live(generations, versioned)
            generation = self.next_generation()
            stamp = now_rfc3339(generation / 1_000_000)
            obj = {
                **resource,
                "kind": "storage#object",
                "bucket": bucket,
                "generation": str(generation),
                "metageneration": "1",
                "id": f"{bucket}/{resource['name']}/{generation}",
                "timeCreated": stamp,
                "updated": stamp,
                "timeFinalized": stamp,
                "timeStorageClassUpdated": stamp,
                "storageClass": self.buckets[bucket].get("storageClass", "STANDARD"),
                BLOB_KEY: os.path.basename(blob_path),
            }
            obj["etag"] = etag_of(obj)
            generations.append(obj)
        self.save()
        return obj

    def _retire_live(self, generations: list[dict[str, Any]], versioned: bool) -> None:
        if not generations or "timeDeleted" in generations[-1]:
            return
        if versioned:
            generations[-1]["timeDeleted"] = now_rfc3339()
        else:
            self._drop_blob(generations.pop())

    def delete(self, bucket: str, name: str, generation: str | None = None) -> bool:
        """Delete the live object (kept as noncurrent when versioned) or one generation for good."""
        with self.lock:
            generations = self.objects.get(bucket, {}).get(name) or []
            if generation:
                match = [g for g in generations if g["generation"] == str(generation)]
                if not match:
                    return False
                generations.remove(match[0])
                self._drop_blob(match[0])
            else:
                if not generations or "timeDeleted" in generations[-1]:
                    return False
                versioned = bool((self.buckets[bucket].get("versioning") or {}).get("enabled"))
                self._retire_live(generations, versioned)
            if not generations:
                self.objects[bucket].pop(name, None)
        self.save()
        return True

    def update(self, obj: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """New metadata on the same generation: metageneration + 1, etag changes."""
        with self.lock:
            obj.update(fields)
            obj["metageneration"] = str(int(obj["metageneration"]) + 1)
            obj["updated"] = now_rfc3339()
            obj["etag"] = etag_of(obj)
        self.save()
        return obj

    def listing(self, bucket: str, versions: bool) -> list[dict[str, Any]]:
        """Objects of ``bucket`` sorted by name then generation: live ones, or every generation."""
        with self.lock:
            out = []
            for name in sorted(self.objects.get(bucket, {})):
                generations = self.objects[bucket][name]
                if versions:
                    out.extend(generations)
                elif generations and "timeDeleted" not in generations[-1]:
                    out.append(generations[-1])
            return out

    def has_objects(self, bucket: str) -> bool:
        """Any generation, live or noncurrent: GCS refuses to delete a bucket that holds one."""
        with self.lock:
            return any(self.objects.get(bucket, {}).values())

    # ---- sessions --------------------------------------------------------------------------------------
    def new_session(self, fields: dict[str, Any]) -> dict[str, Any]:
        session = {
            **fields,
            "id": uuid.uuid4().hex,
            "created": time.time(),
            "received": 0,
            "blob": uuid.uuid4().hex,
        }
        with self.lock:
            self.sessions[session["id"]] = session
        self.save()
        return session

    def session_path(self, session: dict[str, Any]) -> str:
        return os.path.join(self.blob_dir, str(session["blob"]))

    def end_session(self, session_id: str, drop_file: bool = True) -> None:
        with self.lock:
            session = self.sessions.pop(session_id, None)
        if session is not None and drop_file:
            try:
                os.unlink(self.session_path(session))
            except FileNotFoundError:
                pass
        self.save()

    def deep(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(obj)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_etag(*numbers: int) -> str:
    """GCS's etags are base64 of a tiny protobuf: field 1 (and 2) varints. ``pb_etag(1) == "CAE="``."""
    raw = b"".join(bytes([(i + 1) << 3]) + _varint(n) for i, n in enumerate(numbers))
    return base64.b64encode(raw).decode()


def etag_of(obj: dict[str, Any]) -> str:
    """An object's etag: its generation and metageneration ("CJ+a3ePdzvYCEAE=")."""
    return pb_etag(int(obj["generation"]), int(obj["metageneration"]))


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object resource as GCS sends it (no internal keys)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}
