"""Zero to serving at 1:20 scale (issue 19, row b): from an empty project (APIs on) to TF Serving
answering with version 1 of the model, three ways, each against its own lower bound:

1. one ``apply`` with ``serving.model_dir``: the upload runs while IAM propagates and GKE creates
   the cluster; bound = max(IAM propagation + cluster operation, upload) + max(rollout, IAM
   propagation of the KSA's bucket grant) + model load: that grant can only be made once the
   cluster exists (GKE creates the project's Workload Identity pool with it) and, like every allow
   policy change, takes effect after IAM's propagation (cloud.google.com/iam/docs/
   access-change-propagation: typically 2 minutes), which TF Serving's first read of the model
   waits for;
2. ``apply`` then ``upload_model`` (what a user did before): bound = IAM propagation + cluster
   operation + max(rollout + upload, propagation of the grant) + model load;
3. the tutorial's way (``bench/tutorial_way.py``, the model copied one file at a time before the
   Deployment is created): bound = its sleep + 3 GKE operations + one-stream upload + rollout +
   model load.

    python bench/serve.py [--runs 1]

The emulator runs in its own process with ``bench/run.py``'s ``APPLY_KNOBS`` (durations 1:20),
every Cloud Storage connection capped (``storage_mib_s``) and a model load time; an upload's bound
is its size / (streams x cap). sdcluster's poll intervals are scaled 1:20 too
(``retry.BACKOFF_SCALE``). Prints the rows and writes them into bench/RESULTS.md ("Zero to serving").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from run import APPLY_KNOBS, EXISTING_PROJECT, FAST_KNOBS, PROJECT, SCALE, TUTORIAL_SLEEP_S, USER
from tutorial_way import run_tutorial

import sdcluster
from helpers import MIB, KnobsProcess, model_dir, replace_section, section_head
from sdcluster import retry
from sdcluster.gcp.upload import MAX_WORKERS, saved_model_files

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "## Zero to serving"
MODEL_MIB, MODEL_FILES = 160, 18  # 16 shards of ~10 MiB: two rounds of 8 streams
CAP_MIB_S = 4.0  # per connection: 8 streams x 4 = 32 MiB/s, 5 s for 160 MiB (100 s at 1:20)
KNOBS: dict[str, Any] = {
    **APPLY_KNOBS,
    **EXISTING_PROJECT,
    "storage_mib_s": CAP_MIB_S,
    "model_load_s": 2.0,  # 40 s: TF Serving restores a multi-GB SavedModel
}


def workspace(emulator: str, tmp: str, model: Path | None) -> sdcluster.Workspace:
    serving = {"model_dir": str(model)} if model is not None else {}
    cfg = sdcluster.Config.build(
        project=PROJECT, user=USER, state={"path": f"{tmp}/state.json"}, serving=serving
    )
    return sdcluster.Workspace.open(cfg, emulator=emulator)


def served(ws: sdcluster.Workspace) -> None:
    """Raise unless TF Serving at the endpoint reports version 1 AVAILABLE now."""
    from tutorial_way import _available

    state = ws.backend.read()
    url = state.outputs.get("endpoint") if state else None
    if not url or not _available(str(url)):
        raise RuntimeError(f"not serving at {url!r} when the run returned")


def one_apply(model: Path, knobs: dict[str, Any] = KNOBS) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp, KnobsProcess(**knobs) as emu:
        os.chdir(tmp)  # the upload journal goes next to the state, here
        ws = workspace(emu.address, tmp, model)
        start = time.perf_counter()
        sdcluster.apply(sdcluster.plan(ws))
        took = time.perf_counter() - start
        served(ws)
        return took


def apply_alone() -> float:
    """The reference: the same apply without a model (its Deployment waits for its pods to start)."""
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp, KnobsProcess(**KNOBS) as emu:
        os.chdir(tmp)
        ws = workspace(emu.address, tmp, None)
        start = time.perf_counter()
        sdcluster.apply(sdcluster.plan(ws))
        return time.perf_counter() - start


def apply_then_upload(model: Path) -> tuple[float, float]:
    """(the whole, its ``upload_model`` half)."""
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp, KnobsProcess(**KNOBS) as emu:
        os.chdir(tmp)
        ws = workspace(emu.address, tmp, None)
        start = time.perf_counter()
        sdcluster.apply(sdcluster.plan(ws))
        applied = time.perf_counter()
        sdcluster.upload_model(ws, model)  # returns once TF Serving serves it
        done = time.perf_counter()
        served(ws)
        return done - start, done - applied


def tutorial(model: Path) -> float:
    with KnobsProcess(**KNOBS) as emu:
        start = time.perf_counter()
        run_tutorial(emu.address, project=PROJECT, user=USER, sleep_s=TUTORIAL_SLEEP_S, model=model)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    model = model_dir(MODEL_MIB, MODEL_FILES)
    size = sum(f.size for f in saved_model_files(model)) / MIB
    k = KNOBS
    upload = size / (MAX_WORKERS * CAP_MIB_S)
    one_stream = size / CAP_MIB_S
    cluster = k["iam_propagation_s"] + k["operation_s"]
    serve = k["rollout_s"] + k["model_load_s"]  # the tutorial: its grant propagates during its copy
    grant = k["iam_propagation_s"]  # the KSA's bucket grant, made once the cluster exists
    bounds = {
        "one": max(cluster, upload) + max(k["rollout_s"], grant) + k["model_load_s"],
        "then": cluster + max(k["rollout_s"] + upload, grant) + k["model_load_s"],
        "tutorial": TUTORIAL_SLEEP_S + 3 * k["operation_s"] + one_stream + serve,
        "alone": cluster + max(k["rollout_s"], k["lb_s"]),
    }
    saved, retry.BACKOFF_SCALE = retry.BACKOFF_SCALE, 1 / SCALE
    here = os.getcwd()
    runs: dict[str, list[float]] = {"one": [], "then": [], "tutorial": [], "alone": [], "upload": []}
    try:
        # Warm-up, not measured: the first run in a process pays the lazy imports (Google, Kubernetes).
        one_apply(model, {**FAST_KNOBS, **EXISTING_PROJECT})
        for _ in range(args.runs):  # interleaved: a noisy minute hits all three
            runs["one"].append(one_apply(model))
            whole, half = apply_then_upload(model)
            runs["then"].append(whole)
            runs["upload"].append(half)
            runs["tutorial"].append(tutorial(model))
            runs["alone"].append(apply_alone())
    finally:
        retry.BACKOFF_SCALE = saved
        os.chdir(here)
    took = {name: sorted(values)[len(values) // 2] for name, values in runs.items()}
    n = f"median of {args.runs}" if args.runs > 1 else "1 run"
    terms = {
        "one": f"max(propagation {k['iam_propagation_s']:g} + operation {k['operation_s']:g}, upload {upload:.1f}) "
        f"+ max(rollout {k['rollout_s']:g}, the KSA grant's propagation {grant:g}) + model load {k['model_load_s']:g}",
        "then": f"propagation + operation + max(rollout + upload {upload:.1f}, the grant's propagation) + model load",
        "tutorial": f"sleep {TUTORIAL_SLEEP_S:g} + 3 operations + one-stream upload {one_stream:.1f} + rollout + model load",
        "alone": "propagation + operation + max(rollout, LB): what the model path adds to is measured with it",
    }
    what = {
        "one": "one `apply` with `serving.model_dir`",
        "then": "`apply`, then `upload_model`",
        "tutorial": "the tutorial's way (`bench/tutorial_way.py` with the model)",
        "alone": "(reference, same conditions) `apply` without a model",
    }
    rows = []
    for name in ("one", "then", "tutorial", "alone"):
        ratio = took[name] / bounds[name]
        rows.append(
            f"| b | zero to serving: {what[name]} / its lower bound | {ratio:.3f} | <= 1.05 | "
            f"{'pass' if ratio <= 1.05 else 'FAIL'} | {n}: {took[name]:.2f} s vs {bounds[name]:.2f} s = {terms[name]} |"
        )
    half_bound = upload + k["model_load_s"]
    rows.append(
        f"| b | (where `apply` then `upload_model` spends it) its `upload_model` / upload + model load | "
        f"{took['upload'] / half_bound:.3f} | - | - | {n}: {took['upload']:.2f} s vs {half_bound:.2f} s = "
        f"upload {upload:.1f} (size / (streams x cap)) + model load {k['model_load_s']:g}; the rest is its `apply` |"
    )
    rows.append(
        f"| b | one `apply` with `serving.model_dir` vs `apply` then `upload_model` / vs the tutorial's way | "
        f"{took['then'] / took['one']:.2f}x / {took['tutorial'] / took['one']:.2f}x | - | - | "
        f"{took['one']:.2f} s vs {took['then']:.2f} s / {took['tutorial']:.2f} s |"
    )
    command = f"python bench/serve.py --runs {args.runs}"
    knobs = ", ".join(f"`{key}={value:g}`" for key, value in k.items() if isinstance(value, float | int))
    text = "\n".join(
        [
            SECTION,
            "",
            *section_head(command),
            *rows,
            "",
            f"A {size:.0f} MiB, {MODEL_FILES}-file SavedModel (`bench/helpers.model_dir`), every Cloud Storage "
            f"connection capped at {CAP_MIB_S:g} MiB/s, sdcluster with {MAX_WORKERS} streams; the emulator's "
            f"knobs, all 1:{SCALE}: {knobs}. Each run starts from an empty project whose APIs are on and ends "
            "when TF Serving reports version 1 AVAILABLE (checked after each run). The tutorial copies the "
            "model before it creates the Deployment (so TF Serving never meets a half-copied version) and "
            "sends one file at a time, as `gsutil cp -r` without `-m` does.",
            "",
        ]
    )
    print(text)
    replace_section(RESULTS, SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
