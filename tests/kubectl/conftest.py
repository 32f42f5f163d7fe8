"""Real kubectl v1.37 against the emulated cluster, through the kubeconfig ``sdcluster kubeconfig``
writes: its user is Google's ``gke-gcloud-auth-plugin``, which asks gcloud for the token, and gcloud
reads it from ``CLOUDSDK_AUTH_ACCESS_TOKEN_FILE`` (``emulator:<member>``), as
``sdcluster emulator env`` sets it up.

Each module shares one emulator and one cluster that ``sdcluster apply`` made and ``upload-model``
gave a model (so TF Serving runs and its pod is ready); every kubectl call costs a gcloud start (the
plugin caches nothing for a token without an expiry), so tests are few and each asserts a lot.
gcloud is configured by what ``sdcluster emulator env`` prints (tests/gcloud/conftest.py), with a
token file per member. The
kubectl binary comes from ``kubectl_binary.py``; it, gcloud and the plugin missing fail the suite,
never skip it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ..gcloud.conftest import env_from_cli
from ..helpers import cloud_sdk_environ
from .kubectl_binary import KubectlUnavailable, ensure_kubectl

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
DEPLOYMENT = "stable-diffusion"
KNOBS: dict[str, Any] = {
    "operation_s": 0.1,
    "rollout_s": 0.1,
    "lb_s": 0.1,
    "kubelet_scale": 0.02,
    "tfserving_scale": 0.05,
    "model_load_s": 0.1,
}


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    missing = [t for t in ("gcloud", "gke-gcloud-auth-plugin") if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"Google's Cloud SDK tools are missing on this machine: {', '.join(missing)}", pytrace=False
        )
    try:
        return ensure_kubectl()
    except KubectlUnavailable as e:
        pytest.fail(f"kubectl v1.37 is not available: {e}", pytrace=False)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Kubectl:
    """kubectl with the cluster's kubeconfig, acting as ``member`` (a token file for gcloud)."""

    binary: Path
    home: Path
    kubeconfig: Path
    emu: Any
    workdir: Path
    env: dict[str, str]  # what `sdcluster emulator env` exports (the token file aside)
    tokens: dict[str, Path] = field(default_factory=dict)

    def environ(self, member: str = OWNER, **extra: str) -> dict[str, str]:
        sdk = cloud_sdk_environ(
            self.home, self.tokens, member, gcloud_config=self.home / "gcloud", kubeconfig=self.kubeconfig
        )
        return {**self.env, **sdk, **extra}

    def run(
        self, *args: str, ok: bool = True, stdin: str | None = None, member: str = OWNER, **env: str
    ) -> Result:
        argv = [str(self.binary), *args]
        out = subprocess.run(
            argv, env=self.environ(member, **env), input=stdin, capture_output=True, text=True, timeout=120
        )
        result = Result(out.returncode, out.stdout, out.stderr)
        if ok:
            assert out.returncode == 0, (
                f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}"
            )
        return result

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """The standard output of a command that must succeed."""
        return self.run(*args, stdin=stdin).stdout

    def fails(self, *args: str, stdin: str | None = None, member: str = OWNER) -> str:
        """The error output of a command that must fail."""
        result = self.run(*args, ok=False, stdin=stdin, member=member)
        assert result.returncode != 0, f"kubectl {' '.join(args)} unexpectedly succeeded:\n{result.stdout}"
        return result.stderr

    @contextlib.contextmanager
    def start(self, *args: str) -> Iterator[Stream]:
        """A long-running command (get -w, logs -f), stopped when the block ends."""
        stream = Stream([str(self.binary), *args], self.environ())
        try:
            yield stream
        finally:
            stream.stop()

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def sdcluster(self, *args: str) -> str:
        """``sdcluster ARGS`` on this cluster's configuration (the real CLI, in this process)."""
        return _cli(self.emu, self.workdir, *args)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


class Stream:
    """A long-running kubectl (get -w, logs -f): its output lines as they come, read by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, until: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
        """The lines so far, once ``until(lines)`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not until(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    stderr = (
                        self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
                    )
                    raise AssertionError(f"output not seen in time; so far:\n{''.join(self.lines)}{stderr}")
                self._changed.wait(min(left, 0.5))
            return list(self.lines)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _cli(emu: Any, workdir: Path, *args: str) -> str:
    from sdcluster.ui.cli import app

    result = CliRunner().invoke(
        app,
        ["--emulator", emu.address, "--config", str(workdir / "sdcluster.toml"), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, f"sdcluster {' '.join(args)} failed:\n{result.output}"
    return result.output


def start_cluster(binary: Path, workdir: Path) -> Iterator[Kubectl]:
    """An emulator, sdcluster's cluster applied on it with a model uploaded, and kubectl on it."""
    from sdcluster.emulator import Emulator
    from sdcluster.ui.demo import make_demo_model

    with Emulator(**KNOBS) as emu:
        (workdir / "sdcluster.toml").write_text(
            f'project = "{PROJECT}"\nuser = "{OWNER}"\n\n[state]\npath = "{workdir / "state.json"}"\n'
        )
        _cli(emu, workdir, "apply", "--auto-approve")
        _cli(
            emu, workdir, "upload-model", str(make_demo_model(workdir / "model", shards=1, shard_bytes=1024))
        )
        kubeconfig = workdir / "kubeconfig"
        _cli(emu, workdir, "kubeconfig", "--out", str(kubeconfig))
        home = workdir / "home"
        home.mkdir()
        env = env_from_cli(emu.address)
        assert env["CLOUDSDK_CORE_PROJECT"] == PROJECT
        yield Kubectl(binary, home, kubeconfig, emu, workdir, env)


@pytest.fixture(scope="module")
def kubectl(kubectl_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    yield from start_cluster(kubectl_bin, tmp_path_factory.mktemp("kubectl"))
