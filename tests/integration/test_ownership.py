"""What is ours, through the CLI against the emulator: a state acts only on the project it was made
for; only what sdcluster made is adopted silently, anything else with our names is a conflict the
plan shows and apply refuses until the user adopts it (``import`` for one, ``apply --adopt``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2
from typer.testing import CliRunner

import sdcluster
from sdcluster.errors import StateMismatch
from sdcluster.gcp.resources import iam as sd_iam
from sdcluster.ui.cli import app

from ..helpers import SDCLUSTER_APIS, factory

PROJECT, PROD = "demo-proj", "prod-proj"
USER = "user:demo@example.com"
STATE = Path(".sdcluster/state.json")
runner = CliRunner()


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
        monkeypatch.delenv(key)
    return tmp_path


def sd(emu: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, ["--emulator", emu.address, *args], env=env)
    # No traceback: the CLI ended with an exit code, never an uncaught exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def someone_elses_account(emu: Any, project: str, account: str) -> None:
    """A service account another team made (no sdcluster marker in its description)."""
    factory(emu).iam_admin().create_service_account(
        request=iam_admin_v1.CreateServiceAccountRequest(
            name=f"projects/{project}",
            account_id=account,
            service_account=iam_admin_v1.ServiceAccount(display_name="made by the platform team"),
        )
    )


def account(emu: Any, project: str, name: str) -> Any:
    return (
        factory(emu)
        .iam_admin()
        .get_service_account(
            name=f"projects/{project}/serviceAccounts/{name}@{project}.iam.gserviceaccount.com"
        )
    )


def test_a_state_of_one_project_never_acts_on_another(
    make_emu: Callable[..., Any], project_dir: Path
) -> None:
    emu = make_emu(extra_projects=[PROD], enabled_services=SDCLUSTER_APIS)  # another team uses IAM there
    assert sd(emu, "init", "--project", PROJECT, "--user", "demo@example.com").exit_code == 0
    applied = sd(emu, "apply", "-y")
    assert applied.exit_code == 0, applied.output
    for name in ("gke-admin", "gke-node"):
        someone_elses_account(emu, PROD, name)
    before = STATE.read_bytes()
    emu.log.clear()

    # The environment names another project than the state records: refused, nothing touched.
    for command in (["destroy", "-y"], ["apply", "-y"], ["plan"]):
        r = sd(emu, *command, env={"SDCLUSTER_PROJECT": PROD})
        assert r.exit_code == 1, r.output
        assert f"belongs to project {PROJECT}, but the configuration says project {PROD}" in r.output
        assert f"--state .sdcluster/{PROD}/state.json" in r.output
    # So does a configuration rewritten for the other project.
    assert sd(emu, "init", "--project", PROD, "--user", "demo@example.com", "--force").exit_code == 0
    r = sd(emu, "destroy", "-y")
    assert r.exit_code == 1 and f"belongs to project {PROJECT}" in r.output, r.output
    assert emu.log.mutating() == []
    assert STATE.read_bytes() == before
    assert account(emu, PROD, "gke-admin").display_name == "made by the platform team"
    clusters = emu.world.data["container"]["clusters"]
    assert [k.split("/")[1] for k in clusters] == [PROJECT]

    # A separate state for the other project: what exists there is someone else's, a conflict.
    other = ["--state", f".sdcluster/{PROD}/state.json"]
    r = sd(emu, *other, "apply", "-y")
    assert r.exit_code == 1, r.output
    assert "were not made by sdcluster" in r.output
    assert (
        f"sdcluster import iam.service_account.gke-admin gke-admin@{PROD}.iam.gserviceaccount.com" in r.output
    )
    assert emu.log.mutating() == []


def test_only_what_sdcluster_made_is_adopted_silently_the_rest_is_a_conflict(
    make_emu: Callable[..., Any], project_dir: Path
) -> None:
    emu = make_emu(enabled_services=SDCLUSTER_APIS)  # another team already uses the project
    assert sd(emu, "init", "--project", PROJECT, "--user", "demo@example.com").exit_code == 0
    # Another team's service account and bucket with our names, and a role they granted it.
    someone_elses_account(emu, PROJECT, "gke-admin")
    factory(emu).storage(PROJECT).create_bucket(f"{PROJECT}-bucket", location="us-central1")
    admin = f"serviceAccount:gke-admin@{PROJECT}.iam.gserviceaccount.com"
    rm = factory(emu).projects()
    policy = rm.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"))
    sd_iam.add_member(policy, "roles/container.admin", admin)
    rm.set_iam_policy(
        request=iam_policy_pb2.SetIamPolicyRequest(resource=f"projects/{PROJECT}", policy=policy)
    )
    conflicts = {
        "iam.service_account.gke-admin",
        f"storage.bucket.{PROJECT}-bucket",
        "iam.project_member.gke-admin/container.admin",
    }

    r = sd(emu, "plan", "--json")
    doc = json.loads(r.output)
    assert {c["address"] for c in doc["changes"] if c["conflict"]} == conflicts
    text = sd(emu, "plan").output
    assert "<! resource" in text and "is a CONFLICT" in text and "3 conflict(s)" in text, text

    emu.log.clear()
    r = sd(emu, "apply", "-y")
    assert r.exit_code == 1, r.output
    assert "3 resource(s) exist with sdcluster's names but were not made by sdcluster" in r.output
    assert "sdcluster import" in r.output and "sdcluster apply --adopt" in r.output
    assert emu.log.mutating() == []  # refused before any change
    assert account(emu, PROJECT, "gke-admin").display_name == "made by the platform team"

    # Adopting one: it is no conflict any more (and will be managed: its display name updated).
    r = sd(emu, "import", "iam.service_account.gke-admin", f"gke-admin@{PROJECT}.iam.gserviceaccount.com")
    assert r.exit_code == 0, r.output
    doc = json.loads(sd(emu, "plan", "--json").output)
    assert {c["address"] for c in doc["changes"] if c["conflict"]} == conflicts - {
        "iam.service_account.gke-admin"
    }

    r = sd(emu, "apply", "-y", "--adopt")
    assert r.exit_code == 0, r.output
    assert "GKE admin" in account(emu, PROJECT, "gke-admin").display_name

    # What sdcluster made and the state lost track of carries its mark: adopted silently.
    assert sd(emu, "state", "rm", "iam.service_account.gke-node").exit_code == 0
    doc = json.loads(sd(emu, "plan", "--json").output)
    node = next(c for c in doc["changes"] if c["address"] == "iam.service_account.gke-node")
    assert node["adopt"] and not node["conflict"]
    assert sd(emu, "apply", "-y").exit_code == 0
    # The bucket kept by destroy is taken back quietly by the next apply (it now has our labels).
    assert sd(emu, "destroy", "-y").exit_code == 0
    doc = json.loads(sd(emu, "plan", "--json").output)
    bucket = next(c for c in doc["changes"] if c["address"] == f"storage.bucket.{PROJECT}-bucket")
    assert not bucket["conflict"] and bucket["action"] == "noop"


def test_a_state_from_before_ids_named_their_project_is_migrated_and_still_checked(
    make_emu: Callable[..., Any], tmp_path: Path
) -> None:
    emu = make_emu(extra_projects=[PROD])
    config = sdcluster.Config.build(project=PROJECT, user=USER, state={"path": str(tmp_path / "state.json")})
    ws = sdcluster.Workspace.open(config, emulator=emu.address)
    sdcluster.apply(ws)
    path = tmp_path / "state.json"
    doc = json.loads(path.read_text())
    # What 0.1 wrote: no project; bare service names; Kubernetes objects without their cluster.
    del doc["project"]
    for record in doc["resources"].values():
        if record["type"] == "project.service":
            record["id"] = record["id"].rsplit("/", 1)[-1]
        elif record["type"].startswith("k8s."):
            record["id"] = record["id"].split("/clusters/sd-cluster/", 1)[1]
    # ... and long addresses: whole roles, whole members, "ksa." before a Kubernetes account.
    long = {}
    for address, record in doc["resources"].items():
        if record["type"] == "iam.project_member":
            long[address] = address.replace("/", "/roles/", 1)
        elif record["type"] == "iam.sa_member":
            _, role, member = record["id"].split(" ")
            long[address] = f"{address.split('/')[0]}/{role}/{member}"
        elif record["type"] == "storage.bucket_member":
            head, role, who = address.rsplit("/", 2)
            long[address] = f"{head}/roles/storage.{role}/ksa.{who}"
    assert len(long) >= 6, long
    doc["resources"] = {long.get(a, a): r for a, r in doc["resources"].items()}
    for record in doc["resources"].values():
        record["dependencies"] = [long.get(d, d) for d in record["dependencies"]]
    path.write_text(json.dumps(doc))

    assert not sdcluster.plan(ws).has_changes
    emu.log.clear()
    sdcluster.apply(ws)
    assert emu.log.mutating() == []
    migrated = json.loads(path.read_text())
    assert migrated["project"] == PROJECT
    # The records moved to this version's short addresses, and so did what depends on them.
    assert sorted(migrated["resources"]) == sorted(long.keys() | (doc["resources"].keys() - long.values()))
    assert "iam.sa_member.gke-node/iam.serviceAccountUser/gke-admin" in migrated["resources"]
    needed = {d for r in migrated["resources"].values() for d in r["dependencies"]}
    assert needed <= migrated["resources"].keys()
    ids = {a: r["id"] for a, r in migrated["resources"].items()}
    assert (
        ids["project.service.container.googleapis.com"]
        == f"projects/{PROJECT}/services/container.googleapis.com"
    )
    key = f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster"
    assert ids["k8s.deployment.default/stable-diffusion"] == f"{key}/Deployment/default/stable-diffusion"

    # An old state is bound to its project too (taken from its records' ids).
    path.write_text(json.dumps(doc))
    prod = sdcluster.Workspace.open(config.model_copy(update={"project": PROD}), emulator=emu.address)
    with pytest.raises(StateMismatch, match=f"belongs to project {PROJECT}"):
        sdcluster.plan(prod)
