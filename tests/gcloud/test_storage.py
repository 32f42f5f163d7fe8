"""``gcloud storage`` against the emulator's Cloud Storage, pointed there by the
``CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE`` line of ``sdcluster emulator env``: buckets create and
list, cp both ways (with gcloud's parallel composite uploads and sliced downloads), ls, rm."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .conftest import PROJECT, Gcloud

BUCKET = f"gs://{PROJECT}-gcloud"
MIB = 1024 * 1024
# Small thresholds, so a 6 MiB file goes up in parallel composite parts and comes down in slices.
PARALLEL = {
    "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_ENABLED": "True",
    "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_THRESHOLD": "2M",
    "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_COMPONENT_SIZE": "2M",
    "CLOUDSDK_STORAGE_SLICED_OBJECT_DOWNLOAD_THRESHOLD": "2M",
    "CLOUDSDK_STORAGE_SLICED_OBJECT_DOWNLOAD_COMPONENT_SIZE": "2M",
}


def ls(gcloud: Gcloud, url: str) -> Any:
    """``gcloud storage ls --json`` (ls has its own --json; --format=json is refused there)."""
    return gcloud.run("storage", "ls", "--json", url, tool=str(shutil.which("gcloud"))).json


def test_buckets_create_and_list(gcloud: Gcloud) -> None:
    gcloud("storage", "buckets", "create", BUCKET, "--location", "us-central1")
    buckets = gcloud("storage", "buckets", "list")
    assert next(b for b in buckets if b["name"] == f"{PROJECT}-gcloud")["location"] == "US-CENTRAL1"
    err = gcloud.fails(
        "storage", "buckets", "create", f"gs://{PROJECT}-other", member="user:stranger@example.com"
    )
    assert "403" in err or "does not have storage.buckets.create" in err


def test_cp_ls_and_rm_objects(gcloud: Gcloud, tmp_path: Path) -> None:
    gcloud.env.update(PARALLEL)
    small, big = tmp_path / "config.json", tmp_path / "variables.data"
    small.write_bytes(b'{"model": "sd"}')
    big.write_bytes(os.urandom(6 * MIB))
    gcloud.run("storage", "cp", str(small), f"{BUCKET}/model/config.json")
    gcloud.run("storage", "cp", str(big), f"{BUCKET}/model/variables.data")

    listed = ls(gcloud, f"{BUCKET}/model/**")
    sizes = {item["url"].partition("#")[0]: item["metadata"]["size"] for item in listed}
    assert sizes == {f"{BUCKET}/model/config.json": "15", f"{BUCKET}/model/variables.data": str(6 * MIB)}
    composite = next(i for i in listed if "variables.data" in i["url"])["metadata"]
    assert composite["componentCount"] > 1  # gcloud uploaded parts and composed them
    methods = [e.method for e in gcloud.emu.log.entries() if e.service == "storage"]
    assert "POST /storage/v1/b/{bucket}/o/{object}/compose" in methods

    back = tmp_path / "back.data"
    gcloud.run("storage", "cp", f"{BUCKET}/model/variables.data", str(back))
    assert back.read_bytes() == big.read_bytes()  # gcloud checks the CRC32C of the slices it joined

    gcloud.run("storage", "rm", f"{BUCKET}/model/config.json")
    left = [o["url"].partition("#")[0] for o in ls(gcloud, f"{BUCKET}/model/**")]
    assert left == [f"{BUCKET}/model/variables.data"]
    gcloud.run("storage", "rm", f"{BUCKET}/model/variables.data")
    assert gcloud.run("storage", "ls", f"{BUCKET}/**", ok=False).returncode != 0  # nothing matches
