"""`sdcluster demo` as a user runs it: a real subprocess, end to end on the embedded emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sdcluster")
    workdir = tmp_path / "demo"
    out = subprocess.run(
        [str(exe), "demo", "--dir", str(workdir)], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    order = [
        text.index(f"$ sdcluster {step}")
        for step in ("init", "apply --auto-approve", "upload-model", "generate", "destroy --auto-approve")
    ]
    assert order == sorted(order)
    # A new project: apply's plan reads what it can, apply enables the five APIs first.
    assert "the container.googleapis.com API is not enabled yet; apply enables it first" in text
    assert "Apply complete! Resources: 21 added" in text
    # apply on an empty model path finishes and says what to do; upload-model waits until served.
    note = text.index("Note: Deployment stable-diffusion is waiting for a model")
    assert text.index("Apply complete!") < note < text.index("$ sdcluster upload-model")
    assert "upload one: sdcluster upload-model ./stable_diffusion_model" in text[note:]
    assert "TF Serving serves version 1 of stable-diffusion at http://" in text
    assert "Destroy complete!" in text and "Kept: storage.bucket.demo-proj-bucket" in text
    images = sorted((workdir / "images").glob("*.png"))
    assert len(images) == 1 and "synthetic" in text
    with Image.open(images[0]) as img:
        assert img.size == (512, 512) and img.mode == "RGB"
    state = (workdir / ".sdcluster" / "state.json").read_text()
    # Destroyed, but for the kept bucket (it stays in the state, so destroy --delete-bucket can go on).
    assert list(json.loads(state)["resources"]) == ["storage.bucket.demo-proj-bucket"]
    assert "emulator:" not in state  # no token persisted
    assert "emulator:" not in text  # no token printed
