"""Small tools the benchmarks share: the machine's description, medians, child processes measured
one by one (wall time, peak RSS), an emulator in its own process, and a SavedModel-shaped directory.

Example::

    with EmulatorProcess(operation_s=0.3) as emu:
        rc, rss_mib, wall_s = measure_child(["sdcluster", "plan"], env={"SDCLUSTER_EMULATOR": emu.address})
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
SDCLUSTER = str(VENV_BIN / "sdcluster")  # the console script installed next to this interpreter
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# The machine


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, Python and OS, as RESULTS.md states them."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / MIB:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": mem,
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
    }


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# --------------------------------------------------------------------------------------------------
# Child processes


# Runs argv[1:] and prints its exit code, peak RSS (KiB) and wall time. It stands between the
# benchmark and the measured command because a child's ru_maxrss starts at its parent's RSS (Linux
# records the pre-exec address space's high-water mark): this small process keeps that floor at a
# few MiB instead of the benchmark's few hundred.
_MEASURE = """
import os, subprocess, sys, time
start = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, time.perf_counter() - start)
"""


def measure_child(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None
) -> tuple[int, float, float]:
    """Run ``cmd`` to completion: (exit code, peak RSS in MiB, wall seconds). Its stderr passes through.

    Example: ``measure_child(["sdcluster", "plan"], cwd="proj")`` -> ``(0, 182.3, 0.61)``.
    """
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]) / 1024, float(out[2])


def wall_time(cmd: list[str], *, cwd: str | Path | None = None) -> float:
    """Wall seconds of one run of ``cmd`` (output discarded); raises if it fails."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


class EmulatorProcess:
    """``sdcluster emulator serve`` in its own process (its Python does not share our GIL).

    Knobs are passed as the command's flags (``operation_s=0.3`` -> ``--operation-s 0.3``).
    """

    def __init__(self, project: str = "demo-proj", owner: str = "user:demo@example.com", **knobs: Any):
        self.project, self.owner, self.knobs = project, owner, knobs
        self.address = ""
        self._proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        cmd = [SDCLUSTER, "emulator", "serve", "--project", self.project, "--owner", self.owner]
        for k, v in self.knobs.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        return cmd

    def __enter__(self) -> EmulatorProcess:
        cmd = self.command()
        # Its complaints go to a log file, not into the benchmark's table.
        self._log = tempfile.NamedTemporaryFile(prefix="bench_emulator_", suffix=".log", delete=False)
        # cwd=/: no sdcluster.toml around to pick a project from.
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd="/")
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()  # export SDCLUSTER_EMULATOR=127.0.0.1:N
        if not line.startswith("export SDCLUSTER_EMULATOR="):
            self.__exit__()
            raise RuntimeError(f"the emulator did not start (it printed {line!r}; see {self._log.name})")
        self.address = line.partition("=")[2]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # serve() stops cleanly on KeyboardInterrupt
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None
        self._log.close()
        if os.path.getsize(self._log.name) == 0:
            os.unlink(self._log.name)


# --------------------------------------------------------------------------------------------------
# A SavedModel-shaped directory


def model_dir(total_mib: int, files: int = 20, root: Path = Path("/tmp")) -> Path:
    """``/tmp/bench_model_<N>MiB``: saved_model.pb, variables/variables.index and ``files - 2`` data
    shards of random bytes, ``total_mib`` MiB in all. Made once and reused while its manifest (kept
    beside it, so an upload does not carry it) still matches.
    """
    directory = root / f"bench_model_{total_mib}MiB"
    shards = files - 2
    pb, index = 2 * MIB, 64 * 1024
    shard = (total_mib * MIB - pb - index) // shards
    layout = {"saved_model.pb": pb, "variables/variables.index": index}
    layout |= {f"variables/variables.data-{i:05d}-of-{shards:05d}": shard for i in range(shards)}
    manifest = root / f"bench_model_{total_mib}MiB.json"
    made = manifest.exists() and json.loads(manifest.read_text()) == layout
    if made and all(_has_size(directory / name, size) for name, size in layout.items()):
        return directory
    (directory / "variables").mkdir(parents=True, exist_ok=True)
    for name, size in layout.items():
        with (directory / name).open("wb") as f:
            for offset in range(0, size, 64 * MIB):
                f.write(os.urandom(min(64 * MIB, size - offset)))
    manifest.write_text(json.dumps(layout))
    return directory


def _has_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


# Starts ``Emulator(**knobs)`` (knobs as JSON in argv[1]) and prints its address as serve does.
_SERVE = """
import json, sys, time
from sdcluster.emulator import Emulator
with Emulator(**json.loads(sys.argv[1])) as emu:
    print("export SDCLUSTER_EMULATOR=" + emu.address, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
"""


class KnobsProcess(EmulatorProcess):
    """The emulator in its own process with any of its knobs (``emulator serve`` has flags for a few):
    ``KnobsProcess(rollout_s=3.0, model_load_s=2.0, enabled_services=[...])``."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            _SERVE,
            json.dumps({"project": self.project, "owner": self.owner, **self.knobs}),
        ]


def replace_section(results: Path, title: str, text: str) -> None:
    """Write ``text`` (which starts with the ``title`` line, e.g. "## Zero to serving") as the last
    section of ``results``, instead of the section of that title it had; other sections stay."""
    old = results.read_text() if results.exists() else ""
    if title in old:
        head, _, rest = old.partition(title)
        after = rest.split("\n## ", 1)
        old = head + (("## " + after[1]) if len(after) > 1 else "")
    results.write_text(old.rstrip("\n") + "\n\n" + text)


def section_head(command: str) -> list[str]:
    """The lines after a section's title: which command made its rows, when and where, and the
    table's header (the rows follow)."""
    return [
        f"Made by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, all rows in this one run, "
        f"on {os.cpu_count()} cores shared with the emulator (its own process) and other work.",
        "",
        "| row | figure | value | goal | result | how |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
