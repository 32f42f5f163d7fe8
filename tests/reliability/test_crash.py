"""Crash anywhere: ``sdcluster apply -y`` as a real process, SIGKILLed over and over at points spread
over the whole run, then run again until it finishes.

The kill points are the emulator's own, and alternate between two kinds: right after the emulator
has carried out the next successful mutating request (so every mutation of the apply is, in turn, a
kill point, with the client never hearing the answer), and at a random request of the run (a read
during refresh, an operation/rollout/load balancer poll, or between changes and state writes). Each
rerun continues from what the killed one left, so one chain of runs covers the whole apply at the
cost of about one apply per kill; once it has converged, further kills land in no-op applies.

After every kill the state file (and its backup) must parse and the lock file still names the dead
process, yet the next run must proceed without ``force-unlock`` (the OS lock died with the process).
At the end a clean ``apply -y`` exits 0, ``plan --detailed-exitcode`` exits 0, the emulator holds
exactly what the fault-free reference run holds (nothing created twice), the state records all of it
(nothing orphaned), and no file or output line carries a token.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from sdcluster.state import LocalBackend, LockInfo, State

from .runs import KNOBS, RUN_TIMEOUT_S, SDCLUSTER, cli, environment
from .worldview import PROJECT, Reference, creates, differences, token_leaks, world_addresses, world_view

MIN_KILLS = 10
MAX_RUNS = 40


class Killer:
    """SIGKILLs the armed process once the emulator has answered a given request.

    It counts the emulator's request log: an entry is added when a request has been carried out,
    before its response is sent, so a kill there is the worst moment for the client. A kill point is
    either the next successful mutating request, or the N-th request of any kind from now on (reads
    during refresh, operation/rollout/load balancer polls).
    """

    def __init__(self, emu: Any) -> None:
        self.mutations = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._armed: tuple[subprocess.Popen[str], str, int] | None = None
        log = emu.world.log
        add = log.add

        def counting_add(entry: Any) -> None:
            add(entry)
            if entry.caller.startswith("principal://"):
                return  # TF Serving reading its model as its pod: the cluster's traffic, not the CLI's
            self._answered(mutated=entry.mutating and entry.code == "OK")

        log.add = counting_add

    def arm(self, proc: subprocess.Popen[str], kind: str, after: int) -> None:
        """Kill ``proc`` at the ``after``-th mutation (kind "mutation") or request (kind "request")."""
        with self._lock:
            self._armed = (proc, kind, after)

    def _answered(self, mutated: bool) -> None:
        with self._lock:
            self.requests += 1
            self.mutations += mutated
            if self._armed is None:
                return
            proc, kind, after = self._armed
            if (self.mutations if kind == "mutation" else self.requests) < after:
                return
            self._armed = None
        proc.kill()


def check_after_kill(workdir: Path, pid: int) -> None:
    """The state (and its backup) parse; the lock file still names the killed process."""
    state_path = workdir / ".sdcluster" / "state.json"
    backup = state_path.with_name("state.json.backup")
    assert state_path.exists() or not backup.exists(), "a backup without the state file"
    for path in (state_path, backup):
        if path.exists():
            State.from_dict(json.loads(path.read_text()), source=str(path))
    lock = LockInfo.from_dict(json.loads(state_path.with_name("state.json.lock").read_text()))
    assert lock.pid == pid and lock.operation == "apply", lock


def test_apply_killed_anywhere_resumes_and_converges_without_orphans(
    make_emu: Any, tmp_path: Path, reference: Reference
) -> None:
    emu = make_emu(**KNOBS)
    env = environment(emu)
    workdir = tmp_path / "project"
    workdir.mkdir()
    init = cli(workdir, env, "init", "--project", PROJECT, "--user", "demo@example.com")
    assert init.returncode == 0, init.stderr
    killer = Killer(emu)
    rng = random.Random(20240229)
    kills: list[str] = []
    outputs: list[str] = []
    converged = False
    for run in range(MAX_RUNS):
        proc = subprocess.Popen(
            [SDCLUSTER, "apply", "-y"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Alternate: right after the next mutation (every mutation of the apply is hit in turn),
        # and at a random request of this run (inside refresh, a wait, or between changes).
        point = (
            ("mutation", killer.mutations + 1)
            if run % 2 == 0
            else ("request", killer.requests + rng.randint(1, 30))
        )
        killer.arm(proc, *point)
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        outputs += [out, err]
        assert "locked" not in err, err  # the dead run's lock did not stand in the way
        if proc.returncode == 0:
            converged = converged or point[0] == "mutation"  # it made no further mutation: complete
            if converged and len(kills) >= MIN_KILLS:
                break
            continue  # (after convergence, kills land in no-op applies: their refresh and state writes)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        kills.append(f"{point[0]} {point[1]}")
        check_after_kill(workdir, proc.pid)
    assert converged and len(kills) >= MIN_KILLS, kills

    final = cli(workdir, env, "apply", "-y")
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    planned = cli(workdir, env, "plan", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout[-3000:]

    view = world_view(emu)
    assert not differences(reference.applied, view), "\n".join(differences(reference.applied, view))
    assert creates(emu) == reference.creates  # nothing was created twice
    state = LocalBackend(workdir / ".sdcluster" / "state.json").read()
    assert state is not None
    assert set(state.resources) == world_addresses(view) == reference.applied_addresses

    # Secrets: no token in any file left behind (state, backup, lock, a kubeconfig) or any output.
    kubeconfig = cli(workdir, env, "kubeconfig", "--out", "kubeconfig")
    assert kubeconfig.returncode == 0, kubeconfig.stderr
    outputs += [
        final.stdout,
        final.stderr,
        planned.stdout,
        planned.stderr,
        kubeconfig.stdout,
        kubeconfig.stderr,
    ]
    leaks = [line for text in outputs for line in token_leaks(text)]
    leaks += [
        f"{p}: {line}"
        for p in workdir.rglob("*")
        if p.is_file()
        for line in token_leaks(p.read_text(errors="replace"))
    ]
    assert not leaks, leaks
