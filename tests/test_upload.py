"""``upload_model`` against the emulator's Cloud Storage, through the official google-cloud-storage client.

Each test builds a SavedModel-shaped directory (saved_model.pb, a variables index and several data
shards, assets) and checks what a user would see in the bucket and in the result: files go to a
staging area, then the version is published by server-side copies, saved_model.pb last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from sdcluster.config import Config
from sdcluster.errors import NotFound, UsageError
from sdcluster.gcp import transfer
from sdcluster.gcp.upload import UploadProgress, clean_staging, crc32c_b64, summarize, upload_model
from sdcluster.ui.render import upload_progress_line

from .helpers import factory

PROJECT = "demo-proj"
BUCKET = f"{PROJECT}-bucket"
BASE = f"gs://{BUCKET}/stable_diffusion_model"
SHARDS = 4
SHARD_BYTES = 700_000
MIB = 1024 * 1024


def make_saved_model(root: Path) -> dict[str, int]:
    """A SavedModel-shaped directory of ~3 MB; returns relative name -> size."""
    files = {
        "saved_model.pb": os.urandom(120_000),
        "fingerprint.pb": os.urandom(60),
        "variables/variables.index": os.urandom(9_000),
        "assets/vocab.txt": b"a\nphoto\nof\ncat\n",
        **{
            f"variables/variables.data-{i:05d}-of-{SHARDS:05d}": os.urandom(SHARD_BYTES + i)
            for i in range(SHARDS)
        },
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {name: len(data) for name, data in files.items()}


@pytest.fixture
def setup(make_emu: Any) -> tuple[Any, Config, Any]:
    # A little latency per request, as over a network: uploads then overlap visibly.
    emu = make_emu(latency_ms=30)
    clients = factory(emu)
    clients.storage(PROJECT).create_bucket(BUCKET, location="us-central1")
    cfg = Config.build(project=PROJECT, user=emu.world.knobs.owner)
    return emu, cfg, clients


def objects(factory: Any, prefix: str) -> dict[str, int]:
    blobs = factory.storage(PROJECT).list_blobs(BUCKET, prefix=prefix)
    return {b.name.removeprefix(prefix): b.size for b in blobs}


def uploads(emu: Any) -> int:
    """Object writes the emulator answered (a resumable upload's chunks are PUTs after one POST)."""
    return sum(e.method.startswith("POST /upload/") and e.code == "OK" for e in emu.log.entries())


def test_upload_sends_every_file_in_parallel_to_version_1(setup: Any, tmp_path: Path) -> None:
    emu, cfg, factory = setup
    sizes = make_saved_model(tmp_path / "model")
    events: list[UploadProgress] = []

    result = upload_model(cfg, tmp_path / "model", factory=factory, progress=events.append)

    assert result.version == 1
    assert result.destination == f"{BASE}/1/"
    assert result.message == f"published version 1 at {BASE}/1/"
    assert objects(factory, "stable_diffusion_model/1/") == sizes
    assert objects(factory, "stable_diffusion_model/_staging/") == {}  # cleaned up after publishing
    assert sorted(result.uploaded) == sorted(sizes) and result.skipped == ()
    assert result.bytes_sent == sum(sizes.values())
    assert uploads(emu) == len(sizes)
    assert result.workers > 1  # several upload threads each carried files
    # Progress: starts by checking, publishes, ends with everything done.
    assert events[0].phase == "checking" and events[-1].phase == "done"
    assert [e.phase for e in events].index("publishing") > [e.phase for e in events].index("uploading")
    assert events[-1].bytes_done == events[-1].bytes_total == sum(sizes.values())
    done = [e.bytes_done for e in events]
    assert done == sorted(done)  # never goes backwards


def test_a_rerun_skips_every_file_and_sends_nothing(setup: Any, tmp_path: Path) -> None:
    emu, cfg, factory = setup
    sizes = make_saved_model(tmp_path / "model")
    upload_model(cfg, tmp_path / "model", factory=factory)
    writes = len(emu.log.mutating())

    events: list[UploadProgress] = []
    again = upload_model(cfg, tmp_path / "model", factory=factory, progress=events.append)

    # What upload-model prints last: nothing was sent, so no "done: 6.7/6.7 MiB (100%) at ...".
    assert upload_progress_line(events[-1]) == f"unchanged: {len(sizes)} file(s), 0 B sent"
    assert again.version == 1  # the highest version in the bucket holds this very model
    assert not again.published and "already holds this model" in again.message
    assert again.uploaded == () and sorted(again.skipped) == sorted(sizes)
    assert again.bytes_sent == 0
    assert len(emu.log.mutating()) == writes  # zero mutating calls


def test_a_changed_model_is_the_next_version_and_only_its_changed_file_is_sent(
    setup: Any, tmp_path: Path
) -> None:
    emu, cfg, factory = setup
    sizes = make_saved_model(tmp_path / "model")
    upload_model(cfg, tmp_path / "model", factory=factory)
    shard = tmp_path / "model" / "variables" / f"variables.data-00001-of-{SHARDS:05d}"
    # Same size, different bytes: only the checksum tells them apart.
    shard.write_bytes(os.urandom(shard.stat().st_size))
    before = uploads(emu)

    result = upload_model(cfg, tmp_path / "model", factory=factory)

    # TF Serving does not reload a version it has loaded: the new model is version 2, its other
    # files copied from version 1 inside the bucket.
    assert (result.version, result.serving_version) == (2, 2)
    assert result.uploaded == (f"variables/variables.data-00001-of-{SHARDS:05d}",)
    assert result.bytes_sent == shard.stat().st_size
    assert uploads(emu) == before + 1
    assert objects(factory, "stable_diffusion_model/2/") == sizes
    blob = factory.storage(PROJECT).bucket(BUCKET).get_blob(f"stable_diffusion_model/2/{result.uploaded[0]}")
    assert blob.crc32c == crc32c_b64(shard)
    with pytest.raises(UsageError, match="version 1 already holds another model") as err:
        upload_model(cfg, tmp_path / "model", version=1, factory=factory)
    assert "--version 3" in err.value.hint


def test_an_interrupted_upload_resumes_from_its_staging_area(setup: Any, tmp_path: Path) -> None:
    _emu, cfg, factory = setup
    sizes = make_saved_model(tmp_path / "model")
    bucket = factory.storage(PROJECT).bucket(BUCKET)
    done = ["variables/variables.data-00000-of-00004", "variables/variables.data-00001-of-00004"]
    for name in done:  # what a first run sent before it was stopped
        bucket.blob(f"stable_diffusion_model/_staging/1/{name}").upload_from_filename(
            tmp_path / "model" / name
        )

    result = upload_model(cfg, tmp_path / "model", factory=factory)

    assert result.version == 1 and set(result.skipped) == set(done)
    assert result.bytes_sent == sum(sizes.values()) - sum(sizes[n] for n in done)
    assert objects(factory, "stable_diffusion_model/1/") == sizes
    assert objects(factory, "stable_diffusion_model/_staging/") == {}


def test_an_explicit_version_goes_to_its_directory_and_the_highest_is_reused(
    setup: Any, tmp_path: Path
) -> None:
    _emu, cfg, factory = setup
    sizes = make_saved_model(tmp_path / "model")
    upload_model(cfg, tmp_path / "model", factory=factory)

    v3 = upload_model(cfg, tmp_path / "model", version=3, factory=factory)
    assert v3.destination == f"{BASE}/3/"
    assert objects(factory, "stable_diffusion_model/3/") == sizes
    assert upload_model(cfg, tmp_path / "model", factory=factory).version == 3

    v2 = upload_model(cfg, tmp_path / "model", version=2, factory=factory)
    assert v2.serving_version == 3  # TF Serving serves the highest version, and the message says so
    assert "TF Serving serves the highest version, 3" in v2.message


def test_objects_not_in_the_directory_are_reported_and_kept(setup: Any, tmp_path: Path) -> None:
    _emu, cfg, factory = setup
    make_saved_model(tmp_path / "model")
    bucket = factory.storage(PROJECT).bucket(BUCKET)
    bucket.blob("stable_diffusion_model/1/variables/old.data").upload_from_string(b"old")

    result = upload_model(cfg, tmp_path / "model", factory=factory)

    assert result.stale == ("variables/old.data",)
    assert bucket.get_blob("stable_diffusion_model/1/variables/old.data") is not None


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        (["variables/variables.index"], "missing saved_model.pb"),
        (["saved_model.pb"], "missing variables/"),
        ([], "missing saved_model.pb and variables/"),
    ],
)
def test_a_directory_that_is_not_a_saved_model_is_refused(
    setup: Any, tmp_path: Path, present: list[str], missing: str
) -> None:
    emu, cfg, factory = setup
    for name in present:
        (tmp_path / "dir" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dir" / name).write_bytes(b"x")
    (tmp_path / "dir").mkdir(exist_ok=True)

    with pytest.raises(UsageError, match=f"is not a SavedModel: {missing}$") as err:
        upload_model(cfg, tmp_path / "dir", factory=factory)
    assert "saved_model.save" in err.value.hint
    assert uploads(emu) == 0


@pytest.mark.parametrize("version", [0, -1, True, "2"])
def test_a_version_must_be_a_positive_integer(setup: Any, tmp_path: Path, version: Any) -> None:
    _emu, cfg, factory = setup
    make_saved_model(tmp_path / "model")
    with pytest.raises(UsageError, match="model version must be a positive integer"):
        upload_model(cfg, tmp_path / "model", version=version, factory=factory)


def test_a_missing_bucket_says_how_to_create_it(make_emu: Any, tmp_path: Path) -> None:
    emu = make_emu()
    cfg = Config.build(project=PROJECT, user=emu.world.knobs.owner)
    make_saved_model(tmp_path / "model")
    with pytest.raises(NotFound, match=f"bucket {BUCKET} does not exist") as err:
        upload_model(cfg, tmp_path / "model", factory=factory(emu))
    assert "sdcluster apply" in err.value.hint


def test_transient_failures_are_retried_and_the_objects_are_intact(
    make_emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sdcluster.retry.BACKOFF_SCALE", 0.05)  # retry after ~50 ms, not ~1 s
    emu = make_emu(seed=3)
    clients = factory(emu)
    clients.storage(PROJECT).create_bucket(BUCKET, location="us-central1")
    cfg = Config.build(project=PROJECT, user=emu.world.knobs.owner)
    make_saved_model(tmp_path / "model")
    emu.world.knobs.fault_rate = 0.25  # one request in four answers 503

    result = upload_model(cfg, tmp_path / "model", factory=clients)

    emu.world.knobs.fault_rate = 0.0
    assert any(e.code == "UNAVAILABLE" for e in emu.log.entries())
    bucket = clients.storage(PROJECT).bucket(BUCKET)
    for name in result.uploaded:  # a retried chunk was re-read from the right offset
        blob = bucket.get_blob(f"stable_diffusion_model/1/{name}")
        assert blob.crc32c == crc32c_b64(tmp_path / "model" / name)


# ---- the transfer layer: parts, resume, lost answers ------------------------------------------------


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in its own directory: the session journal goes next to the (default) local state."""
    monkeypatch.chdir(tmp_path)


def big_model(root: Path, files: int = 4, size: int = 2 * MIB) -> int:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(os.urandom(100_000))
    for i in range(files):
        (root / "variables" / f"variables.data-{i:05d}-of-{files:05d}").write_bytes(os.urandom(size))
    return 100_000 + files * size


def upload_bytes_received(emu: Any, since: int = 0) -> int:
    return sum(e.bytes_in for e in emu.log.entries()[since:] if e.method.startswith("PUT /upload/"))


def a_file_in_six_parts(
    setup: tuple[Any, Config, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Config, Any]:
    """A model at tmp_path/model whose 5 MiB file goes up in six parts of 1 MiB (``setup``'s world)."""
    monkeypatch.setattr("sdcluster.gcp.transfer.PART_SIZE", 1 * MIB)
    big_model(tmp_path / "model", files=1, size=5 * MIB + 123)
    return setup


def test_a_large_file_goes_up_in_parts_composed_into_one_object(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, cfg, clients = a_file_in_six_parts(setup, tmp_path, monkeypatch)
    result = upload_model(cfg, tmp_path / "model", factory=clients)

    bucket = clients.storage(PROJECT).bucket(BUCKET)
    name = "variables/variables.data-00000-of-00001"
    blob = bucket.get_blob(f"stable_diffusion_model/1/{name}")
    assert blob.component_count == 6 and blob.crc32c == crc32c_b64(tmp_path / "model" / name)
    assert [b.name for b in clients.storage(PROJECT).list_blobs(BUCKET, prefix=".sdcluster-upload/")] == []
    composes = [e for e in emu.log.entries() if e.method.endswith("/compose")]
    assert len(composes) == 1 and result.bytes_sent == 5 * MIB + 123 + 100_000


def test_a_caller_that_cleans_later_gets_the_parts_deleted_with_the_staging_area(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What upload-model does when it waits for TF Serving: the staging area goes during the load.
    emu, cfg, clients = a_file_in_six_parts(setup, tmp_path, monkeypatch)
    result = upload_model(cfg, tmp_path / "model", factory=clients, clean=False)
    assert not any(e.method.startswith("DELETE") for e in emu.log.entries())  # none on the way
    assert len(objects(clients, ".sdcluster-upload/")) == 6
    clean_staging(cfg, result.version, factory=clients)

    assert objects(clients, ".sdcluster-upload/") == {}
    assert objects(clients, "stable_diffusion_model/_staging/") == {}
    assert len(objects(clients, "stable_diffusion_model/1/")) == 2


@dataclass(frozen=True)
class _File:
    name: str
    size: int
    path: Path = Path("/dev/null")


def _bench_like() -> list[_File]:
    """16 equal shards and two small files: largest first on 8 streams, the small ones run alone."""
    shard = (160 * MIB - 2 * MIB - 64 * 1024) // 16
    shards = [_File(f"variables/variables.data-{i:05d}-of-00016", shard) for i in range(16)]
    return [_File("saved_model.pb", 2 * MIB), _File("variables/variables.index", 64 * 1024), *shards]


def _by_file(lanes: list[list[transfer.Part]]) -> dict[str, list[transfer.Part]]:
    out: dict[str, list[transfer.Part]] = {}
    for lane in lanes:
        for part in lane:
            out.setdefault(part.file.name, []).append(part)
    return {name: sorted(parts, key=lambda p: p.offset) for name, parts in out.items()}


@pytest.mark.parametrize(
    "files",
    [
        _bench_like(),
        [_File("variables/variables.data-00000-of-00001", 4096 * MIB), _File("saved_model.pb", 3 * MIB)],
        [_File("big", 512 * MIB), *(_File(f"f{i:02d}", 1024 * MIB // 20) for i in range(20)), _File("e", 0)],
    ],
    ids=["16 shards and 2 small files", "one 4 GiB file", "512 MiB and 20 files"],
)
def test_lanes_carry_equal_bytes_and_cut_at_most_one_file_per_lane(files: list[_File]) -> None:
    total = sum(f.size for f in files)
    lanes = transfer.lanes(files, "m/_staging/1/", 8)

    assert len(lanes) == 8
    # Every stream sends the same bytes, to within the 256 KiB units the cuts fall on.
    for lane in lanes:
        assert abs(sum(p.size for p in lane) - total / 8) <= 256 * 1024 + 8
    # Largest first without lanes: some stream sends a small file after everyone else is done.
    greedy = [0] * 8
    for part in transfer.split(files, "m/_staging/1/"):
        greedy[greedy.index(min(greedy))] += part.size
    if files == _bench_like():
        assert max(greedy) - total / 8 > 1.5 * MIB
    # Each file is covered once, in order; a cut adds at most one part per lane end.
    parts = _by_file(lanes)
    assert set(parts) == {f.name for f in files}
    for f in files:
        ps = parts[f.name]
        assert ps[0].offset == 0 and sum(p.size for p in ps) == f.size
        assert all(a.offset + a.size == b.offset for a, b in pairwise(ps))
        assert [p.index for p in ps] == list(range(len(ps))) and {p.count for p in ps} == {len(ps)}
        assert len(ps) <= transfer.MAX_PARTS
        assert all(p.offset % (256 * 1024) == 0 for p in ps)
    assert sum(map(len, lanes)) <= len(transfer.split(files, "m/_staging/1/")) + 7


def test_a_resumed_upload_cuts_its_lanes_where_the_interrupted_one_did() -> None:
    files = _bench_like()
    first = _by_file(transfer.lanes(files, "p/", 8))
    left = [f for f in files if f.name not in ("saved_model.pb", "variables/variables.data-00003-of-00016")]

    again = _by_file(transfer.lanes(left, "p/", 8, layout=files))
    fresh = _by_file(transfer.lanes(left, "p/", 8))

    assert again == {name: ps for name, ps in first.items() if name in {f.name for f in left}}
    assert fresh != again  # without the layout the cuts move (and journaled sessions would not match)


def test_a_small_upload_keeps_one_part_per_file_largest_first() -> None:
    files = [_File("saved_model.pb", 100_000), *(_File(f"v{i}", 2 * MIB) for i in range(4))]

    lanes = transfer.lanes(files, "p/", 8)

    assert lanes == [[p] for p in transfer.split(files, "p/")] and len(lanes) == 5


def test_lanes_cut_files_into_parts_composed_intact(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, cfg, clients = setup
    monkeypatch.setattr("sdcluster.gcp.transfer.MIN_LANE", 256 * 1024)
    total = big_model(tmp_path / "model")  # 4 x 2 MiB + 100 kB: 8 lanes of about 1 MiB

    result = upload_model(cfg, tmp_path / "model", factory=clients)

    bucket = clients.storage(PROJECT).bucket(BUCKET)
    cut = 0
    for name in result.uploaded:
        blob = bucket.get_blob(f"stable_diffusion_model/1/{name}")
        assert (
            blob.crc32c == crc32c_b64(tmp_path / "model" / name)
            and blob.size == (tmp_path / "model" / name).stat().st_size
        )
        cut += (blob.component_count or 1) > 1
    composes = [e for e in emu.log.entries() if e.method.endswith("/compose")]
    assert cut == len(composes) >= 3  # the 2 MiB files straddle lanes of about 1 MiB
    assert objects(clients, ".sdcluster-upload/") == {}
    assert result.bytes_sent == total
    assert result.workers == 8


@pytest.mark.parametrize(
    ("how", "part_size", "min_lane", "workers", "cut"),
    [
        ("a part per file", 32 * MIB, 4 * MIB, 8, 5),  # 5 files, each one stream
        ("lanes", 32 * MIB, 256 * 1024, 8, 8),  # 8 lanes of ~1 MiB: files cut across two lanes
        # One 8 MiB file in 8 parts on 2 streams: at the interrupt some parts are finished and the
        # file not yet composed (the rerun must not send those parts again).
        ("finished parts", 1 * MIB, 4 * MIB, 2, 2),
    ],
)
def test_an_interrupted_upload_resumes_and_sends_only_what_is_missing(
    make_emu: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    part_size: int,
    min_lane: int,
    workers: int,
    cut: int,
) -> None:
    monkeypatch.setattr("sdcluster.gcp.upload.PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr("sdcluster.gcp.transfer.PART_SIZE", part_size)
    monkeypatch.setattr("sdcluster.gcp.transfer.MIN_LANE", min_lane)
    emu = make_emu(storage_mib_s=2)  # 2 MiB/s per connection: the upload takes a while
    clients = factory(emu)
    clients.storage(PROJECT).create_bucket(BUCKET, location="us-central1")
    cfg = Config.build(project=PROJECT, user=emu.world.knobs.owner)
    total = big_model(
        tmp_path / "model", **({"files": 1, "size": 8 * MIB} if how == "finished parts" else {})
    )

    class Interrupted(Exception):
        pass

    def halfway(p: UploadProgress) -> None:
        if p.bytes_done >= total // 2:
            raise Interrupted  # a dropped connection in the middle of every stream

    with pytest.raises(Interrupted):
        upload_model(cfg, tmp_path / "model", factory=clients, progress=halfway, max_workers=workers)
    first = upload_bytes_received(emu)
    assert first < total  # it really stopped halfway
    assert list((tmp_path / ".sdcluster" / "uploads").glob("*.json"))  # the sessions were kept
    if how == "finished parts":  # parts were finished, and their file not composed
        assert not any(e.method.endswith("/compose") for e in emu.log.entries())
        assert len(objects(clients, ".sdcluster-upload/")) >= 2

    result = upload_model(cfg, tmp_path / "model", factory=clients, max_workers=workers)

    assert result.bytes_sent < total - first + cut * 256 * 1024
    # Over both runs the emulator received the model once, plus under a 256 KiB unit per cut stream.
    assert total <= upload_bytes_received(emu) < total + cut * 256 * 1024
    assert not list((tmp_path / ".sdcluster" / "uploads").glob("*.json"))  # nothing left to resume
    bucket = clients.storage(PROJECT).bucket(BUCKET)
    for name in result.uploaded:
        assert bucket.get_blob(f"stable_diffusion_model/1/{name}").crc32c == crc32c_b64(
            tmp_path / "model" / name
        )


def test_a_cut_final_answer_and_a_gone_session_cost_no_whole_upload(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sdcluster.retry.BACKOFF_SCALE", 0.01)
    emu, cfg, clients = setup
    total = big_model(tmp_path / "model")
    # The largest file's final answer is cut after the object was made ("Unterminated string ..."),
    # and the next session is gone (410) at its first byte.
    emu.add_fault(method="^PUT /upload/", after=True, lose="cut")
    emu.add_fault(method="^PUT /upload/", http_status=410, code="NOT_FOUND")

    result = upload_model(cfg, tmp_path / "model", factory=clients)

    assert sum(e.response_lost for e in emu.log.entries()) == 1
    assert sum(e.code == "NOT_FOUND" and e.method.startswith("PUT /upload/") for e in emu.log.entries()) == 1
    # The cut answer is recovered by asking the session (nothing sent again); the 410 restarts one part.
    assert total < result.bytes_sent <= total + 2 * MIB
    bucket = clients.storage(PROJECT).bucket(BUCKET)
    for name in result.uploaded:
        assert bucket.get_blob(f"stable_diffusion_model/1/{name}").crc32c == crc32c_b64(
            tmp_path / "model" / name
        )
    summary = summarize(result)
    assert (summary["files_uploaded"], summary["files_skipped"], summary["bytes_sent"]) == (
        5,
        0,
        result.bytes_sent,
    )
    assert summary["seconds"] > 0


def test_verbose_upload_model_prints_a_line_per_file_and_a_rerun_says_each_is_not_sent(
    setup: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sdcluster.ui.cli import app

    emu, cfg, _ = setup
    sizes = make_saved_model(tmp_path / "model")
    (tmp_path / "sdcluster.toml").write_text(
        f'project = "{PROJECT}"\nuser = "{cfg.user}"\n[state]\npath = "{tmp_path / "state.json"}"\n'
    )

    def run(*flags: str) -> str:
        args = ["--emulator", emu.address, "--config", str(tmp_path / "sdcluster.toml"), "upload-model"]
        result = CliRunner().invoke(app, [*args, str(tmp_path / "model"), "--no-wait", *flags])
        assert result.exit_code == 0, result.output
        return str(result.output)

    quiet = run()
    assert not any(f"{name}: sent" in quiet for name in sizes)
    loud = run("-v")  # nothing changed: every file is reported as not sent
    assert all(f"{name}: " in loud and "already in version 1: not sent" in loud for name in sizes)
    shard = tmp_path / "model" / "variables" / "variables.data-00000-of-00004"
    shard.write_bytes(os.urandom(SHARD_BYTES))
    changed = run("--verbose")
    lines = [line.strip() for line in changed.splitlines()]
    sent = [line for line in lines if ": sent " in line]
    assert len(sent) == 1 and sent[0].startswith("variables/variables.data-00000-of-00004: sent 683.6 KiB")
    assert "files, " in sent[0]  # with the overall count and percentage
    copied = [line for line in lines if "copied, not sent" in line]
    assert len(copied) == len(sizes) - 1  # version 2's other files come from version 1, in the bucket
