"""sdcluster's benchmarks: each figure is a ratio (or a difference) measured side by side in one run.

    python bench/run.py                  # the full run (a few minutes on 2 cores); writes bench/RESULTS.md
    python bench/run.py --quick          # about 2 minutes: fewer repetitions, a 256 MiB model
    python bench/run.py --only plan,apply --out /tmp/bench_partial.md   # a subset (prints only without --out)

What is measured (RESULTS.md says it again, with the figures):

1. start-up of the console script (``sdcluster --help``, ``sdcluster version``) over ``python -c pass``;
2. sequential round trips of a no-op ``plan``: its wall time with 0 and 100 ms of emulator latency;
3. a fresh ``apply`` against its unavoidable lower bound (IAM propagation + cluster operation +
   the longer of rollout and load balancer, which run together), and against the tutorial's way (``bench/tutorial_way.py``), with the
   emulator's durations scaled 1:20; the bucket has no model yet, so the Deployment's wait is
   compared with the rollout knob (its pods start; TF Serving waits for ``upload-model``);
4. model upload: ``sdcluster.gcp.upload.upload_model`` (parallel) against one file at a time, and a rerun;
5. peak RSS of ``sdcluster plan`` and ``sdcluster apply -y`` processes (emulator in another process).

Two more scripts write their own sections of RESULTS.md: ``bench/upload.py`` (issue 19 rows a, c, d:
uploads with each connection capped) and ``bench/serve.py`` (row b: zero to serving in one apply with
``serving.model_dir``, against apply then upload-model and the tutorial's way).
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutorial_way import run_tutorial

import sdcluster
from helpers import MIB, SDCLUSTER, EmulatorProcess, machine, measure_child, median, model_dir, wall_time
from sdcluster.emulator.core import NEW_PROJECT_SERVICES

PROJECT = "demo-proj"
USER = "user:demo@example.com"
RESULTS = Path(__file__).with_name("RESULTS.md")

# Scenario 3 runs at 1:20 — one emulator second stands for twenty real ones — so that it takes
# seconds. The real-world figure each knob stands for is written next to it.
SCALE = 20
APPLY_KNOBS: dict[str, Any] = {
    "iam_propagation_s": 3.0,  # 60 s: the tutorial's own `sleep 60` (Google: usually < 2 min, up to 7)
    "operation_s": 4.0,  # 80 s per GKE operation (real: ~1-3 min per node pool op, 4-6 min per cluster)
    "rollout_s": 3.0,  # 60 s: pull tensorflow/serving and start its container
    "lb_s": 2.0,  # 40 s: provision the load balancer's address
    "kubelet_scale": 1 / SCALE,  # probe periods and back-off, at the same scale
    "tfserving_scale": 1 / SCALE,  # TF Serving's bucket polls and load retries, at the same scale
    # The emulator's control loops (GKE operations, the Deployment and ReplicaSet controllers, the
    # kubelet) advance every tick_s. Its default, 50 ms, would stand for a whole second per step at
    # 1:20; 10 ms stands for 0.2 s, the order of the real ones: Kubernetes' controllers react to a
    # watch event within milliseconds, and the kubelet relists its containers every second (PLEG).
    "tick_s": 0.01,
}
# A project whose APIs are already on (the tutorial enables them beforehand; the lower bound has no
# API enabling in it): a new project's APIs plus the five sdcluster uses. Passed to every emulator.
EXISTING_PROJECT: dict[str, Any] = {
    "enabled_services": [
        *NEW_PROJECT_SERVICES,
        "cloudresourcemanager.googleapis.com",
        "compute.googleapis.com",
        "container.googleapis.com",
        "iam.googleapis.com",
        "iamcredentials.googleapis.com",
    ]
}
TUTORIAL_SLEEP_S = 60.0 / SCALE  # the tutorial's fixed `sleep 60`, at the same scale
FAST_KNOBS: dict[str, Any] = {"operation_s": 0.2, "rollout_s": 0.2, "lb_s": 0.2}  # set-up runs, not measured


@dataclass(frozen=True)
class Profile:
    startup_runs: int
    warmup: int
    plan_runs: int
    apply_runs: int
    upload_mib: int
    upload_runs: int


FULL = Profile(startup_runs=20, warmup=3, plan_runs=5, apply_runs=3, upload_mib=1024, upload_runs=3)
QUICK = Profile(startup_runs=10, warmup=2, plan_runs=3, apply_runs=1, upload_mib=256, upload_runs=3)


@dataclass
class Figure:
    """One row of the table. ``passed`` is None for figures without a goal."""

    what: str
    value: str
    goal: str = "-"
    passed: bool | None = None
    how: str = ""


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # markdown: details and interpretation


def _workspace(emulator: str, tmp: str) -> sdcluster.Workspace:
    cfg = sdcluster.Config.build(project=PROJECT, user=USER, state={"path": f"{tmp}/state.json"})
    return sdcluster.Workspace.open(cfg, emulator=emulator)


# --------------------------------------------------------------------------------------------------
# 1. Start-up


def bench_startup(p: Profile) -> Section:
    """Hyperfine-style: warm-up runs, then rounds that run each command once, in turn."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "sdcluster --help": [SDCLUSTER, "--help"],
        "sdcluster version": [SDCLUSTER, "version"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    # Start as on a user's machine, where Python has cached sdcluster's bytecode since its first
    # run: a machine that sets PYTHONDONTWRITEBYTECODE (this one does) would otherwise compile all
    # of sdcluster's modules from source at every start.
    compileall.compile_dir(str(Path(sdcluster.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as cwd:  # no sdcluster.toml around
        for _ in range(p.warmup):
            for cmd in commands.values():
                wall_time(cmd, cwd=cwd)
        for _ in range(p.startup_runs):
            for name, cmd in commands.items():
                times[name].append(wall_time(cmd, cwd=cwd))
    base = median(times["python -c pass"])
    section = Section("Start-up")
    probe = "import sys, sdcluster.ui.cli; print(sum(m.split('.')[0] in ('google', 'grpc', 'kubernetes') for m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    section.notes.append(
        f"Importing `sdcluster.ui.cli` (what both commands do) loads {heavy.strip()} modules of gRPC, the Google "
        "and Kubernetes client libraries: they are imported inside the functions that need them."
    )
    import typer

    section.notes.append(
        "Measured with sdcluster's bytecode compiled beforehand (`compileall`), as Python caches it on a "
        f"user's machine after the first run{' (this machine sets PYTHONDONTWRITEBYTECODE)' if os.environ.get('PYTHONDONTWRITEBYTECODE') else ''}. "
        f"`version` parses the global options, and typer {typer.__version__} imports pydantic to coerce any option value "
        "(`typer._coercion.build_runtime_param` -> `typer._adapters`); `--help` exits before it parses them."
    )
    for name in ("sdcluster --help", "sdcluster version"):
        m = median(times[name])
        section.figures.append(
            Figure(
                f"`{name}` start-up over `python -c pass`",
                f"+{m - base:.3f} s",
                "< 0.3 s",
                m - base < 0.3,
                f"median of {p.startup_runs}: {m:.3f} s vs {base:.3f} s ({p.warmup} warm-up runs)",
            )
        )
    return section


# --------------------------------------------------------------------------------------------------
# 2. No-op plan round trips


def bench_plan(p: Profile) -> Section:
    from sdcluster.emulator import Emulator

    times: dict[int, list[float]] = {0: [], 100: []}
    requests = resources = 0
    with (
        tempfile.TemporaryDirectory(prefix="bench_plan_") as tmp,
        Emulator(**FAST_KNOBS, **EXISTING_PROJECT) as emu,
    ):
        sdcluster.apply(sdcluster.plan(_workspace(emu.address, tmp)))
        for _ in range(p.plan_runs):
            for latency in (0, 100):
                emu.world.knobs.latency_ms = latency
                emu.log.clear()
                ws = _workspace(emu.address, tmp)  # fresh clients, as a `sdcluster plan` process has
                start = time.perf_counter()
                plan = sdcluster.plan(ws)
                times[latency].append(time.perf_counter() - start)
                if {c.action for c in plan.changes} != {"noop"}:
                    raise RuntimeError(f"the plan after apply is not a no-op:\n{plan}")
                requests, resources = len(emu.log.entries()), len(plan.changes)
    t0, t100 = median(times[0]), median(times[100])
    trips = (t100 - t0) / 0.100
    section = Section("No-op plan round trips")
    section.figures.append(
        Figure(
            f"no-op `plan`: sequential round trips (N = {resources} resources)",
            f"{trips:.2f}",
            "<= 2.5",
            trips <= 2.5,
            f"(t100 - t0) / 0.1 s; median of {p.plan_runs}: t0 = {t0:.3f} s, t100 = {t100:.3f} s; "
            f"{requests} requests per plan",
        )
    )
    section.notes.append(
        f"A no-op plan makes {requests} requests for {resources} resources; with 100 ms added to every "
        f"request it takes {t100 - t0:.2f} s longer, i.e. {trips:.1f} requests' worth of latency on its "
        f"critical path (refreshing one resource at a time would cost about {resources})."
    )
    return section


# --------------------------------------------------------------------------------------------------
# 3. Fresh apply: lower bound and the tutorial's way


Spans = dict[str, tuple[float, float]]


def _apply_once(backoff_scale: float, knobs: dict[str, Any] = APPLY_KNOBS) -> tuple[float, Spans]:
    """Wall time of ``apply(plan(ws))`` on a fresh emulator, and each resource's (start, done).

    ``backoff_scale`` multiplies sdcluster's poll and retry intervals (``retry.BACKOFF_SCALE``).
    """
    from sdcluster import retry
    from sdcluster.emulator import Emulator

    spans: dict[str, list[float]] = {}
    saved, retry.BACKOFF_SCALE = retry.BACKOFF_SCALE, backoff_scale
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench_apply_") as tmp,
            Emulator(**knobs, **EXISTING_PROJECT) as emu,
        ):
            ws = _workspace(emu.address, tmp)
            start = time.perf_counter()

            def listener(event: Any) -> None:
                if event.kind in ("start", "done"):
                    spans.setdefault(event.address, []).append(time.perf_counter() - start)

            state = sdcluster.apply(sdcluster.plan(ws), listener=listener)
            wall = time.perf_counter() - start
    finally:
        retry.BACKOFF_SCALE = saved
    if not state.outputs.get("endpoint"):
        raise RuntimeError("apply finished without an endpoint")
    return wall, {a: (s[0], s[-1]) for a, s in spans.items()}


def _tutorial_once(
    knobs: dict[str, Any] = APPLY_KNOBS, sleep_s: float = TUTORIAL_SLEEP_S
) -> tuple[float, dict[str, float]]:
    from sdcluster.emulator import Emulator

    with Emulator(**knobs, **EXISTING_PROJECT) as emu:
        start = time.perf_counter()
        stages = run_tutorial(emu.address, project=PROJECT, user=USER, sleep_s=sleep_s)
        return time.perf_counter() - start, stages


def _middle(runs: list[Any]) -> Any:
    """The median run (by wall time, the first item)."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


_STAGES = (  # sdcluster's critical path: (label, address prefixes run together, knobs that bound it)
    (
        "`gke.cluster`: IAM propagation + CreateCluster",
        ("gke.cluster.",),
        ("iam_propagation_s", "operation_s"),
    ),
    (
        "`k8s.deployment` + `k8s.service` together: rollout, load balancer",
        ("k8s.deployment.", "k8s.service."),
        ("rollout_s", "lb_s"),
    ),
)


def _lower_bound(k: dict[str, float]) -> float:
    """Propagation + cluster operation + the longer of rollout and LB (they run at the same time)."""
    return k["iam_propagation_s"] + k["operation_s"] + max(k["rollout_s"], k["lb_s"])


def _stage_span(spans: Spans, prefixes: tuple[str, ...]) -> float:
    hits = [v for a, v in spans.items() if a.startswith(prefixes)]
    return max(e for _, e in hits) - min(s for s, _ in hits)


def _stage_bound(knobs: tuple[str, ...]) -> float:
    values = [APPLY_KNOBS[k] for k in knobs]
    return max(values) if set(knobs) == {"rollout_s", "lb_s"} else sum(values)


def _breakdown(runs: list[tuple[float, Spans]]) -> list[str]:
    """Where sdcluster's apply spends its time, per run, against each stage's lower bound."""
    bound = _lower_bound(APPLY_KNOBS)
    rows = []
    critical = [0.0] * len(runs)
    for label, prefixes, knobs in _STAGES:
        cells = []
        for i, (_, spans) in enumerate(runs):
            took = _stage_span(spans, prefixes)
            critical[i] += took
            cells.append(f"{took:.2f} s")
        rows.append(f"| {label} | {_stage_bound(knobs):.2f} s | {' | '.join(cells)} |")
    rest = [f"{wall - c:.2f} s" for (wall, _), c in zip(runs, critical, strict=True)]
    rows.append(
        f"| everything else: plan, IAM, bucket, node pool, ConfigMap, state | 0 | {' | '.join(rest)} |"
    )
    walls = [f"**{wall:.2f} s**" for wall, _ in runs]
    rows.append(f"| **apply** | **{bound:.2f} s** | {' | '.join(walls)} |")
    return rows


def bench_apply(p: Profile) -> Section:
    scaled: list[tuple[float, Spans]] = []
    production: list[tuple[float, Spans]] = []
    theirs: list[tuple[float, dict[str, float]]] = []
    # Warm-up, not measured: the first run in a process pays the lazy imports (Google, Kubernetes).
    _apply_once(backoff_scale=1.0, knobs=FAST_KNOBS)
    _tutorial_once(knobs=FAST_KNOBS, sleep_s=0.0)
    for _ in range(p.apply_runs):  # interleaved, so a noisy minute hits all three
        scaled.append(_apply_once(backoff_scale=1 / SCALE))
        production.append(_apply_once(backoff_scale=1.0))
        theirs.append(_tutorial_once())
    ours, prod, tut = _middle(scaled), _middle(production), _middle(theirs)
    k = APPLY_KNOBS
    bound = _lower_bound(k)
    t_bound = TUTORIAL_SLEEP_S + 3 * k["operation_s"] + max(k["rollout_s"], k["lb_s"])
    runs = f"median of {p.apply_runs}" if p.apply_runs > 1 else "1 run"
    terms = (
        f"propagation {k['iam_propagation_s']:g} + operation {k['operation_s']:g} + max(rollout "
        f"{k['rollout_s']:g}, LB {k['lb_s']:g})"
    )
    section = Section("Fresh apply")
    section.figures += [
        Figure(
            f"fresh `apply(plan(ws))` / its lower bound (all scaled 1:{SCALE}, poll intervals too)",
            f"{ours[0] / bound:.2f}",
            "<= 1.05",
            ours[0] / bound <= 1.05,
            f"{runs}: {ours[0]:.2f} s vs {bound:.1f} s = {terms}; `retry.BACKOFF_SCALE = 1/{SCALE}`",
        ),
        Figure(
            "the same with production poll intervals (unscaled backoff against scaled waits)",
            f"{prod[0] / bound:.2f}",
            "-",
            None,
            f"{runs}: {prod[0]:.2f} s vs {bound:.1f} s; what a user would see if IAM took 3 s and GKE 4 s",
        ),
        Figure(
            "speed-up over the tutorial's way (same emulator, same scale)",
            f"{tut[0] / ours[0]:.2f}x",
            "-",
            None,
            f"{runs}: tutorial {tut[0]:.2f} s (lower bound {t_bound:.1f} s) vs sdcluster {ours[0]:.2f} s "
            f"(lower bound {bound:.1f} s)",
        ),
    ]
    deployment = _stage_span(ours[1], ("k8s.deployment.",))
    section.figures.append(
        Figure(
            "apply on an empty bucket: the Deployment's wait / `rollout_s` (pods started, no model to load)",
            f"{deployment / k['rollout_s']:.2f}",
            "<= 1.2",
            deployment / k["rollout_s"] <= 1.2,
            f"{runs}: {deployment:.2f} s vs rollout_s {k['rollout_s']:g} s; apply then says to run "
            "`sdcluster upload-model` instead of waiting out `serving.rollout_timeout_s` for a readiness "
            "that cannot come",
        )
    )
    fixed = ours[0] - sum(_stage_span(ours[1], prefixes) for _, prefixes, _ in _STAGES)
    real = ((ours[0] - fixed) * SCALE + fixed) / (bound * SCALE)
    knobs = ", ".join(f"`{name}={value:g}`" for name, value in k.items())
    section.notes += [
        f"Scaling: every emulator duration is 1/{SCALE} of a real-world figure ({knobs}; the comments "
        f"on `APPLY_KNOBS` in `bench/run.py` name the real figures), the tutorial's `sleep 60` becomes "
        f"`sleep({TUTORIAL_SLEEP_S:g})`, and for figure 'all scaled' sdcluster's poll intervals are "
        f"scaled by the same 1/{SCALE} (`retry.BACKOFF_SCALE`), so the run is the real one played "
        f"{SCALE} times faster. What does not scale is fixed work (requests, CPU), which therefore weighs "
        f"{SCALE} times more here than in a real apply. The emulator has one `operation_s` for every GKE "
        "operation, whereas a real cluster creation takes longer than a node pool operation.",
        "",
        f"sdcluster's apply, stage by stage (the median run of each kind, {runs}):",
        "",
        "| stage | lower bound | poll intervals scaled | production poll intervals |",
        "| --- | ---: | ---: | ---: |",
        *_breakdown([ours, prod]),
        "",
        f"The tutorial's way (`bench/tutorial_way.py`; every wait polled every 0.1 s): lower bound "
        f"{t_bound:.1f} s (sleep + 3 operations + max(rollout, LB): it creates the Service together with "
        f"the Deployment), measured {tut[0]:.2f} s ({tut[0] / t_bound:.2f}x its bound).",
        "",
        "| stage | took |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.2f} s |" for name, seconds in tut[1].items()),
        "",
        f"Reading: the waits on sdcluster's critical path overshoot their knobs by the poll interval at "
        f"the moment the thing becomes ready; the 'everything else' row ({fixed:.2f} s) is fixed work that "
        f"does not grow with the waits, so at real scale (waits x{SCALE}, same fixed work) this run would "
        f"be about {real:.2f}x its lower bound. With production poll intervals against these short "
        "waits the capped exponential backoff overshoots far more, which is what a user sees on an "
        "unusually fast day. Against the tutorial: its fixed sleep equals the emulated propagation "
        "here (its best case: a shorter propagation is waited for anyway, a longer one fails its "
        "CreateCluster), so the speed-up comes from the default-pool detour (two GKE operations); "
        "both create the Service together with the Deployment, so the load balancer is provisioned "
        "while the rollout runs.",
    ]
    return section


# --------------------------------------------------------------------------------------------------
# 4. Model upload


def bench_upload(p: Profile) -> Section:
    from sdcluster.gcp.clients import ClientFactory
    from sdcluster.gcp.upload import saved_model_files, upload_model

    directory = model_dir(p.upload_mib)
    files = saved_model_files(directory)
    total = sum(f.size for f in files)
    cfg = sdcluster.Config.build(project=PROJECT, user=USER)
    prefix = cfg.model_path.removeprefix(f"gs://{cfg.bucket_name}/") + "/1/"

    def with_bucket(emu: EmulatorProcess) -> ClientFactory:
        factory = ClientFactory(user=USER, emulator=emu.address)
        factory.storage(PROJECT).create_bucket(cfg.bucket_name)
        return factory

    parallel: list[float] = []
    sequential: list[float] = []
    for _ in range(p.upload_runs):  # interleaved; each fresh upload into a fresh (empty) emulator
        with EmulatorProcess(project=PROJECT, owner=USER) as emu:
            factory = with_bucket(emu)
            start = time.perf_counter()
            first = upload_model(cfg, directory, factory=factory)
            parallel.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = upload_model(cfg, directory, factory=factory)
            rerun = time.perf_counter() - start
        if first.bytes_sent != total:
            raise RuntimeError(f"upload_model sent {first.bytes_sent} bytes of {total}")
        with EmulatorProcess(project=PROJECT, owner=USER) as emu:
            bucket = with_bucket(emu).storage(PROJECT).bucket(cfg.bucket_name)
            start = time.perf_counter()
            for f in sorted(files, key=lambda f: f.name):
                bucket.blob(prefix + f.name).upload_from_filename(str(f.path))
            sequential.append(time.perf_counter() - start)

    mib = total / MIB
    runs = f"median of {p.upload_runs}" if p.upload_runs > 1 else "1 run"
    spread = (
        f"; ranges {min(parallel):.2f}-{max(parallel):.2f} s vs {min(sequential):.2f}-{max(sequential):.2f} s"
        if p.upload_runs > 1
        else ""
    )
    par, seq = median(parallel), median(sequential)
    section = Section("Model upload")
    section.figures += [
        Figure(
            f"upload of a {mib:.0f} MiB, {len(files)}-file SavedModel: `upload_model` vs one file at a time",
            f"{seq / par:.2f}x",
            "-",
            None,
            f"{runs}: {par:.2f} s ({mib / par:.0f} MiB/s, {first.workers} threads) vs {seq:.2f} s "
            f"({mib / seq:.0f} MiB/s, `blob.upload_from_filename` in a loop){spread}",
        ),
        Figure(
            "rerun of `upload_model` with nothing changed: bytes sent",
            f"{again.bytes_sent} B",
            "0",
            again.bytes_sent == 0,
            f"{rerun:.2f} s; {len(again.skipped)} files skipped (size + CRC32C from one listing)",
        ),
    ]
    faster = "faster" if seq > par else "slower"
    section.notes += [
        f"`upload_model` was {faster} than the one-file-at-a-time loop here ({seq / par:.2f}x). "
        "The emulator's Cloud Storage runs in its own process on the same "
        f"{os.cpu_count()} cores as the client, over loopback and without a link cap here, so this ratio is "
        "the cost or benefit of parallelism when the machine's CPU is the bottleneck. It says nothing about "
        "real Cloud Storage, where a single stream is bounded by round trips and per-connection throughput: "
        "`bench/upload.py` measures that, with each connection capped (section 'Model upload at link speed').",
        "",
        f"The rerun figure does carry over: with nothing changed, `upload_model` lists the version once, "
        f"compares sizes and CRC32C, and sends {again.bytes_sent} bytes in {rerun:.2f} s.",
    ]
    return section


# --------------------------------------------------------------------------------------------------
# 5. Memory


def bench_memory(p: Profile) -> Section:
    section = Section("Memory")
    with (
        tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp,
        EmulatorProcess(project=PROJECT, owner=USER, **FAST_KNOBS) as emu,
    ):
        env = {"SDCLUSTER_EMULATOR": emu.address}
        init = [SDCLUSTER, "init", "--project", PROJECT, "--user", USER]
        subprocess.run(init, cwd=tmp, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        _, python_rss, _ = measure_child([sys.executable, "-c", "pass"])
        for args in (["plan"], ["apply", "-y"]):
            code, rss, wall = measure_child([SDCLUSTER, *args], env=env, cwd=tmp)
            if code != 0:
                raise RuntimeError(f"sdcluster {shlex.join(args)} failed (exit {code})")
            section.figures.append(
                Figure(
                    f"peak RSS of `sdcluster {shlex.join(args)}`",
                    f"{rss:.0f} MiB",
                    "< 300 MiB",
                    rss < 300,
                    f"{rss / python_rss:.1f}x `python -c pass` ({python_rss:.0f} MiB); ran {wall:.1f} s; "
                    "emulator in another process",
                )
            )
    section.notes.append(
        "Peak RSS (`ru_maxrss` from `os.wait4`, taken by a small wrapper process) of the whole CLI process: Python, grpc, "
        "the Google client libraries and the kubernetes client; the emulator runs in its own process "
        "and is not counted."
    )
    return section


# --------------------------------------------------------------------------------------------------
# Report


BENCHES: dict[str, Callable[[Profile], Section]] = {
    "startup": bench_startup,
    "plan": bench_plan,
    "apply": bench_apply,
    "upload": bench_upload,
    "memory": bench_memory,
}


def _mark(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def table(sections: list[Section]) -> list[str]:
    rows = ["| # | figure | value | goal | result | how |", "| ---: | --- | ---: | ---: | --- | --- |"]
    n = 0
    for s in sections:
        for f in s.figures:
            n += 1
            rows.append(f"| {n} | {f.what} | {f.value} | {f.goal} | {_mark(f.passed)} | {f.how} |")
    return rows


def console(sections: list[Section]) -> str:
    """The table for a terminal: aligned columns, no markdown."""
    rows = [("#", "figure", "value", "goal", "result")]
    n = 0
    for s in sections:
        for f in s.figures:
            n += 1
            rows.append((str(n), f.what.replace("`", ""), f.value, f.goal, _mark(f.passed)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def markdown(sections: list[Section], command: str, elapsed: float, load: tuple[float, float]) -> str:
    m = machine()
    lines = [
        "# sdcluster benchmarks",
        "",
        f"Made by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min "
        f"(sdcluster {sdcluster.__version__}). Every figure is measured side by side in this one run, against the "
        "project's emulator; rerun the command to refresh this file.",
        "",
        "## Machine",
        "",
        "| nproc | memory | CPU | Python | OS | load average (1 min) at start / end |",
        "| ---: | ---: | --- | --- | --- | --- |",
        f"| {m['nproc']} | {m['memory']} | {m['cpu']} | {m['python']} | {m['os']} | {load[0]:.2f} / {load[1]:.2f} |",
        "",
        "The load average counts other work on the machine too (a shared machine is a noisy one): "
        "that is why every figure compares runs made side by side, interleaved where repeated.",
        "",
        "## Figures",
        "",
        *table(sections),
    ]
    for s in sections:
        if s.notes:
            lines += ["", f"## {s.title}", "", *s.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: fewer runs, a 256 MiB model")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(BENCHES)}")
    parser.add_argument(
        "--out", type=Path, help="where to write the markdown (default: bench/RESULTS.md, full set only)"
    )
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    out = args.out or (None if args.only else RESULTS)
    for key in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
        del os.environ[key]  # hermetic: no config, state or emulator from the caller's shell

    profile = QUICK if args.quick else FULL
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    sections = []
    for name in names:
        t = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        sections.append(BENCHES[name](profile))
        print(f"[{name}] done in {time.perf_counter() - t:.0f} s", flush=True)
    elapsed = time.perf_counter() - started
    print()
    print(console(sections))
    if out is not None:
        command = "python bench/run.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:])))
        text = markdown(sections, command, elapsed, (load_start, os.getloadavg()[0]))
        out.write_text(text + kept_sections(out, text))
        print(f"\nwrote {out} ({elapsed / 60:.1f} min)")
    return 0  # a benchmark, not a test: missed goals show in the table, not in the exit code


def kept_sections(path: Path, text: str) -> str:
    """The sections of ``path`` this script does not write (bench/upload.py's and bench/serve.py's,
    and notes written by hand after them), so that refreshing these figures keeps those."""
    if not path.exists():
        return ""
    ours = {line for line in text.splitlines() if line.startswith("## ")}
    old = path.read_text().split("\n## ")[1:]
    kept = [f"## {body.rstrip()}" for body in old if f"## {body.splitlines()[0]}" not in ours]
    return "".join(f"\n{section}\n" for section in kept)


if __name__ == "__main__":
    sys.exit(main())
