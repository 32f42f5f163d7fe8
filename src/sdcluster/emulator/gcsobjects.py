"""Cloud Storage objects for the emulator: uploads (simple, multipart, resumable; XML multipart),
downloads, listing, metadata, compose, rewrite/copy, with GCS's generation rules.

Sources, by rule (each has its row and test in docs/emulator-rules.md, "Cloud Storage"):

- uploads: https://cloud.google.com/storage/docs/uploads-downloads and
  https://cloud.google.com/storage/docs/performing-resumable-uploads: a resumable session answers
  308 with ``Range: bytes=0-N`` (no ``Range`` before the first byte) until the last byte, then 200
  and the object; a status query (``Content-Range: bytes */SIZE``) of a finished session answers the
  object again; a cancelled session (DELETE -> 499) and an expired one (older than a week,
  ``Knobs.upload_session_s``) answer 410 Gone, the error after which only a new session helps
  (googleapis/python-storage#26). Bytes of an interrupted request are kept up to the last whole
  256 KiB (resumable uploads persist in 256 KiB units), so the client resumes where the status says;
- preconditions: https://cloud.google.com/storage/docs/request-preconditions (``ifGenerationMatch``,
  0 = "must not exist"; ``ifMetagenerationMatch``; on a resumable upload they are checked when it
  starts and again when it completes);
- versions: https://cloud.google.com/storage/docs/object-versioning (see gcsstore);
- compose: https://cloud.google.com/storage/docs/composite-objects (at most 32 sources per request,
  1024 components in all, same bucket; the result has a CRC32C and no MD5, ``componentCount``);
- rewrite and copy: https://cloud.google.com/storage/docs/json_api/v1/objects/rewrite (one call
  finishes within one location and storage class: ``done: true``);
- XML multipart uploads: https://cloud.google.com/storage/docs/multipart-uploads (parts 1..10000,
  every part but the last at least 5 MiB, parts completed in ascending order with their ETags).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import threading
import time
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .gcshttp import PRECONDITION_FAILED, Call, Reply, gcs_error, json_reply
from .gcsstore import Checksums, crc32c_concat, file_checksums, now_rfc3339, public

MIB = 1024 * 1024
PERSIST_UNIT = 256 * 1024  # resumable uploads persist whole 256 KiB units until the last chunk
MAX_COMPOSE_SOURCES = 32
MAX_COMPONENTS = 1024
MIN_XML_PART = 5 * MIB
MAX_XML_PARTS = 10000
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

_WRITABLE = (
    "contentType",
    "contentEncoding",
    "contentDisposition",
    "contentLanguage",
    "cacheControl",
    "metadata",
    "customTime",
    "temporaryHold",
    "eventBasedHold",
)
_session_locks: dict[str, threading.Lock] = {}
_session_locks_lock = threading.Lock()


def _session_lock(session_id: str) -> threading.Lock:
    with _session_locks_lock:
        return _session_locks.setdefault(session_id, threading.Lock())


# --------------------------------------------------------------------------------------------------
# Preconditions and object lookups


def check_generation(query: dict[str, list[str]], obj: dict[str, Any] | None, prefix: str = "if") -> None:
    """ifGenerationMatch (0 = "must not exist"), ifGenerationNotMatch and the metageneration pair."""
    generation = str(obj["generation"]) if obj else "0"
    want = query.get(f"{prefix}GenerationMatch")
    if want and want[0] != generation:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    unwanted = query.get(f"{prefix}GenerationNotMatch")
    if unwanted and unwanted[0] == generation:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    if obj is None:
        if query.get(f"{prefix}MetagenerationMatch"):
            raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
        return
    meta = str(obj["metageneration"])
    want = query.get(f"{prefix}MetagenerationMatch")
    if want and want[0] != meta:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    unwanted = query.get(f"{prefix}MetagenerationNotMatch")
    if unwanted and unwanted[0] == meta:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")


def _no_such_object(bucket: str, name: str) -> Exception:
    return gcs_error(404, f"No such object: {bucket}/{name}", "notFound")


def _existing(call: Call, name: str | None = None, generation: str | None = None) -> dict[str, Any]:
    name = name if name is not None else call.object_name
    obj = call.store.find(
        call.bucket_name, name, generation if generation is not None else call.arg("generation")
    )
    if obj is None:
        raise _no_such_object(call.bucket_name, name)
    return obj


def _may_overwrite(call: Call, name: str, bucket: dict[str, Any] | None = None) -> None:
    """Replacing a live object also needs storage.objects.delete (uploads, compose, copies)."""
    bucket = bucket or call.bucket
    assert bucket is not None
    if call.store.live(bucket["name"], name) is not None:
        call.require("storage.objects.delete", bucket=bucket)


def _writable(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta[k] for k in _WRITABLE if meta.get(k) is not None}
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: str(v) for k, v in out["metadata"].items() if v is not None}
    return out


def _resource(name: str, meta: dict[str, Any], sums: Checksums, content_type: str = "") -> dict[str, Any]:
    resource = _writable(meta)
    resource.update(name=name, size=str(sums.size), crc32c=sums.crc32c, md5Hash=sums.md5)
    resource["contentType"] = resource.get("contentType") or content_type or "application/octet-stream"
    return resource


def _verify_declared(meta: dict[str, Any], sums: Checksums) -> None:
    """A client that names the CRC32C or MD5 of what it sends gets a 400 when the bytes differ."""
    for key, label, got in (("crc32c", "CRC32C", sums.crc32c), ("md5Hash", "MD5", sums.md5)):
        declared = meta.get(key)
        if declared and declared != got:
            raise gcs_error(
                400, f'Provided {label} "{declared}" doesn\'t match calculated {label} "{got}".', "invalid"
            )


def _commit(call: Call, resource: dict[str, Any], path: str, bucket: str | None = None) -> dict[str, Any]:
    """Preconditions on the live object, then the new generation (under the store's lock)."""
    bucket = bucket or call.bucket_name
    with call.store.lock:
        check_generation(call.query, call.store.live(bucket, resource["name"]))
        obj = call.store.commit(bucket, resource, path)
    return _with_links(call, obj)


def _with_links(call: Call, obj: dict[str, Any]) -> dict[str, Any]:
    out = public(obj)
    name = quote(obj["name"], safe="")
    base = call.base_url()
    out["selfLink"] = f"{base}/storage/v1/b/{obj['bucket']}/o/{name}"
    out["mediaLink"] = (
        f"{base}/download/storage/v1/b/{obj['bucket']}/o/{name}?generation={obj['generation']}&alt=media"
    )
    return out


def _receive(call: Call, path: str, offset: int = 0, skip: int = 0) -> tuple[Checksums, int]:
    """Stream the request body into ``path`` at ``offset`` (after dropping ``skip`` bytes already held)."""
    sums = Checksums()
    written = 0
    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        while block := call.body.read(MIB):
            if skip:
                dropped = min(skip, len(block))
                block, skip = block[dropped:], skip - dropped
            if block:
                f.write(block)
                sums.update(block)
                written += len(block)
    return sums, written


# --------------------------------------------------------------------------------------------------
# Uploads (JSON API): POST /upload/storage/v1/b/{bucket}/o?uploadType=media|multipart|resumable


def insert_object(call: Call) -> Reply:
    kind = call.arg("uploadType", "media")
    if kind == "resumable":
        return _start_session(call)
    assert call.bucket is not None
    if call.arg("predefinedAcl") and call.bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]:
        raise gcs_error(
            400,
            "Cannot insert legacy ACL for an object when uniform bucket-level access is enabled. Read more at "
            "https://cloud.google.com/storage/docs/uniform-bucket-level-access",
            "invalid",
        )
    path = call.store.new_blob_path()
    try:
        if kind == "multipart":
            meta, content_type, sums = _multipart(call, path)
        elif kind == "media":
            meta, content_type = {}, call.headers.get("Content-Type") or ""
            sums, _ = _receive(call, path)
        else:
            raise gcs_error(400, f"Invalid upload type: {kind}", "invalid")
        name = call.arg("name") or str(meta.get("name") or "")
        if not name:
            raise gcs_error(400, "Required", "required")
        if not call.body.complete:
            raise gcs_error(400, "The request body ended before its Content-Length.", "invalid")
        _may_overwrite(call, name)
        _verify_declared(meta, sums)
        return json_reply(_commit(call, _resource(name, meta, sums, content_type), path))
    except BaseException:
        _unlink(path)
        raise


def _multipart(call: Call, path: str) -> tuple[dict[str, Any], str, Checksums]:
    """multipart/related: the JSON metadata part, then the media part (small by design: read whole)."""
    parts = split_multipart(call.headers.get("Content-Type") or "", call.body.read())
    if len(parts) != 2:
        raise gcs_error(400, "Multipart upload needs a metadata part and a media part.", "invalid")
    try:
        meta = json.loads(parts[0][1] or b"{}")
    except ValueError as e:
        raise gcs_error(400, f"Parse Error: {e}", "parseError") from e
    headers, data = parts[1]
    sums = Checksums()
    sums.update(data)
    with open(path, "wb") as f:
        f.write(data)
    return meta, headers.get("content-type", ""), sums


_BOUNDARY = re.compile(r"""boundary=(?:"([^"]+)"|'([^']+)'|([^;\s]+))""")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def split_multipart(content_type: str, raw: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (lower-cased headers, content).

    Lines may end in CRLF or LF and the boundary may be quoted either way: gcloud sends
    ``boundary='===...=='`` with LF line ends, Google's client libraries CRLF.
    """
    found = _BOUNDARY.search(content_type)
    if not found:
        raise gcs_error(400, "Multipart upload without a boundary.", "invalid")
    delimiter = b"--" + next(g for g in found.groups() if g).encode()
    parts = []
    for chunk in raw.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n") if chunk.startswith(b"\r\n") else chunk.removeprefix(b"\n")
        blank = _BLANK_LINE.search(chunk)
        if blank is None:
            head, content = chunk, b""
        else:
            head, content = chunk[: blank.start()], chunk[blank.end() :]
        content = content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
        headers = {}
        for line in head.decode("latin-1").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---- resumable sessions ---------------------------------------------------------------------------


def _start_session(call: Call) -> Reply:
    meta = call.json()
    name = call.arg("name") or str(meta.get("name") or "")
    if not name:
        raise gcs_error(400, "Required", "required")
    _may_overwrite(call, name)
    check_generation(call.query, call.store.live(call.bucket_name, name))
    size = call.headers.get("X-Upload-Content-Length")
    session = call.store.new_session(
        {
            "kind": "resumable",
            "bucket": call.bucket_name,
            "name": name,
            "meta": meta,
            "contentType": call.headers.get("X-Upload-Content-Type") or "",
            "query": {k: v for k, v in call.query.items() if "eneration" in k},
            "size": int(size) if size else None,
        }
    )
    open(call.store.session_path(session), "wb").close()
    url = f"{call.base_url()}/upload/storage/v1/b/{call.bucket_name}/o?uploadType=resumable&name={quote(name, safe='')}&upload_id={session['id']}"
    return Reply(200, {"Location": url, "Content-Type": "text/plain; charset=utf-8"}, b"")


def _live_session(call: Call) -> dict[str, Any]:
    session = call.store.sessions.get(call.arg("upload_id"))
    if session is None or session.get("kind") != "resumable":
        raise gcs_error(404, "No such upload session.", "notFound")
    if session.get("cancelled") or time.time() - session["created"] > call.gate.world.knobs.upload_session_s:
        raise gcs_error(410, "The upload session is gone (cancelled or expired): start a new upload.", "gone")
    return session


def _parse_range(header: str) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/total`` -> (a, b, total); ``*`` parts are None; no header -> the whole object."""
    spec = header.strip().removeprefix("bytes").strip()
    span, _, total = spec.partition("/")
    first = last = None
    if span != "*":
        a, _, b = span.partition("-")
        first, last = int(a), int(b)
    return first, last, (int(total) if total not in ("", "*") else None)


def upload_chunk(call: Call) -> Reply:
    """PUT (or POST) to a session URI: a chunk, the last chunk, or a status query."""
    session = _live_session(call)
    with _session_lock(session["id"]):
        if session.get("object"):
            call.body.drain()
            return json_reply(session["object"])
        header = call.headers.get("Content-Range")
        try:
            first, _, total = _parse_range(header) if header else (0, None, None)
        except ValueError as e:
            raise gcs_error(400, f"Invalid Content-Range: {header}", "invalid") from e
        if not header:
            total = int(call.headers.get("Content-Length") or 0)
        total = total if total is not None else session.get("size")
        held = int(session["received"])
        path = call.store.session_path(session)
        whole: Checksums | None = None  # the checksums, when this one request carried every byte
        if first is not None:
            if first > held:
                raise gcs_error(
                    400,
                    f"Invalid request: the chunk starts at byte {first}, the session holds {held}.",
                    "invalid",
                )
            received, written = _receive(call, path, offset=held, skip=held - first)
            whole = received if held == 0 and first == 0 else None
            with open(path, "r+b") as f:  # drop what an earlier, interrupted chunk left past ``held``
                f.truncate(held + written)
            held += written
            final = total is not None and held >= total
            if not final:
                held -= held % PERSIST_UNIT
                with open(path, "r+b") as f:
                    f.truncate(held)
            session["received"] = held
            call.store.save()
        if total is not None and held >= total:
            if held > total:
                raise gcs_error(
                    400, f"The session holds {held} bytes, more than the {total} declared.", "invalid"
                )
            return _finish_session(call, session, path, whole)
        headers = {"Range": f"bytes=0-{held - 1}"} if held else {}
        return Reply(308, {**headers, "Content-Type": "text/plain; charset=utf-8"}, b"")


def _finish_session(call: Call, session: dict[str, Any], path: str, sums: Checksums | None = None) -> Reply:
    """Commit the session's object; ``sums``: its checksums when one request carried it all (else
    the file is read again: the hash state of earlier requests is not kept)."""
    if sums is None or sums.size != os.path.getsize(path):
        sums = file_checksums(path)
    meta = session["meta"]
    call.query = {**session["query"]}
    bucket = call.store.buckets.get(session["bucket"])
    if bucket is None:
        raise gcs_error(404, "The specified bucket does not exist.", "notFound")
    try:
        _verify_declared(meta, sums)
        obj = _commit(
            call, _resource(session["name"], meta, sums, session["contentType"]), path, session["bucket"]
        )
    except Exception:
        call.store.end_session(session["id"])
        raise
    session["object"] = obj  # later status queries of this session answer the object
    call.store.save()
    return json_reply(obj)


def cancel_session(call: Call) -> Reply:
    session = _live_session(call)
    with _session_lock(session["id"]):
        session["cancelled"] = True
        _unlink(call.store.session_path(session))
        call.store.save()
    return Reply(499, {"Content-Type": "text/plain; charset=utf-8"}, b"")


# --------------------------------------------------------------------------------------------------
# Reads


def get_object(call: Call) -> Reply:
    obj = _existing(call)
    check_generation(call.query, obj)
    if call.arg("alt") == "media":
        return _media(call, obj)
    return json_reply(_with_links(call, obj))


def download_object(call: Call) -> Reply:
    obj = _existing(call)
    check_generation(call.query, obj)
    return _media(call, obj)


def _media(call: Call, obj: dict[str, Any]) -> Reply:
    size = int(obj["size"])
    hashes = [f"crc32c={obj['crc32c']}"] + ([f"md5={obj['md5Hash']}"] if obj.get("md5Hash") else [])
    headers = {
        "Content-Type": obj.get("contentType") or "application/octet-stream",
        "ETag": obj["etag"],
        "x-goog-generation": obj["generation"],
        "x-goog-metageneration": obj["metageneration"],
        "x-goog-hash": ",".join(hashes),
        "x-goog-stored-content-length": str(size),
        "x-goog-stored-content-encoding": obj.get("contentEncoding") or "identity",
        "Accept-Ranges": "bytes",
    }
    start, length, status = 0, size, 200
    wanted = (call.headers.get("Range") or "").strip()
    if wanted.startswith("bytes="):
        a, _, b = wanted[6:].split(",")[0].partition("-")
        if a == "":
            start = max(0, size - int(b))
            end = size - 1
        else:
            start, end = int(a), min(int(b) if b else size - 1, size - 1)
        if start >= size and size > 0:
            raise gcs_error(416, "Request range not satisfiable", "requestedRangeNotSatisfiable")
        length, status = max(0, end - start + 1), 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    return Reply(status, headers, file=(call.store.blob_path(obj), start, length))


def list_objects(call: Call) -> Reply:
    """Names in order, ``delimiter`` folding names into ``prefixes``, pages of ``maxResults``."""
    prefix, delimiter = call.arg("prefix"), call.arg("delimiter")
    start, end = call.arg("startOffset"), call.arg("endOffset")
    versions = call.arg("versions").lower() == "true"
    trailing = call.arg("includeTrailingDelimiter").lower() == "true"
    limit = max(1, min(int(call.arg("maxResults", "1000") or 1000), 1000))
    after = json.loads(base64.b64decode(call.arg("pageToken"))) if call.arg("pageToken") else None
    items: list[dict[str, Any]] = []
    prefixes: list[str] = []
    token = None
    last: list[str] = []
    for obj in call.store.listing(call.bucket_name, versions):
        name = obj["name"]
        if not name.startswith(prefix) or (start and name < start) or (end and name >= end):
            continue
        folded = None
        if delimiter:
            cut = name.find(delimiter, len(prefix))
            if cut >= 0:
                folded = name[: cut + len(delimiter)]
        key = [folded, ""] if folded else [name, obj["generation"]]
        if after is not None and key <= after:
            continue
        if folded and prefixes and prefixes[-1] == folded:
            continue
        if len(items) + len(prefixes) >= limit:
            token = base64.b64encode(json.dumps(last).encode()).decode()
            break
        if folded:
            prefixes.append(folded)
            if trailing and name == folded:
                items.append(_with_links(call, obj))
        else:
            items.append(_with_links(call, obj))
        last = key
    out: dict[str, Any] = {"kind": "storage#objects"}
    if items:
        out["items"] = items
    if prefixes:
        out["prefixes"] = prefixes
    if token:
        out["nextPageToken"] = token
    return json_reply(out)


# --------------------------------------------------------------------------------------------------
# Metadata and deletion


def patch_object(call: Call) -> Reply:
    """PATCH merges ``metadata`` (a null value deletes its key); PUT replaces the writable fields."""
    obj = _existing(call)
    check_generation(call.query, obj)
    body = call.json()
    fields = _writable(body)
    if call.method == "PATCH":
        if isinstance(body.get("metadata"), dict):
            merged = {**(obj.get("metadata") or {}), **body["metadata"]}
            fields["metadata"] = {k: str(v) for k, v in merged.items() if v is not None}
    else:
        for key in _WRITABLE:
            if key not in fields and key != "contentType":
                obj.pop(key, None)
    if fields.get("metadata") == {}:
        obj.pop("metadata", None)
        fields.pop("metadata")
    return json_reply(_with_links(call, call.store.update(obj, fields)))


def delete_object(call: Call) -> Reply:
    obj = _existing(call)
    check_generation(call.query, obj)
    call.store.delete(call.bucket_name, obj["name"], call.arg("generation") or None)
    return Reply(204, {}, b"")


# --------------------------------------------------------------------------------------------------
# Compose, rewrite, copy


def compose_object(call: Call) -> Reply:
    body = call.json()
    sources = body.get("sourceObjects") or []
    if not sources:
        raise gcs_error(400, "Required: sourceObjects", "required")
    if len(sources) > MAX_COMPOSE_SOURCES:
        raise gcs_error(
            400,
            f"The number of source components provided ({len(sources)}) exceeds the maximum ({MAX_COMPOSE_SOURCES}).",
            "invalid",
        )
    call.require("storage.objects.get")
    objs = []
    for src in sources:
        obj = call.store.find(
            call.bucket_name, str(src.get("name") or ""), str(src.get("generation") or "") or None
        )
        if obj is None:
            raise _no_such_object(call.bucket_name, str(src.get("name")))
        want = (src.get("objectPreconditions") or {}).get("ifGenerationMatch")
        if want is not None and str(want) != obj["generation"]:
            raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
        objs.append(call.store.deep(obj))
    components = sum(int(o.get("componentCount") or 1) for o in objs)
    if components > MAX_COMPONENTS:
        raise gcs_error(
            400, f"The composite object would have {components} components; the limit is 1024.", "invalid"
        )
    name = call.object_name
    _may_overwrite(call, name)
    path = call.store.new_blob_path()
    try:
        # The bytes are copied by the kernel; the CRC32C is the components' combined, as GCS does it
        # (a composite has no MD5): the emulator's CPU does not grow with the object.
        with open(path, "wb") as out:
            for obj in objs:
                with open(call.store.blob_path(obj), "rb") as f:
                    _copy_file(f, out)
        destination = body.get("destination") or {}
        resource = _writable(destination)
        resource.update(
            name=name,
            size=str(sum(int(o["size"]) for o in objs)),
            crc32c=crc32c_concat([(str(o["crc32c"]), int(o["size"])) for o in objs]),
        )
        resource["contentType"] = (
            resource.get("contentType") or objs[0].get("contentType") or "application/octet-stream"
        )
        resource["componentCount"] = components
        return json_reply(_commit(call, resource, path))
    except BaseException:
        _unlink(path)
        raise


def _copy_file(src: Any, out: Any) -> None:
    """All of ``src`` appended to ``out`` (both open files), in the kernel where it can."""
    out.flush()
    try:
        while os.copy_file_range(src.fileno(), out.fileno(), 1 << 30):
            pass
    except (AttributeError, OSError):  # no copy_file_range here: through user space
        shutil.copyfileobj(src, out, MIB)


def rewrite_object(call: Call) -> Reply:
    return _copy(call, rewrite=True)


def copy_object(call: Call) -> Reply:
    return _copy(call, rewrite=False)


def _copy(call: Call, rewrite: bool) -> Reply:
    """rewriteTo and copyTo: the source's bytes (hard-linked: contents never change) under a new name."""
    source = _existing(call, generation=call.arg("sourceGeneration"))
    check_generation(call.query, source, prefix="ifSource")
    dest_bucket = call.store.buckets.get(call.params["dest_bucket"])
    if dest_bucket is None:
        raise gcs_error(404, "The specified bucket does not exist.", "notFound")
    dest_name = call.params["dest_object"]
    call.require("storage.objects.create", bucket=dest_bucket)
    _may_overwrite(call, dest_name, dest_bucket)
    body = call.json()
    keep = {k: source[k] for k in (*_WRITABLE, "crc32c", "md5Hash", "size", "componentCount") if k in source}
    resource = {**keep, **_writable(body), "name": dest_name}
    path = call.store.new_blob_path()
    try:
        os.link(call.store.blob_path(source), path)
    except OSError:
        shutil.copyfile(call.store.blob_path(source), path)
    try:
        obj = _commit(call, resource, path, dest_bucket["name"])
    except BaseException:
        _unlink(path)
        raise
    if not rewrite:
        return json_reply(obj)
    size = obj["size"]
    return json_reply(
        {
            "kind": "storage#rewriteResponse",
            "totalBytesRewritten": size,
            "objectSize": size,
            "done": True,
            "resource": obj,
        }
    )


# --------------------------------------------------------------------------------------------------
# XML API multipart uploads: POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId, DELETE, GET


def _xml(root: str, fields: list[tuple[str, str]]) -> Reply:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields)
    text = f"<?xml version='1.0' encoding='UTF-8'?><{root} xmlns='{_S3_NS}'>{inner}</{root}>"
    return Reply(200, {"Content-Type": "application/xml; charset=UTF-8"}, text.encode())


def _mpu(call: Call) -> dict[str, Any]:
    session = call.store.sessions.get(call.arg("uploadId"))
    if session is None or session.get("kind") != "xml" or session["name"] != call.object_name:
        raise gcs_error(404, "The requested upload was not found.", "notFound", xml_code="NoSuchUpload")
    return session


def xml_initiate(call: Call) -> Reply:
    meta: dict[str, Any] = {"contentType": call.headers.get("Content-Type") or "application/octet-stream"}
    custom = {
        k[len("x-goog-meta-") :]: v for k, v in call.headers.items() if k.lower().startswith("x-goog-meta-")
    }
    if custom:
        meta["metadata"] = custom
    _may_overwrite(call, call.object_name)
    call.body.drain()
    session = call.store.new_session(
        {"kind": "xml", "bucket": call.bucket_name, "name": call.object_name, "meta": meta, "parts": {}}
    )
    return _xml(
        "InitiateMultipartUploadResult",
        [("Bucket", call.bucket_name), ("Key", call.object_name), ("UploadId", session["id"])],
    )


def xml_part(call: Call) -> Reply:
    session = _mpu(call)
    number = int(call.arg("partNumber") or 0)
    if not 1 <= number <= MAX_XML_PARTS:
        raise gcs_error(
            400,
            f"Part number must be an integer between 1 and {MAX_XML_PARTS}.",
            "invalid",
            xml_code="InvalidArgument",
        )
    path = call.store.new_blob_path()
    sums, _ = _receive(call, path)
    if not call.body.complete:
        _unlink(path)
        raise gcs_error(
            400, "The part ended before its Content-Length.", "invalid", xml_code="IncompleteBody"
        )
    etag = '"' + base64.b64decode(sums.md5).hex() + '"'
    with call.store.lock:
        old = session["parts"].get(str(number))
        session["parts"][str(number)] = {
            "blob": os.path.basename(path),
            "etag": etag,
            "size": sums.size,
            "time": now_rfc3339(),
        }
    if old:
        _unlink(os.path.join(call.store.blob_dir, old["blob"]))
    call.store.save()
    return Reply(200, {"ETag": etag, "x-goog-hash": f"crc32c={sums.crc32c},md5={sums.md5}"}, b"")


def xml_complete(call: Call) -> Reply:
    session = _mpu(call)
    try:
        root = ElementTree.fromstring(call.body.read())
    except ElementTree.ParseError as e:
        raise gcs_error(400, f"Malformed XML: {e}", "invalid", xml_code="MalformedXML") from e
    listed = [
        (int(p.findtext("PartNumber") or 0), (p.findtext("ETag") or "").strip())
        for p in root.iter()
        if p.tag.rsplit("}", 1)[-1] == "Part"
    ]
    if not listed or [n for n, _ in listed] != sorted({n for n, _ in listed}):
        raise gcs_error(
            400, "The parts must be listed in ascending order.", "invalid", xml_code="InvalidPartOrder"
        )
    parts = []
    for i, (number, etag) in enumerate(listed):
        part = session["parts"].get(str(number))
        if part is None or part["etag"].strip('"') != etag.strip('"'):
            raise gcs_error(
                400, f"Part {number} was not uploaded or its ETag differs.", "invalid", xml_code="InvalidPart"
            )
        if i < len(listed) - 1 and part["size"] < MIN_XML_PART:
            raise gcs_error(
                400,
                f"Part {number} is smaller than 5 MiB and not the last.",
                "invalid",
                xml_code="EntityTooSmall",
            )
        parts.append(part)
    path = call.store.new_blob_path()
    sums = Checksums()
    with open(path, "wb") as out:
        for part in parts:
            with open(os.path.join(call.store.blob_dir, part["blob"]), "rb") as f:
                while block := f.read(MIB):
                    out.write(block)
                    sums.update(block)
    resource = _resource(call.object_name, session["meta"], sums)
    resource.pop("md5Hash")  # as for composite objects: a CRC32C only
    obj = _commit(call, resource, path)
    for part in session["parts"].values():
        _unlink(os.path.join(call.store.blob_dir, part["blob"]))
    call.store.end_session(session["id"], drop_file=False)
    return _xml(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"{call.base_url()}/{call.bucket_name}/{quote(call.object_name)}"),
            ("Bucket", call.bucket_name),
            ("Key", call.object_name),
            ("ETag", f'"{obj["etag"]}"'),
        ],
    )


def xml_abort(call: Call) -> Reply:
    session = _mpu(call)
    for part in session["parts"].values():
        _unlink(os.path.join(call.store.blob_dir, part["blob"]))
    call.store.end_session(session["id"], drop_file=False)
    return Reply(204, {}, b"")


def xml_list_parts(call: Call) -> Reply:
    session = _mpu(call)
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><LastModified>{p['time']}</LastModified><ETag>{escape(p['etag'])}</ETag><Size>{p['size']}</Size></Part>"
        for n, p in sorted(session["parts"].items(), key=lambda kv: int(kv[0]))
    )
    head = f"<Bucket>{escape(call.bucket_name)}</Bucket><Key>{escape(call.object_name)}</Key><UploadId>{session['id']}</UploadId><IsTruncated>false</IsTruncated>"
    text = f"<?xml version='1.0' encoding='UTF-8'?><ListPartsResult xmlns='{_S3_NS}'>{head}{parts}</ListPartsResult>"
    return Reply(200, {"Content-Type": "application/xml; charset=UTF-8"}, text.encode())
