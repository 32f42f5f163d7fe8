"""gcloud and sdcluster on one emulator: what gcloud made, sdcluster's plan sees (adopted: existing
resources the state does not record yet), and gcloud describes what sdcluster's apply made."""

from __future__ import annotations

from pathlib import Path

import sdcluster

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
    changes = {c.address: (c.action, c.adopt) for c in plan.changes}
    assert changes["iam.service_account.gke-admin"] == ("noop", True)  # adopted as it is, not created
    assert changes["iam.service_account.gke-node"] == ("update", True)  # adopted; its display name changes
    assert changes["gke.cluster.sd-cluster"] == ("create", False)

    sdcluster.apply(plan)
    described = gcloud("container", "clusters", "describe", "sd-cluster", "--zone", ZONE)
    assert described["status"] == "RUNNING"
    (pool,) = described["nodePools"]
    assert pool["name"] == "sd-node-pool" and pool["config"]["spot"] is True
    assert pool["config"]["serviceAccount"] == f"gke-node@{PROJECT}.iam.gserviceaccount.com"
    assert pool["autoscaling"] == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 2}
    bound = gcloud(
        "iam", "service-accounts", "get-iam-policy", f"gke-admin@{PROJECT}.iam.gserviceaccount.com"
    )
    assert any(
        OWNER in b["members"]
        for b in bound["bindings"]
        if b["role"] == "roles/iam.serviceAccountTokenCreator"
    )
