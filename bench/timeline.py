"""One fresh apply at 1:20 scale, laid out in time: when each change started and ended, and every
request the emulator answered, on one clock. Where the time between the lower bound and the wall
time goes (issue 19, row b; figure 4 of bench/run.py).

    python bench/timeline.py [--model] [--requests]

Same conditions as ``bench/serve.py``: the emulator in its own process with its ``KNOBS`` (storage
capped, a model load time), sdcluster's poll intervals scaled 1:20. ``--model`` sets
``serving.model_dir`` (serve.py's model); ``--requests`` lists every request, not only the mutating
ones and the first read of each kind. Prints; writes nothing.
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
from run import EXISTING_PROJECT, FAST_KNOBS, SCALE
from serve import KNOBS, MODEL_FILES, MODEL_MIB, served, workspace

import sdcluster
from helpers import KnobsProcess, model_dir
from sdcluster import retry
from sdcluster.gcp.clients import control_call


def timeline(
    model: Path | None, knobs: dict[str, Any] = KNOBS
) -> tuple[float, float, list[tuple[float, str, str]], list[dict[str, Any]]]:
    """(plan seconds, wall seconds, events (t, kind, address), emulator log), t from plan start."""
    events: list[tuple[float, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_timeline_") as tmp, KnobsProcess(**knobs) as emu:
        os.chdir(tmp)
        ws = workspace(emu.address, tmp, model)
        control_call(emu.address, "ClearLog", {})
        t0, wall0 = time.perf_counter(), time.time()

        def listener(event: Any) -> None:
            if event.kind in ("start", "done", "failed"):
                events.append((time.perf_counter() - t0, event.kind, event.address))

        p = sdcluster.plan(ws)
        planned = time.perf_counter() - t0
        sdcluster.apply(p, listener=listener)
        wall = time.perf_counter() - t0
        if model is not None:
            served(ws)
        log = control_call(emu.address, "Log", {})
    for e in log:
        e["t"] = e["time"] - wall0
    return planned, wall, events, log


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--requests", action="store_true")
    args = parser.parse_args()
    model = model_dir(MODEL_MIB, MODEL_FILES) if args.model else None
    here = os.getcwd()
    saved, retry.BACKOFF_SCALE = retry.BACKOFF_SCALE, 1 / SCALE
    try:
        timeline(None, {**FAST_KNOBS, **EXISTING_PROJECT})  # the lazy imports, not measured
        planned, wall, events, log = timeline(model)
    finally:
        retry.BACKOFF_SCALE = saved
        os.chdir(here)
    k = KNOBS
    bound = k["iam_propagation_s"] + k["operation_s"] + max(k["rollout_s"], k["lb_s"])
    print(f"plan {planned:.2f} s; plan + apply {wall:.2f} s; bound (apply without a model) {bound:.2f} s")
    spans: dict[str, list[float]] = {}
    for t, _, address in events:
        spans.setdefault(address, []).append(t)
    print("\nchange                                              start    end   took")
    for address, ts in sorted(spans.items(), key=lambda kv: kv[1][0]):
        print(f"{address:50s} {ts[0]:6.2f} {ts[-1]:6.2f} {ts[-1] - ts[0]:6.2f}")
    print("\nrequests (t from plan start; code; caller omitted)")
    seen: set[tuple[str, str]] = set()
    for e in log:
        key = (e["service"], e["method"])
        if args.requests or e["mutating"] or key not in seen:
            print(f"{e['t']:6.2f} {e['service']:16s} {e['method']:28s} {e['code']:10s} {e['resource'][:80]}")
        seen.add(key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
