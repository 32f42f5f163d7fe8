"""The fault-injection knob: seeded, at the configured rate, with a realistic mix of codes."""

from __future__ import annotations

import grpc

from sdcluster.emulator.core import EmulatorError, Knobs, World


def outcomes(rate: float, seed: int, n: int = 4000) -> list[str]:
    world = World(Knobs(fault_rate=rate, seed=seed))
    out = []
    for _ in range(n):
        try:
            world.before_call()
            out.append("OK")
        except EmulatorError as e:
            out.append(e.code.name)
    return out


def test_fault_rate_within_tolerance_and_mix_of_codes() -> None:
    got = outcomes(0.2, seed=7)
    faults = [c for c in got if c != "OK"]
    assert abs(len(faults) / len(got) - 0.2) < 0.03
    share_429 = faults.count("RESOURCE_EXHAUSTED") / len(faults)
    assert 0.15 < share_429 < 0.35 and set(faults) == {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
    assert EmulatorError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x").http_status == 429


def test_faults_are_seeded_and_off_by_default() -> None:
    assert outcomes(0.2, seed=3, n=500) == outcomes(0.2, seed=3, n=500)
    assert outcomes(0.2, seed=3, n=500) != outcomes(0.2, seed=4, n=500)
    assert set(outcomes(0.0, seed=3, n=200)) == {"OK"}
