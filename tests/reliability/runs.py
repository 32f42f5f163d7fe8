"""Running the real ``sdcluster`` console script against an in-process emulator.

Example::

    ws = workspace(emu, tmp_path / "state.json")   # the same, through the library
    env = environment(emu)   # SDCLUSTER_EMULATOR=<emu.address>, no other SDCLUSTER_* variable
    assert cli(workdir, env, "plan", "--detailed-exitcode").returncode == 0
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sdcluster

from .worldview import PROJECT, USER

SDCLUSTER = str(Path(sys.executable).with_name("sdcluster"))
RUN_TIMEOUT_S = 120
# Short emulator delays (operations, rollout, load balancer) keep each apply to a couple of seconds.
KNOBS: dict[str, Any] = {"operation_s": 0.2, "rollout_s": 0.2, "lb_s": 0.2}


def workspace(emu: Any, state_path: Path) -> Any:
    """The library's workspace for the default config of the emulated project, state at ``state_path``."""
    config = sdcluster.Config.build(project=PROJECT, user=USER, state={"path": str(state_path)})
    return sdcluster.Workspace.open(config, emulator=emu.address)


def cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``sdcluster *args`` in ``workdir``, to completion, output captured."""
    return subprocess.run(
        [SDCLUSTER, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def environment(emu: Any) -> dict[str, str]:
    """This process's environment routed to ``emu``, without the caller's own SDCLUSTER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDCLUSTER_")}
    env["SDCLUSTER_EMULATOR"] = emu.address
    return env
