"""``serving.model_dir``: the model version is a resource of the plan (issue 19, point 1). One apply
goes from nothing to a served model, uploading while GKE creates the cluster; a re-plan of the same
directory is unchanged; a changed file publishes a new version."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sdcluster.ui.demo import make_demo_model

from ..helpers import factory
from .test_first_real_apply import BUCKET, PROJECT, cli, endpoint, init, model_status, served

MODEL = f"storage.model_version.{BUCKET}/stable_diffusion_model"


def changes(emu: Any, workdir: Path, *extra: str) -> dict[str, dict[str, Any]]:
    plan = cli(emu, workdir, "plan", "--json", *extra)
    assert plan.exit_code == 0, plan.output
    return {c["address"]: c for c in json.loads(plan.output)["changes"]}


def test_one_apply_uploads_during_cluster_creation_and_serves_then_unchanged_then_new_version(
    make_emu: Any, tmp_path: Path
) -> None:
    # Each storage connection capped so that the upload (about 4 s for a 2.5 MiB shard, past the
    # link's 1 MiB burst) outlasts the work before CreateCluster, inside a cluster operation that
    # outlasts the upload.
    emu = make_emu(operation_s=8.0, storage_mib_s=0.4)
    model = make_demo_model(tmp_path / "model", shards=2, shard_bytes=5 * 1024 * 1024 // 2)
    init(emu, tmp_path, serving={"rollout_timeout_s": 20, "model_dir": "model"})  # relative to the file

    shown = cli(emu, tmp_path, "plan")
    assert shown.exit_code == 0, shown.output
    assert f"# {MODEL} will be created" in shown.output
    assert "# (model version 1: 5.0 MiB in 5 files)" in shown.output

    applied = cli(emu, tmp_path, "apply", "-y", "-v")
    assert applied.exit_code == 0, applied.output
    assert "waiting for a model" not in applied.output
    # --verbose: a line per file sent, with the overall count
    sent = [
        line for line in applied.output.splitlines() if line.startswith(f"{MODEL}: ") and ": sent " in line
    ]
    assert len(sent) == 5, applied.output
    assert any("variables/variables.data-00000-of-00002: sent 2.5 MiB" in line for line in sent)
    assert served(endpoint(tmp_path), 1, within_s=0.5)  # apply returned once version 1 was AVAILABLE

    # The upload ran while GKE created the cluster: between CreateCluster and its operation's end.
    entries = emu.log.entries()
    created = next(e.time for e in entries if e.method == "CreateCluster" and e.code == "OK")
    (op,) = [o for o in emu.world.data["container"]["operations"].values() if o["type"] == "CREATE_CLUSTER"]
    uploads = [
        e.time for e in entries if e.service == "storage" and e.bytes_in > 0 and "_staging/1/" in e.resource
    ]
    assert uploads and any(created < t < op["end"] for t in uploads), (
        created,
        op["end"],
        min(uploads),
        max(uploads),
        len(uploads),
    )

    emu.world.knobs.storage_mib_s = 0.0  # loopback speed from here on

    state = json.loads((tmp_path / "state.json").read_text())
    record = state["resources"][MODEL]
    assert record["id"] == f"gs://{BUCKET}/stable_diffusion_model/1/"
    assert record["attributes"]["version"] == 1
    assert record["attributes"]["files"] == 5
    assert record["attributes"]["digest"].startswith("crc32c-sha256:")

    # The same directory: unchanged, and a re-apply makes no mutating call at all.
    same = changes(emu, tmp_path)[MODEL]
    assert same["action"] == "noop"
    assert "model version 1 unchanged (CRC32C match" in same["reason"]
    emu.log.clear()
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    assert [(e.method, e.resource) for e in emu.log.mutating()] == []

    # One changed file: a new version, published and served.
    shard = model / "variables" / "variables.data-00000-of-00002"
    shard.write_bytes(os.urandom(5 * 1024 * 1024 // 2))
    planned = changes(emu, tmp_path)
    assert planned[MODEL]["action"] == "update"
    assert planned[MODEL]["reason"].startswith("model version 2: 5.0 MiB in 5 files")
    assert "differs from version 1" in planned[MODEL]["reason"]
    # The Deployment itself is unchanged, but what it is to serve is not: apply waits for it.
    deployment = planned["k8s.deployment.default/stable-diffusion"]
    assert deployment["action"] == "update", deployment
    assert "TF Serving is to serve model version 2 (the bucket's newest is version 1)" in deployment["reason"]
    emu.world.knobs.model_load_s = 1.0  # a load that outlasts the publish
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    # apply returned once TF Serving served version 2, as upload-model does, not once it was published
    status = (model_status(endpoint(tmp_path)) or {}).get("model_version_status", [])
    assert {"version": "2", "state": "AVAILABLE"} in [
        {k: v[k] for k in ("version", "state")} for v in status
    ], status
    assert changes(emu, tmp_path)["k8s.deployment.default/stable-diffusion"]["action"] == "noop"
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["resources"][MODEL]["attributes"]["version"] == 2
    assert state["resources"][MODEL]["attributes"]["digest"] != record["attributes"]["digest"]
    # Only the changed file went over the wire; the others were copied inside the bucket.
    names = {
        b.name for b in factory(emu).storage(PROJECT).list_blobs(BUCKET, prefix="stable_diffusion_model/2/")
    }
    assert len(names) == 5

    # Destroy leaves the files to the bucket (kept by default): the plan says so.
    gone = changes(emu, tmp_path, "--destroy")[MODEL]
    assert gone["action"] == "noop"
    assert "left to the bucket" in gone["reason"]
