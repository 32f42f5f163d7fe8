"""Google's own CLI against the emulated Cloud Storage: ``gcloud storage`` buckets create, cp (with
its parallel composite uploads and sliced downloads), ls, rm, asserted through gcloud's output.

gcloud is on every machine of this project; the test fails (never skips) when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    from sdcluster.emulator import Emulator

    with Emulator(operation_s=0.2) as e:
        yield e


@pytest.fixture
def gcloud(emu: Any, tmp_path: Path) -> Any:
    binary = shutil.which("gcloud")
    assert binary, "gcloud is not installed: install Google Cloud SDK (every machine of this project has it)"
    token = tmp_path / "token"
    token.write_text("emulator:user:demo@example.com")
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"http://{emu.storage_address}/",
        "CLOUDSDK_CORE_PROJECT": "demo-proj",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        # Small thresholds, so a 6 MiB file goes up in parallel composite parts and comes down in slices.
        "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_ENABLED": "True",
        "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_THRESHOLD": "2M",
        "CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_COMPONENT_SIZE": "2M",
        "CLOUDSDK_STORAGE_SLICED_OBJECT_DOWNLOAD_THRESHOLD": "2M",
        "CLOUDSDK_STORAGE_SLICED_OBJECT_DOWNLOAD_COMPONENT_SIZE": "2M",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [binary, "storage", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"gcloud storage {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    return run


def test_gcloud_storage_buckets_cp_ls_rm(emu: Any, gcloud: Any, tmp_path: Path) -> None:
    gcloud("buckets", "create", "gs://gcloud-bucket", "--location", "us-central1")
    buckets = json.loads(gcloud("buckets", "list", "--format=json"))
    assert [b["name"] for b in buckets if b["name"] == "gcloud-bucket"] == ["gcloud-bucket"]
    assert next(b for b in buckets if b["name"] == "gcloud-bucket")["location"] == "US-CENTRAL1"

    small, big = tmp_path / "config.json", tmp_path / "variables.data"
    small.write_bytes(b'{"model": "sd"}')
    big.write_bytes(os.urandom(6 * MIB))
    gcloud("cp", str(small), "gs://gcloud-bucket/model/config.json")
    gcloud("cp", str(big), "gs://gcloud-bucket/model/variables.data")

    listed = json.loads(gcloud("ls", "--json", "gs://gcloud-bucket/model/**"))
    sizes = {item["url"].partition("#")[0]: item["metadata"]["size"] for item in listed}
    assert sizes == {
        "gs://gcloud-bucket/model/config.json": "15",
        "gs://gcloud-bucket/model/variables.data": str(6 * MIB),
    }
    composite = next(i for i in listed if "variables.data" in i["url"])["metadata"]
    assert composite["componentCount"] > 1  # gcloud uploaded parts and composed them
    uploads = [e.method for e in emu.log.entries() if e.service == "storage"]
    assert "POST /storage/v1/b/{bucket}/o/{object}/compose" in uploads

    back = tmp_path / "back.data"
    gcloud("cp", "gs://gcloud-bucket/model/variables.data", str(back))
    assert back.read_bytes() == big.read_bytes()  # gcloud checks the CRC32C of the slices it joined

    gcloud("rm", "gs://gcloud-bucket/model/config.json")
    assert gcloud("ls", "gs://gcloud-bucket/model/").split() == ["gs://gcloud-bucket/model/variables.data"]
