"""``sdcluster demo``: the whole journey on an embedded emulator, with each step's real output.

It starts an in-process emulator with short delays, then runs the real CLI commands against it, in a
fresh working directory: init -> apply (the bucket has no model yet: apply says so) -> upload-model
(publishes version 1 and waits until TF Serving serves it) -> generate -> destroy.
Nothing here fakes a step: each is the same code path a user runs against Google Cloud, only routed
to the emulator (``SDCLUSTER_EMULATOR``). The generated image comes from the emulator's synthetic TF
Serving stand-in (a pattern derived from the prompt's tokens, not a diffusion model).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import SdclusterError

PROJECT = "demo-proj"
USER = "demo@example.com"
PROMPT = "a photo of an astronaut riding a horse on the moon"
# Short, but not zero: the demo shows the real waits (API enabling and IAM propagation, operations,
# rollout, LB). The project is a new one: only the APIs Google enables by default are on.
KNOBS: dict[str, Any] = {
    "service_enable_s": 1.0,
    "operation_s": 2.0,
    "rollout_s": 2.0,
    "lb_s": 1.0,
    "iam_propagation_s": 2.0,
    "sa_propagation_s": 0.5,
    "kubelet_scale": 0.1,  # a 10 s probe period takes 1 s
    "tfserving_scale": 0.5,  # TF Serving polls the bucket every 0.5 s
    "model_load_s": 2.0,  # loading the version is visible
}


class DemoFailed(SdclusterError):
    pass


def make_demo_model(directory: Path, shards: int = 3, shard_bytes: int = 256 * 1024) -> Path:
    """A small SavedModel-shaped directory (random bytes: TF Serving's stand-in never reads it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "saved_model.pb").write_bytes(os.urandom(4096))
    variables = directory / "variables"
    variables.mkdir(exist_ok=True)
    (variables / "variables.index").write_bytes(os.urandom(1024))
    for i in range(shards):
        (variables / f"variables.data-{i:05d}-of-{shards:05d}").write_bytes(os.urandom(shard_bytes))
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "fingerprint.pb").write_bytes(os.urandom(64))
    return directory


@contextlib.contextmanager
def _environment(workdir: Path, emulator: str) -> Iterator[None]:
    old_cwd = Path.cwd()
    old_env = {k: os.environ.get(k) for k in ("SDCLUSTER_EMULATOR", "SDCLUSTER_CONFIG", "SDCLUSTER_STATE")}
    os.chdir(workdir)
    os.environ["SDCLUSTER_EMULATOR"] = emulator
    os.environ.pop("SDCLUSTER_CONFIG", None)
    os.environ.pop("SDCLUSTER_STATE", None)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(
    console: Any, *, step: Callable[[list[str]], Any], keep: bool = False, workdir: Path | None = None
) -> Path:
    """Run the demo, printing as it goes; returns the working directory (config, state, images).

    ``step(args)`` runs one ``sdcluster`` command (the CLI passes its own app, so this module does
    not import the CLI) and returns its exit code.
    """
    from ..emulator import Emulator

    workdir = (workdir or Path(tempfile.mkdtemp(prefix="sdcluster-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    emu = Emulator(project=PROJECT, owner=f"user:{USER}", **KNOBS).start()
    try:
        console.print(
            f"[bold]sdcluster demo[/]: an embedded emulator of Google Cloud is listening on {emu.address}\n"
            f"working directory: {workdir}\n"
        )
        with _environment(workdir, emu.address):
            model = make_demo_model(workdir / "stable_diffusion_model")
            steps = [
                ["init", "--project", PROJECT, "--user", USER],
                ["apply", "--auto-approve"],
                ["upload-model", str(model.relative_to(workdir))],
                ["generate", PROMPT, "--steps", "5", "--out", "images"],
            ]
            if not keep:
                steps.append(["destroy", "--auto-approve"])
            for args in steps:
                _step(console, step, args)
        images = sorted((workdir / "images").glob("*.png"))
        console.print(f"\n[bold green]Demo finished[/] in {time.monotonic() - started:.0f}s.")
        console.print(f"Files: {workdir}  (sdcluster.toml, .sdcluster/state.json, images/)")
        for img in images:
            console.print(f"Image (synthetic, from the emulator's TF Serving stand-in): {img}")
        if keep:
            console.print(
                "\nThe emulator keeps running (Ctrl-C to stop). In another terminal:\n"
                f"  cd {workdir}\n  export SDCLUSTER_EMULATOR={emu.address}\n  sdcluster status"
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        return workdir
    finally:
        emu.stop()


def _step(console: Any, step: Callable[[list[str]], Any], args: list[str]) -> None:
    console.print(f"\n[bold cyan]$ sdcluster {shlex.join(args)}[/]")
    code = step(args)
    if code not in (None, 0):
        raise DemoFailed(f"the demo step `sdcluster {shlex.join(args)}` failed (exit {code})")
