"""`sdcluster doctor`: a read-only preflight of the project through the same APIs apply uses (on the
emulator: Service Usage, Resource Manager's testIamPermissions, Compute Engine's quotas, machine
types, GPU types and networks), a checklist with the exact fix for each failure."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sdcluster
from sdcluster.ui.cli import app

from .helpers import SDCLUSTER_APIS

runner = CliRunner()


@pytest.fixture
def doctor(
    make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Any, Any]]:
    """``emu, result = doctor(knobs, *init_args)``: an emulator, `sdcluster init` there, then doctor."""

    def run(knobs: dict[str, Any], *init: str, user: str = "demo@example.com") -> tuple[Any, Any]:
        emu = make_emu(**knobs)
        monkeypatch.chdir(tmp_path)
        for k in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
            monkeypatch.delenv(k)
        monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
        r = runner.invoke(app, ["init", "--project", "demo-proj", "--user", user, "--force", *init])
        assert r.exit_code == 0, r.output
        emu.log.clear()
        return emu, runner.invoke(app, ["doctor"])

    return run


def test_doctor_on_a_new_project_says_what_apply_will_enable_and_changes_nothing(doctor: Any) -> None:
    emu, r = doctor({})
    assert r.exit_code == 0, r.output
    out = r.output
    assert "ok    credentials: user:demo@example.com (on the emulator at" in out
    assert (
        "warn  project demo-proj: not checked: the cloudresourcemanager.googleapis.com API is not enabled"
        in out
    )
    assert "ok    API storage.googleapis.com: enabled" in out
    assert "warn  API container.googleapis.com: not enabled: apply enables it first" in out
    # Compute is off: quotas are a new project's typical ones, and the doctor says so.
    assert "a new project's typical quota" in out
    assert emu.log.mutating() == []  # read-only


def test_doctor_names_each_failure_with_its_fix_and_plan_shows_the_same(doctor: Any) -> None:
    knobs = {"enabled_services": SDCLUSTER_APIS, "quotas": {"N2_CPUS": 2.0, "CPUS_ALL_REGIONS": 32.0}}
    emu, r = doctor(knobs, "--machine-type", "n2-standart-4")
    assert r.exit_code == 1, r.output
    assert "FAIL  machine type n2-standart-4 in us-central1-c: Compute Engine has no machine type" in r.output
    assert (
        "fix: set cluster.machine_type to one of: gcloud compute machine-types list --zones us-central1-c"
        in r.output
    )

    r = runner.invoke(app, ["--set", "cluster.machine_type=n2-standard-4", "doctor", "--json"])
    assert r.exit_code == 1
    rows = {row["check"]: row for row in json.loads(r.output)}
    quota = rows["quota N2_CPUS (us-central1)"]
    assert quota["status"] == "fail"
    assert (
        quota["detail"]
        == "needs 4 at creation, 8 at max_nodes; 2 of 2 free: GKE will refuse to create the nodes"
    )
    assert "request more N2_CPUS" in quota["fix"]
    assert rows["permissions"]["status"] == "ok" and rows["network default"]["status"] == "ok"
    assert (
        rows["project demo-proj"]["status"] == "ok" and rows["API container.googleapis.com"]["status"] == "ok"
    )
    assert emu.log.mutating() == []
    # plan shows the same finding, word for word.
    cfg = sdcluster.Config.load("sdcluster.toml", overrides={"cluster.machine_type": "n2-standard-4"})
    plan = sdcluster.plan(sdcluster.Workspace.open(cfg, emulator=emu.address))
    assert f"quota N2_CPUS (us-central1): {quota['detail']} ({quota['fix']})" in plan.warnings


def test_doctor_lists_the_permissions_apply_needs_and_lacks(doctor: Any) -> None:
    _emu, r = doctor({"enabled_services": SDCLUSTER_APIS}, user="nobody@example.com")
    assert r.exit_code == 1
    assert "FAIL  permissions: user:nobody@example.com lacks serviceusage.services.get," in r.output
    assert "resourcemanager.projects.setIamPolicy" in r.output


def test_doctor_checks_the_gpu_type_in_the_zone(doctor: Any) -> None:
    doctor({"enabled_services": SDCLUSTER_APIS})
    gpu = ["--set", "cluster.machine_type=n1-standard-4", "--set", "cluster.accelerator_type=nvidia-tesla-t4"]
    gpu += ["--set", "cluster.accelerator_count=1"]
    where = ["--set", "region=us-east1", "--set", "cluster.zone=us-east1-b"]
    rows = {
        row["check"]: row for row in json.loads(runner.invoke(app, [*gpu, *where, "doctor", "--json"]).output)
    }
    missing = rows["GPU type nvidia-tesla-t4 in us-east1-b"]
    assert (missing["status"], missing["detail"]) == (
        "fail",
        "zone us-east1-b offers no nvidia-tesla-t4 GPUs",
    )
    assert "gcloud compute accelerator-types list" in missing["fix"]
    rows = {row["check"]: row for row in json.loads(runner.invoke(app, [*gpu, "doctor", "--json"]).output)}
    assert rows["GPU type nvidia-tesla-t4 in us-central1-c"]["status"] == "ok"
    assert rows["quota GPUS_ALL_REGIONS (all regions)"]["status"] == "fail"  # a new project has none
