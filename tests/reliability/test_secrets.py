"""Secrets: after a whole ``sdcluster demo`` run, no file it left (config, state, state backup, lock,
model, images) and no line it printed carries a token the emulator minted (``emulator:user:...``,
``emulator:serviceAccount:...#<expiry>``) or a Google access token (``ya29.``).

The crash test does the same for a kubeconfig written with ``sdcluster kubeconfig --out`` (it needs a
running cluster, which the demo tears down).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .runs import SDCLUSTER
from .worldview import token_leaks

MARKERS = (b"emulator:", b"ya29.")


def test_demo_leaves_no_token_in_any_file_or_output_line(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCLUSTER_")}
    run = subprocess.run(
        [SDCLUSTER, "demo", "--dir", str(workdir)], capture_output=True, text=True, timeout=240, env=env
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert token_leaks(run.stdout) == [] and token_leaks(run.stderr) == []
    files = [p for p in workdir.rglob("*") if p.is_file()]
    names = {p.relative_to(workdir).as_posix() for p in files}
    assert {"sdcluster.toml", ".sdcluster/state.json", ".sdcluster/state.json.backup"} <= names, names
    leaks = [p.relative_to(workdir).as_posix() for p in files if any(m in p.read_bytes() for m in MARKERS)]
    assert leaks == []
