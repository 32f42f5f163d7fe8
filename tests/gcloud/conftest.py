"""Google's own CLI against the emulator: gcloud (and kubectl through gke-gcloud-auth-plugin).

Each module shares one emulator (gcloud takes a second or two per call, so calls are few and each
asserts a lot). gcloud is configured only by what ``sdcluster emulator env`` prints, plus a
throwaway ``CLOUDSDK_CONFIG`` per test session and one token file per member
(``emulator:<member>``). The tools are installed on every machine of this project: a missing one
fails the suite, it never skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..helpers import SDCLUSTER_APIS, cloud_sdk_environ

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
TOOLS = ("gcloud", "kubectl", "gke-gcloud-auth-plugin")


@pytest.fixture(scope="session")
def gcloud_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway gcloud configuration directory for the whole test session."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"Google's Cloud SDK tools are missing on this machine: {', '.join(missing)}", pytrace=False
        )
    return tmp_path_factory.mktemp("cloudsdk")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout or "null")


@dataclass
class Gcloud:
    """Runs gcloud (or another tool) against one emulator, as ``member``."""

    emu: Any
    home: Path
    env: dict[str, str]
    tokens: dict[str, Path] = field(default_factory=dict)

    def environ(self, member: str) -> dict[str, str]:
        sdk = cloud_sdk_environ(
            self.home,
            self.tokens,
            member,
            gcloud_config=self.home / "config",
            kubeconfig=self.home / "kubeconfig",
        )
        return {**sdk, **self.env}

    def run(self, *args: str, member: str = OWNER, ok: bool = True, tool: str = "gcloud") -> Result:
        """``gcloud ARGS --format=json`` (for gcloud); ``ok`` asserts the exit code is 0."""
        argv = [tool, *args, *(["--format=json"] if tool == "gcloud" else [])]
        out = subprocess.run(argv, env=self.environ(member), capture_output=True, text=True, timeout=180)
        result = Result(out.returncode, out.stdout, out.stderr)
        if ok:
            assert out.returncode == 0, f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}"
        return result

    def __call__(self, *args: str, member: str = OWNER) -> Any:
        """The parsed ``--format=json`` output of a command that must succeed."""
        return self.run(*args, member=member).json

    def fails(self, *args: str, member: str = OWNER) -> str:
        """The error text of a command that must fail."""
        result = self.run(*args, member=member, ok=False)
        assert result.returncode != 0, f"gcloud {' '.join(args)} unexpectedly succeeded"
        return result.stderr


def env_from_cli(address: str) -> dict[str, str]:
    """The variables ``sdcluster emulator env`` exports (the token file line aside: tests keep
    their own per member)."""
    exe = str(Path(sys.executable).with_name("sdcluster"))
    out = subprocess.run(
        [exe, "--emulator", address, "emulator", "env"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE" not in line:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
    return env


def start_gcloud(home: Path, **knobs: Any) -> Iterator[Gcloud]:
    from sdcluster.emulator import Emulator

    knobs.setdefault("enabled_services", SDCLUSTER_APIS)
    knobs.setdefault("operation_s", 0.3)
    knobs.setdefault("rollout_s", 0.2)
    knobs.setdefault("lb_s", 0.2)
    with Emulator(**knobs) as emu:
        env = env_from_cli(emu.address)
        assert env["SDCLUSTER_EMULATOR"] == emu.address
        yield Gcloud(emu, home, env)


@pytest.fixture(scope="module")
def gcloud(gcloud_home: Path) -> Iterator[Gcloud]:
    """gcloud against a fresh emulator shared by the module (every API enabled)."""
    yield from start_gcloud(gcloud_home)
