"""gcloud and sdcluster on one emulator: what gcloud made, sdcluster's plan sees (conflicts: they
exist with sdcluster's names but sdcluster did not make them, so apply takes them over only when
told to adopt), and gcloud describes what sdcluster's apply made."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdcluster
from sdcluster.errors import AdoptionRefused

from .conftest import OWNER, PROJECT, Gcloud

ZONE = "us-central1-c"


def test_plan_sees_what_gcloud_made_and_gcloud_describes_what_apply_made(
    gcloud: Gcloud, tmp_path: Path
) -> None:
    # gke-admin as sdcluster would name it, gke-node with gcloud's default (no display name).
    title = "GKE admin (sdcluster: creates the cluster)"
    gcloud("iam", "service-accounts", "create", "gke-admin", "--display-name", title)
    gcloud("iam", "service-accounts", "create", "gke-node")

    config = sdcluster.Config.build(project=PROJECT, user=OWNER, state={"path": str(tmp_path / "state.json")})
    ws = sdcluster.Workspace.open(config, emulator=gcloud.emu.address)
    plan = sdcluster.plan(ws)
    changes = {c.address: (c.action, c.adopt, c.conflict) for c in plan.changes}
    assert changes["iam.service_account.gke-admin"] == ("noop", True, True)  # adopted as it is, not created
    assert changes["iam.service_account.gke-node"] == ("update", True, True)  # its display name would change
    assert changes["gke.cluster.sd-cluster"] == ("create", False, False)

    with pytest.raises(AdoptionRefused):  # not sdcluster's: taken over only when told to
        sdcluster.apply(plan)
    sdcluster.apply(plan, adopt=True)
    described = gcloud("container", "clusters", "describe", "sd-cluster", "--zone", ZONE)
    assert described["status"] == "RUNNING"
    pool, system = described["nodePools"]
    assert pool["name"] == "sd-node-pool" and pool["config"]["spot"] is True
    assert pool["config"]["serviceAccount"] == f"gke-node@{PROJECT}.iam.gserviceaccount.com"
    # minNodeCount 0 is proto3's default: REST leaves it out.
    assert pool["autoscaling"] == {"enabled": True, "maxNodeCount": 2}
    assert system["name"] == "sd-system-pool" and system["config"]["machineType"] == "e2-medium"
    bound = gcloud(
        "iam", "service-accounts", "get-iam-policy", f"gke-admin@{PROJECT}.iam.gserviceaccount.com"
    )
    assert any(
        OWNER in b["members"]
        for b in bound["bindings"]
        if b["role"] == "roles/iam.serviceAccountTokenCreator"
    )
