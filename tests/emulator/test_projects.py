"""`sdcluster emulator serve --project A --project B`: several projects, each answering the official
clients as a project of its own (so tests and users' CI can emulate more than one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1

from sdcluster.gcp.clients import ClientFactory

EXE = str(Path(sys.executable).with_name("sdcluster"))
OWNER = "user:demo@example.com"


def test_serve_emulates_every_project_it_is_given(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [EXE, "emulator", "serve", "--project", "demo-proj", "--project", "prod-proj", "--owner", OWNER],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("export SDCLUSTER_EMULATOR="), line
        iam = ClientFactory(user=OWNER, emulator=line.split("=", 1)[1]).iam_admin()
        for project in ("demo-proj", "prod-proj"):
            sa = iam.create_service_account(
                request=iam_admin_v1.CreateServiceAccountRequest(
                    name=f"projects/{project}", account_id="gke-admin"
                )
            )
            assert sa.email == f"gke-admin@{project}.iam.gserviceaccount.com"
        with pytest.raises(gexc.PermissionDenied):  # a project it was not given does not exist
            iam.create_service_account(
                request=iam_admin_v1.CreateServiceAccountRequest(
                    name="projects/other-proj", account_id="gke-admin"
                )
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
