"""Apply from scratch and destroy while 20% of all calls fail transiently (UNAVAILABLE / 503), over
ten seeds: every run converges to exactly the fault-free reference, creates nothing twice, and its
state records exactly what exists.

The seeds run three at a time (each against its own emulator) so the ten fit in the suite's budget;
the retry policy is the production one with its backoff scaled down (``retry.BACKOFF_SCALE``), so the
number of attempts — what decides whether a run gives up — is unchanged.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import sdcluster
from sdcluster.errors import SdclusterError

from .runs import KNOBS, workspace
from .worldview import Reference, creates, differences, world_addresses, world_view

FAULT_RATE = 0.2
SEEDS = range(10)
WORKERS = 3
FAULT_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "503", "429"})


def faults(emu: Any) -> int:
    return sum(1 for e in emu.log.entries() if e.code in FAULT_CODES)


def with_faults(emu: Any, seed: int) -> None:
    emu.world.rng.seed(seed)
    emu.world.knobs.fault_rate = FAULT_RATE


def check_phase(
    emu: Any, ws: Any, phase: str, expected: dict[str, Any], expected_addresses: frozenset[str]
) -> list[str]:
    """Compare the emulator and the state with the reference (faults must be off)."""
    view = world_view(emu)
    problems = [f"{phase}: world differs: {d}" for d in differences(expected, view)]
    state = ws.backend.read()
    recorded = set(state.resources) if state else set()
    if recorded != expected_addresses:
        problems.append(
            f"{phase}: state has {sorted(recorded - expected_addresses)} extra, "
            f"{sorted(expected_addresses - recorded)} missing"
        )
    exists = world_addresses(view) if phase == "apply" else recorded
    if recorded != exists:
        problems.append(f"{phase}: state {sorted(recorded ^ exists)} does not match what exists")
    return problems


def run_seed(seed: int, workdir: Path, reference: Reference) -> list[str]:
    """Apply and destroy under faults; returns the problems found (empty: converged exactly)."""
    from sdcluster.emulator import Emulator

    with Emulator(**KNOBS) as emu:
        ws = workspace(emu, workdir / f"seed-{seed}" / "state.json")
        problems: list[str] = []
        for phase, run, expected, addresses in (
            ("apply", sdcluster.apply, reference.applied, reference.applied_addresses),
            ("destroy", sdcluster.destroy, reference.destroyed, reference.destroyed_addresses),
        ):
            with_faults(emu, seed * 1000 + len(problems))
            before = faults(emu)
            try:
                run(ws)
            except SdclusterError as e:
                return [f"{phase} gave up: {type(e).__name__}: {e}"]
            finally:
                emu.world.knobs.fault_rate = 0.0
            if faults(emu) == before:
                problems.append(f"{phase}: no fault was injected (the test proved nothing)")
            problems += check_phase(emu, ws, phase, expected, addresses)
        if creates(emu) != reference.creates:
            problems.append(
                f"successful creates {creates(emu)} differ from the reference's {reference.creates}"
            )
        return problems


def test_apply_and_destroy_converge_exactly_under_20_percent_transient_faults(
    reference: Reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sdcluster.retry.BACKOFF_SCALE", 0.1)
    with ThreadPoolExecutor(WORKERS) as pool:
        results = dict(zip(SEEDS, pool.map(lambda s: run_seed(s, tmp_path, reference), SEEDS), strict=True))
    report = [f"seed {seed}: {p}" for seed, problems in results.items() for p in problems]
    assert not report, "\n".join(report)


def test_a_token_endpoint_answering_503_is_transient_not_a_credentials_problem() -> None:
    """Impersonation mints tokens over HTTP; google-auth reports any failure there as a RefreshError."""
    from google.auth import exceptions as auth_exceptions

    from sdcluster.errors import PermissionDenied, TransientError, translate

    def refresh_error(code: int, status: str, message: str = "injected") -> Exception:
        body = json.dumps({"error": {"code": code, "message": message, "status": status}})
        return auth_exceptions.RefreshError("Unable to acquire impersonated credentials", body)  # type: ignore[no-untyped-call]

    assert isinstance(translate(refresh_error(503, "UNAVAILABLE")), TransientError)
    assert isinstance(translate(refresh_error(429, "RESOURCE_EXHAUSTED")), TransientError)
    # Not yet allowed (IAM propagation) stays a PermissionDenied: polled within the propagation deadline.
    denied = "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    assert isinstance(translate(refresh_error(403, "PERMISSION_DENIED", denied)), PermissionDenied)
