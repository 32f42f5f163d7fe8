"""`sdcluster emulator serve --project A --project B`: several projects, each answering the official
clients as a project of its own (so tests and users' CI can emulate more than one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

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
        clients = ClientFactory(user=OWNER, emulator=line.split("=", 1)[1])
        numbers = set()
        for project in ("demo-proj", "prod-proj"):  # each a project of its own, the owner's to use
            clients.storage(project).create_bucket(f"{project}-models", location="us-central1")
            numbers.add(clients.storage(project).get_bucket(f"{project}-models").project_number)
        assert len(numbers) == 2
        with pytest.raises(gexc.Forbidden):  # a project it was not given does not exist
            clients.storage("other-proj").create_bucket("other-proj-models", location="us-central1")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
