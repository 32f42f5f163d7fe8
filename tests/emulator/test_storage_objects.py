"""Cloud Storage objects on the emulator: generations and versioning, preconditions, resumable
sessions (308/Range, status after completion, 410, interrupted requests), compose, rewrite/copy,
XML multipart uploads, and faults after the commit, through google-cloud-storage (and its
authorized HTTP session where the client hides GCS's answer).
"""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud.storage import transfer_manager

from ..helpers import factory

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
ALICE = "user:alice@example.com"
KIB = 1024
MIB = 1024 * KIB


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    from sdcluster.emulator import Emulator

    with Emulator(operation_s=0.2) as e:
        yield e


def bucket_of(emu: Any, name: str, versioned: bool = False, member: str = OWNER) -> Any:
    client = factory(emu, member).storage(PROJECT)
    bucket = client.bucket(name)
    bucket.versioning_enabled = versioned
    return client.create_bucket(bucket, location="us-central1")


def session_of(bucket: Any) -> requests.Session:
    return bucket.client._http  # type: ignore[no-any-return]


# ---- generations and versioning ------------------------------------------------------------------


def test_versioned_bucket_keeps_older_generations_listable_and_readable(emu: Any) -> None:
    bucket = bucket_of(emu, "versioned-bucket", versioned=True)
    blob = bucket.blob("state.json")
    blob.upload_from_string(b"v1", if_generation_match=0)
    first = bucket.get_blob("state.json").generation  # type: ignore[union-attr]
    bucket.blob("state.json").upload_from_string(b"v2", if_generation_match=first)
    second = bucket.get_blob("state.json").generation  # type: ignore[union-attr]
    assert second > first

    client = bucket.client
    listed = [(b.name, b.generation) for b in client.list_blobs(bucket, versions=True)]
    assert listed == [("state.json", first), ("state.json", second)]
    assert [b.generation for b in client.list_blobs(bucket)] == [second]
    assert bucket.blob("state.json", generation=first).download_as_bytes() == b"v1"
    old = bucket.get_blob("state.json", generation=first)
    assert old is not None and old.time_deleted is not None  # noncurrent

    bucket.blob("state.json").delete()  # the live one becomes noncurrent too
    assert bucket.get_blob("state.json") is None
    assert len(list(client.list_blobs(bucket, versions=True))) == 2
    bucket.blob("state.json", generation=first).delete()  # one generation, for good
    assert [b.generation for b in client.list_blobs(bucket, versions=True)] == [second]
    with pytest.raises(gexc.NotFound):
        bucket.blob("state.json", generation=first).download_as_bytes()
    with pytest.raises(gexc.Conflict, match="not empty"):  # a noncurrent generation still counts
        bucket.delete()


def test_unversioned_bucket_drops_the_overwritten_generation(emu: Any) -> None:
    bucket = bucket_of(emu, "plain-bucket")
    bucket.blob("o").upload_from_string(b"1")
    first = bucket.get_blob("o").generation  # type: ignore[union-attr]
    bucket.blob("o").upload_from_string(b"2")
    with pytest.raises(gexc.NotFound):
        bucket.blob("o", generation=first).download_as_bytes()
    assert len(list(bucket.client.list_blobs(bucket, versions=True))) == 1


def test_generation_preconditions_hold_for_every_upload_kind(emu: Any) -> None:
    bucket = bucket_of(emu, "precondition-bucket")
    bucket.blob("small").upload_from_string(b"x", if_generation_match=0)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("small").upload_from_string(b"y", if_generation_match=0)
    large = bucket.blob("large")
    large.chunk_size = 256 * KIB  # a resumable upload
    large.upload_from_file(io.BytesIO(b"a" * 600 * KIB), if_generation_match=0)
    again = bucket.blob("large")
    again.chunk_size = 256 * KIB
    with pytest.raises(gexc.PreconditionFailed):  # checked when the session starts
        again.upload_from_file(io.BytesIO(b"b" * 600 * KIB), if_generation_match=0)
    generation = bucket.get_blob("large").generation  # type: ignore[union-attr]
    blob = bucket.get_blob("large")
    assert blob is not None
    blob.metadata = {"k": "v"}
    blob.patch(if_metageneration_match=1)
    with pytest.raises(gexc.PreconditionFailed):
        blob.patch(if_metageneration_match=1)
    assert bucket.get_blob("large").generation == generation  # type: ignore[union-attr]


def test_a_resumable_upload_checks_its_precondition_again_when_it_completes(emu: Any) -> None:
    bucket = bucket_of(emu, "race-bucket")
    url = bucket.blob("lock").create_resumable_upload_session(size=3, if_generation_match=0)
    bucket.blob("lock").upload_from_string(b"won", if_generation_match=0)  # another writer wins
    reply = session_of(bucket).put(url, data=b"mine", headers={"Content-Range": "bytes 0-3/4"})
    assert reply.status_code == 412
    assert bucket.blob("lock").download_as_bytes() == b"won"


# ---- resumable sessions ----------------------------------------------------------------------------


def test_resumable_session_answers_308_with_range_then_the_object(emu: Any) -> None:
    bucket = bucket_of(emu, "resumable-bucket")
    http = session_of(bucket)
    data = os.urandom(768 * KIB)
    url = bucket.blob("r.bin").create_resumable_upload_session(size=len(data))
    status = http.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}"})
    assert status.status_code == 308 and "Range" not in status.headers  # nothing persisted yet
    chunk = http.put(url, data=data[: 256 * KIB], headers={"Content-Range": f"bytes 0-{256 * KIB - 1}/*"})
    assert chunk.status_code == 308 and chunk.headers["Range"] == f"bytes=0-{256 * KIB - 1}"
    # A chunk overlapping what is held is accepted from the persisted offset on.
    rest = http.put(
        url,
        data=data[128 * KIB :],
        headers={"Content-Range": f"bytes {128 * KIB}-{len(data) - 1}/{len(data)}"},
    )
    assert rest.status_code == 200 and rest.json()["size"] == str(len(data))
    again = http.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}"})
    assert again.status_code == 200 and again.json()["generation"] == rest.json()["generation"]
    assert bucket.blob("r.bin").download_as_bytes() == data


def test_cancelled_and_expired_sessions_are_gone(emu: Any) -> None:
    bucket = bucket_of(emu, "gone-bucket")
    http = session_of(bucket)
    url = bucket.blob("c").create_resumable_upload_session(size=10)
    assert http.delete(url).status_code == 499
    late = http.put(url, data=b"0123456789", headers={"Content-Range": "bytes 0-9/10"})
    assert late.status_code == 410 and late.json()["error"]["code"] == 410

    url = bucket.blob("e").create_resumable_upload_session(size=10)
    emu.world.knobs.upload_session_s = 0.0
    try:
        expired = http.put(url, data=b"0123456789", headers={"Content-Range": "bytes 0-9/10"})
    finally:
        emu.world.knobs.upload_session_s = 7 * 24 * 3600.0
    assert expired.status_code == 410
    assert bucket.get_blob("e") is None


def test_an_interrupted_request_keeps_its_whole_256_kib_units(emu: Any) -> None:
    """The connection drops after 700 KiB of a 1 MiB chunk: the session holds 512 KiB, and the
    client sends only the rest."""
    bucket = bucket_of(emu, "interrupted-bucket")
    data = os.urandom(1 * MIB)
    url = bucket.blob("i.bin").create_resumable_upload_session(size=len(data))
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        head = (
            f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {len(data)}\r\nContent-Range: bytes 0-{len(data) - 1}/{len(data)}\r\n\r\n"
        )
        raw.sendall(head.encode() + data[: 700 * KIB])
    http = session_of(bucket)
    status = http.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}"})
    while status.status_code == 308 and status.headers.get("Range") != f"bytes=0-{512 * KIB - 1}":
        status = http.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}"})  # still reading
    assert status.headers["Range"] == f"bytes=0-{512 * KIB - 1}"
    done = http.put(
        url,
        data=data[512 * KIB :],
        headers={"Content-Range": f"bytes {512 * KIB}-{len(data) - 1}/{len(data)}"},
    )
    assert done.status_code == 200
    assert bucket.blob("i.bin").download_as_bytes() == data
    received = [e.bytes_in for e in emu.log.entries() if e.resource.endswith("/objects/i.bin") and e.bytes_in]
    assert received[-1] == len(data) - 512 * KIB


# ---- compose, rewrite, copy, XML multipart ----------------------------------------------------------------


def test_compose_concatenates_up_to_32_sources_into_a_composite(emu: Any) -> None:
    bucket = bucket_of(emu, "compose-bucket")
    for i in range(33):
        bucket.blob(f"part-{i:02d}").upload_from_string(f"{i:02d}".encode())
    parts = [bucket.blob(f"part-{i:02d}") for i in range(32)]
    whole = bucket.blob("whole")
    whole.compose(parts)
    got = bucket.get_blob("whole")
    assert got is not None and got.component_count == 32 and got.md5_hash is None and got.crc32c
    assert got.download_as_bytes() == b"".join(f"{i:02d}".encode() for i in range(32))
    # Its CRC32C is the concatenation's (GCS combines the components' CRC32Cs; nothing is re-read).
    import base64

    import google_crc32c

    joined = b"".join(f"{i:02d}".encode() for i in range(32))
    assert got.crc32c == base64.b64encode(google_crc32c.value(joined).to_bytes(4, "big")).decode()
    with pytest.raises(gexc.BadRequest, match=r"\(33\) exceeds the maximum \(32\)"):
        bucket.blob("too-many").compose([*parts, bucket.blob("part-32")])
    with pytest.raises(gexc.NotFound):
        bucket.blob("missing").compose([parts[0], bucket.blob("no-such-part")])


def test_rewrite_and_copy_keep_the_bytes_and_checksums(emu: Any) -> None:
    source = bucket_of(emu, "rewrite-src")
    target = bucket_of(emu, "rewrite-dst", versioned=True)
    source.blob("model/saved_model.pb").upload_from_string(b"weights", content_type="application/x-protobuf")
    original = source.get_blob("model/saved_model.pb")
    assert original is not None
    token, done, total = target.blob("published/saved_model.pb").rewrite(original)
    assert (token, done, total) == (None, 7, 7)
    copied = source.copy_blob(original, target, "copy.pb")
    for blob in (target.get_blob("published/saved_model.pb"), target.get_blob(copied.name)):
        assert blob is not None and blob.crc32c == original.crc32c and blob.md5_hash == original.md5_hash
        assert blob.content_type == "application/x-protobuf" and blob.download_as_bytes() == b"weights"
    alice = factory(emu, ALICE).storage(PROJECT)
    with pytest.raises(gexc.Forbidden, match=r"storage\.objects\.get"):
        alice.bucket("rewrite-dst").blob("x").rewrite(
            alice.bucket("rewrite-src").blob("model/saved_model.pb")
        )


def test_transfer_manager_chunked_upload_uses_xml_multipart(emu: Any, tmp_path: Path) -> None:
    bucket = bucket_of(emu, "xml-bucket")
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(12 * MIB))
    transfer_manager.upload_chunks_concurrently(
        str(path),
        bucket.blob("big.bin"),
        chunk_size=5 * MIB,
        worker_type=transfer_manager.THREAD,
        max_workers=3,
    )
    got = bucket.get_blob("big.bin")
    assert got is not None and got.size == 12 * MIB and got.download_as_bytes() == path.read_bytes()
    methods = [e.method for e in emu.log.entries() if e.resource.endswith("/objects/big.bin")]
    assert methods.count("PUT /{bucket}/{object}") == 3  # parts 1-3 of 5, 5 and 2 MiB

    url = f"http://{emu.storage_address}/xml-bucket/small.bin"
    http = session_of(bucket)
    start = http.post(url + "?uploads")
    upload_id = start.text.split("<UploadId>")[1].split("</UploadId>")[0]
    etags = [
        http.put(f"{url}?partNumber={n}&uploadId={upload_id}", data=b"x" * KIB).headers["ETag"]
        for n in (1, 2)
    ]
    body = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        for n, etag in zip((1, 2), etags, strict=True)
    )
    done = http.post(f"{url}?uploadId={upload_id}", data=body + "</CompleteMultipartUpload>")
    assert done.status_code == 400 and "<Code>EntityTooSmall</Code>" in done.text
    assert http.delete(f"{url}?uploadId={upload_id}").status_code == 204
    assert "<Code>NoSuchUpload</Code>" in http.get(f"{url}?uploadId={upload_id}").text


# ---- faults after the commit ----------------------------------------------------------------------------


@pytest.mark.parametrize("lose", ["cut", "reset"])
def test_a_lost_response_after_the_commit_leaves_the_write_done(emu: Any, lose: str) -> None:
    bucket = bucket_of(emu, f"lost-{lose}")
    http = session_of(bucket)
    emu.add_fault(method="^POST /upload/", resource=f"lost-{lose}/objects/lock$", after=True, lose=lose)
    url = f"http://{emu.storage_address}/upload/storage/v1/b/lost-{lose}/o"
    with pytest.raises((requests.exceptions.RequestException, ValueError)) as lost:
        http.post(
            url, params={"uploadType": "media", "name": "lock", "ifGenerationMatch": "0"}, data=b"mine"
        ).json()
    if lose == "cut":
        assert isinstance(lost.value, ValueError)  # the truncated JSON: "Unterminated string ..."
    assert bucket.blob("lock").download_as_bytes() == b"mine"  # the write took effect
    entry = next(e for e in emu.log.entries() if e.resource.endswith(f"lost-{lose}/objects/lock"))
    assert (entry.code, entry.response_lost, entry.mutating) == ("OK", True, True)
    retried = http.post(
        url, params={"uploadType": "media", "name": "lock", "ifGenerationMatch": "0"}, data=b"mine"
    )
    assert retried.status_code == 412  # the retry of a conditional write finds its own write


def test_targeted_faults_hit_only_the_next_matching_requests(emu: Any) -> None:
    bucket = bucket_of(emu, "targeted-bucket")
    http = session_of(bucket)
    url = bucket.blob("t").create_resumable_upload_session(size=4)
    emu.add_fault(method="^PUT /upload/", count=2, http_status=410)
    codes = [
        http.put(url, data=b"abcd", headers={"Content-Range": "bytes 0-3/4"}).status_code for _ in range(3)
    ]
    assert codes == [410, 410, 200]
