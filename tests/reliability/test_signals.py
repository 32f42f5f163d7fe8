"""Signals to a real ``sdcluster`` process: SIGTERM (what CI cancellations send), SIGHUP (a closed
terminal) and SIGINT (Ctrl-C) stop a run safely.

- The sweep: ``apply -y`` signalled (SIGTERM and SIGHUP in turn) again and again, every interrupted
  run continued by the next one, at points alternating between right after the next mutation (the
  changes in flight then finish their calls, so one run covers a few mutations) and a random request
  of the run (a read during refresh, a poll during a wait); then ``destroy -y`` at its next mutation. Each
  interrupted run exits 130, says so at once, leaves a parseable state and no lock in the way; the
  chain converges to exactly what a fault-free run makes (nothing created twice, nothing orphaned),
  and the destroy chain leaves exactly what a fault-free destroy leaves.
- Long waits are cut short: a SIGINT while GKE is still creating the cluster (or deleting it) exits
  130 with the operation still running, and the state records the cluster (pending) so destroy
  deletes it.
- A second signal while the first is being acted on stops at once, and still orphans nothing.
- A signal after "Apply complete!" changes nothing: exit 0.

The emulator's request log is the clock: a signal is sent when the emulator has carried out a given
request, before its answer reaches the client.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcluster.state import LocalBackend, State

from .runs import KNOBS, SDCLUSTER, cli, environment
from .worldview import PROJECT, Reference, creates, differences, world_addresses, world_view

# A run stopped by a signal exits well within this (waits are cut short); far less than the
# emulator's long operations in the tests that use them.
EXIT_WITHIN_S = 30
SWEEP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
MAX_RUNS = 40


def catches(proc: subprocess.Popen[str], sig: int) -> bool:
    """Whether ``proc`` has a handler for ``sig`` (Linux: the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


class Signaller:
    """Sends a signal to the armed process once the emulator has carried out a matching request
    (its log entry is added before the answer is sent)."""

    def __init__(self, emu: Any) -> None:
        self.mutations = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._armed: tuple[subprocess.Popen[str], int, Callable[[Any, int], bool]] | None = None
        log = emu.world.log
        add = log.add

        def observing_add(entry: Any) -> None:
            add(entry)
            self._answered(entry)

        log.add = observing_add

    def arm(self, proc: subprocess.Popen[str], sig: int, when: Callable[[Any, int], bool]) -> None:
        """Signal ``proc`` with ``sig`` at the first entry for which ``when(entry, mutations)``."""
        with self._lock:
            self._armed = (proc, sig, when)

    def at_next_mutation(self, proc: subprocess.Popen[str], sig: int) -> None:
        target = self.mutations + 1
        self.arm(proc, sig, lambda entry, n: n >= target)

    def at_request(self, proc: subprocess.Popen[str], sig: int, after: int) -> None:
        """At the ``after``-th request answered from now, of any kind."""
        target = self.requests + after
        self.arm(proc, sig, lambda entry, n: self.requests >= target)

    def _answered(self, entry: Any) -> None:
        with self._lock:
            self.requests += 1
            self.mutations += entry.mutating and entry.code == "OK"
            if self._armed is None:
                return
            proc, sig, when = self._armed
            if not when(entry, self.mutations):
                return
            if not catches(proc, sig):
                # Not this process's request (it has not even installed its handlers yet): an
                # earlier, interrupted run's call the emulator is still answering. Keep waiting.
                return
            self._armed = None
        if proc.poll() is None:
            proc.send_signal(sig)


def start(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SDCLUSTER, *args], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def init(workdir: Path, env: dict[str, str]) -> None:
    workdir.mkdir()
    done = cli(workdir, env, "init", "--project", PROJECT, "--user", "demo@example.com")
    assert done.returncode == 0, done.stderr


def stored(workdir: Path) -> State:
    """The state file parses (and its backup); returns it."""
    path = workdir / ".sdcluster" / "state.json"
    backup = path.with_name("state.json.backup")
    if backup.exists():
        State.from_dict(json.loads(backup.read_text()), source=str(backup))
    state = LocalBackend(path).read()
    assert state is not None
    return state


def check_interrupted(proc: subprocess.Popen[str], out: str, err: str, sig: int) -> None:
    assert proc.returncode == 130, (proc.returncode, out[-2000:], err[-3000:])
    assert f"Interrupted ({signal.Signals(sig).name})" in err, err[-3000:]
    assert "Traceback" not in err and "complete!" not in out, out[-2000:] + err[-3000:]


def finish_operations(emu: Any) -> None:
    """Let the emulated GKE operations in flight complete now (instead of waiting them out)."""
    world = emu.world
    with world.lock:
        for op in world.data.get("container", {}).get("operations", {}).values():
            if op["status"] != "DONE":
                op["running_at"] = op["done_at"] = world.now()


def sweep(
    workdir: Path,
    env: dict[str, str],
    signaller: Signaller,
    command: list[str],
    done_text: str,
    seed: int | None = None,
) -> int:
    """Run ``command`` signalled again and again until a run signalled after its next mutation
    completes: at its next mutation, or (with a ``seed``) at that and a random request in turn.
    Returns how many runs a signal interrupted (each exited 130 with a parseable state)."""
    rng = random.Random(seed)
    interrupted = 0
    for run in range(MAX_RUNS):
        sig = SWEEP_SIGNALS[(run // 2 if seed is not None else run) % len(SWEEP_SIGNALS)]
        proc = start(workdir, env, *command)
        at_mutation = seed is None or run % 2 == 0
        if at_mutation:
            signaller.at_next_mutation(proc, sig)
        else:
            signaller.at_request(proc, sig, rng.randint(1, 30))
        out, err = proc.communicate(timeout=EXIT_WITHIN_S * 4)
        if proc.returncode == 0:
            assert done_text in out or "No changes." in out, out[-2000:] + err[-2000:]
            if at_mutation:  # it made no further mutation: complete
                return interrupted
            continue
        check_interrupted(proc, out, err, sig)
        stored(workdir)
        assert "locked" not in err
        interrupted += 1
    raise AssertionError(f"{command} did not complete in {MAX_RUNS} runs")


def test_sigterm_and_sighup_at_every_mutation_of_apply_and_destroy_leave_nothing_behind(
    make_emu: Callable[..., Any], tmp_path: Path, reference: Reference
) -> None:
    emu = make_emu(**KNOBS)
    env = environment(emu)
    workdir = tmp_path / "project"
    init(workdir, env)
    signaller = Signaller(emu)

    applied_points = sweep(workdir, env, signaller, ["apply", "-y"], "Apply complete!", seed=14)
    planned = cli(workdir, env, "plan", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout[-3000:]
    view = world_view(emu)
    assert not differences(reference.applied, view), "\n".join(differences(reference.applied, view))
    assert creates(emu) == reference.creates  # nothing was created twice
    assert set(stored(workdir).resources) == world_addresses(view) == reference.applied_addresses

    destroyed_points = sweep(workdir, env, signaller, ["destroy", "-y"], "Destroy complete!")
    view = world_view(emu)
    assert not differences(reference.destroyed, view), "\n".join(differences(reference.destroyed, view))
    assert set(stored(workdir).resources) == set(reference.destroyed_addresses)
    # The closing note of issue 14 quotes these counts.
    print(
        f"\nSIGTERM/SIGHUP at {applied_points} points of apply: {applied_points}/{applied_points} converged; "
        f"at {destroyed_points} points of destroy: {destroyed_points}/{destroyed_points} destroyed cleanly"
    )
    assert applied_points >= 6 and destroyed_points >= 3, (applied_points, destroyed_points)


def test_ctrl_c_cuts_long_waits_short_and_destroy_finds_what_was_being_made(
    make_emu: Callable[..., Any], tmp_path: Path
) -> None:
    emu = make_emu(**{**KNOBS, "operation_s": 600.0})  # a GKE operation outlasts every run here
    env = environment(emu)
    workdir = tmp_path / "project"
    init(workdir, env)
    signaller = Signaller(emu)

    proc = start(workdir, env, "apply", "-y")
    signaller.arm(proc, signal.SIGINT, lambda e, _: e.method == "CreateCluster" and e.code == "OK")
    out, err = proc.communicate(timeout=EXIT_WITHIN_S)
    check_interrupted(proc, out, err, signal.SIGINT)
    # What else was in flight at that moment (a bucket grant, say) is named too, in whatever order.
    said = err.partition("Interrupted (SIGINT): ")[2].partition("\n")[0]
    assert said.startswith("finishing ") and said.endswith(", saving the state..."), err[-3000:]
    doing = said.removeprefix("finishing ").removesuffix(", saving the state...").split(", ")
    assert "creating gke.cluster.sd-cluster" in doing, err[-3000:]
    clusters = emu.world.data["container"]["clusters"]
    assert [c["status"] for c in clusters.values()] == ["PROVISIONING"]  # it did not wait for GKE
    assert stored(workdir).resources["gke.cluster.sd-cluster"].pending

    # Destroy deletes the pending create; interrupted while GKE deletes it, it exits at once too.
    finish_operations(emu)
    proc = start(workdir, env, "destroy", "-y")
    signaller.arm(proc, signal.SIGTERM, lambda e, _: e.method == "DeleteCluster" and e.code == "OK")
    out, err = proc.communicate(timeout=EXIT_WITHIN_S)
    check_interrupted(proc, out, err, signal.SIGTERM)
    assert "finishing destroying gke.cluster.sd-cluster" in err, err[-3000:]
    assert [c["status"] for c in clusters.values()] == ["STOPPING"]
    assert "gke.cluster.sd-cluster" in stored(workdir).resources  # not forgotten while it still runs

    finish_operations(emu)
    again = cli(workdir, env, "destroy", "-y")
    assert again.returncode == 0 and "Destroy complete!" in again.stdout, again.stdout + again.stderr
    assert clusters == {}


def test_a_second_signal_stops_at_once_and_still_orphans_nothing(
    make_emu: Callable[..., Any], tmp_path: Path, reference: Reference
) -> None:
    emu = make_emu(**KNOBS)
    env = environment(emu)
    workdir = tmp_path / "project"
    init(workdir, env)
    signaller = Signaller(emu)
    knobs = emu.world.knobs

    def slow_then_signal(entry: Any, mutations: int) -> bool:
        # From the eighth mutation on (the APIs are on; accounts, bindings and the bucket are being
        # made), every request takes seconds: the changes in flight cannot finish before the
        # second signal comes.
        if mutations >= 8:
            knobs.latency_ms = 3000.0
            return True
        return False

    proc = start(workdir, env, "apply", "-y")
    signaller.arm(proc, signal.SIGTERM, slow_then_signal)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "Interrupted (SIGTERM)" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, rest = proc.communicate(timeout=EXIT_WITHIN_S)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "Interrupted again (SIGINT): stopping now" in err, err[-3000:]
    assert "Traceback" not in err
    knobs.latency_ms = 0.0
    stored(workdir)

    # Whatever the abandoned calls made, the state knows of it: destroy leaves what a clean destroy
    # leaves (but for GKE's operation history: this run stopped before the cluster).
    proc = start(workdir, env, "destroy", "-y")
    out, err = proc.communicate(timeout=EXIT_WITHIN_S * 4)
    assert proc.returncode == 0 and "Destroy complete!" in out, out[-3000:] + err[-3000:]
    assert stored(workdir).resources.keys() <= set(reference.destroyed_addresses)
    view = {**world_view(emu), "operations": reference.destroyed["operations"]}
    assert not differences(reference.destroyed, view), "\n".join(differences(reference.destroyed, view))


def test_a_signal_after_apply_complete_exits_0(make_emu: Callable[..., Any], tmp_path: Path) -> None:
    emu = make_emu(**KNOBS)
    env = {**environment(emu), "PYTHONUNBUFFERED": "1"}
    workdir = tmp_path / "project"
    init(workdir, env)
    delivered = False
    for _ in range(3):  # the run may end before the signal arrives: then try again
        proc = start(workdir, env, "apply", "-y")
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Apply complete!"):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    delivered = True
                break
        out, err = proc.communicate(timeout=EXIT_WITHIN_S * 4)
        assert proc.returncode == 0, (proc.returncode, out[-2000:], err[-2000:])
        if delivered:
            break
        # Make the next apply have work to do again.
        assert cli(workdir, env, "destroy", "-y").returncode == 0
    assert delivered, "the signal never reached a running process"
    assert "Traceback" not in err and "Interrupted" not in err
    assert os.path.exists(workdir / ".sdcluster" / "state.json")


def test_a_signal_as_soon_as_sdcluster_handles_signals_exits_130_without_a_traceback(
    make_emu: Callable[..., Any], tmp_path: Path
) -> None:
    """The earliest moment: the handlers are installed, the command may not even exist yet."""
    emu = make_emu(**KNOBS)
    env = environment(emu)
    workdir = tmp_path / "project"
    init(workdir, env)
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGHUP):
        proc = start(workdir, env, "plan")
        while not catches(proc, sig) and proc.poll() is None:
            time.sleep(0.001)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=EXIT_WITHIN_S)
        check_interrupted(proc, out, err, sig)
