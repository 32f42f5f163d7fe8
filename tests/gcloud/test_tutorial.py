"""The tutorial's setup done by hand with gcloud, asserted through gcloud's own ``--format=json``.

The steps run in order against one emulator (a fresh project with Kubernetes Engine and Compute
Engine still off), each building on the previous one, as a user typing them would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import SDCLUSTER_APIS
from .conftest import OWNER, PROJECT, Gcloud, start_gcloud

ZONE = "us-central1-c"
ADMIN = f"gke-admin@{PROJECT}.iam.gserviceaccount.com"
NODE = f"gke-node@{PROJECT}.iam.gserviceaccount.com"
ALICE = "user:alice@example.com"
OFF_AT_START = ("container.googleapis.com", "compute.googleapis.com")


@pytest.fixture(scope="module")
def gcloud(gcloud_home: Path) -> Iterator[Gcloud]:
    services = [s for s in SDCLUSTER_APIS if s not in OFF_AT_START]
    yield from start_gcloud(gcloud_home, enabled_services=services)


def members(policy: dict[str, Any], role: str) -> list[str]:
    return next((b["members"] for b in policy.get("bindings", []) if b["role"] == role), [])


def test_services_enable_and_list(gcloud: Gcloud) -> None:
    err = gcloud.fails("container", "clusters", "list")
    assert "Kubernetes Engine API has not been used in project" in err
    gcloud("services", "enable", *OFF_AT_START)
    enabled = {s["config"]["name"] for s in gcloud("services", "list", "--enabled")}
    assert set(OFF_AT_START) <= enabled
    assert gcloud("container", "clusters", "list") == []


def test_service_accounts_create_list_describe_delete(gcloud: Gcloud) -> None:
    for account, title in [("gke-admin", "GKE admin"), ("gke-node", "GKE nodes"), ("scratch-sa", "scratch")]:
        made = gcloud("iam", "service-accounts", "create", account, "--display-name", title)
        assert made["email"] == f"{account}@{PROJECT}.iam.gserviceaccount.com"
    emails = {sa["email"] for sa in gcloud("iam", "service-accounts", "list")}
    assert {ADMIN, NODE} <= emails
    described = gcloud("iam", "service-accounts", "describe", ADMIN)
    assert (described["displayName"], described["projectId"]) == ("GKE admin", PROJECT)
    scratch = f"scratch-sa@{PROJECT}.iam.gserviceaccount.com"
    gcloud("iam", "service-accounts", "delete", scratch, "--quiet")
    assert "NOT_FOUND" in gcloud.fails("iam", "service-accounts", "describe", scratch)


def test_project_and_service_account_policy_bindings(gcloud: Gcloud) -> None:
    for member, role in [
        (f"serviceAccount:{ADMIN}", "roles/container.admin"),
        (f"serviceAccount:{NODE}", "roles/container.defaultNodeServiceAccount"),
    ]:
        gcloud("projects", "add-iam-policy-binding", PROJECT, "--member", member, "--role", role)
    policy = gcloud("projects", "get-iam-policy", PROJECT)
    assert members(policy, "roles/container.admin") == [f"serviceAccount:{ADMIN}"]
    assert members(policy, "roles/owner") == [OWNER]

    node_policy = gcloud(
        "iam", "service-accounts", "add-iam-policy-binding", NODE,
        "--member", f"serviceAccount:{ADMIN}", "--role", "roles/iam.serviceAccountUser",
    )  # fmt: skip
    assert members(node_policy, "roles/iam.serviceAccountUser") == [f"serviceAccount:{ADMIN}"]
    gcloud(
        "iam", "service-accounts", "add-iam-policy-binding", ADMIN,
        "--member", OWNER, "--role", "roles/iam.serviceAccountTokenCreator",
    )  # fmt: skip
    admin_policy = gcloud("iam", "service-accounts", "get-iam-policy", ADMIN)
    assert members(admin_policy, "roles/iam.serviceAccountTokenCreator") == [OWNER]
    # A member that does not exist is refused, as IAM refuses it.
    err = gcloud.fails(
        "projects", "add-iam-policy-binding", PROJECT,
        "--member", f"serviceAccount:ghost@{PROJECT}.iam.gserviceaccount.com", "--role", "roles/viewer",
    )  # fmt: skip
    assert "does not exist" in err


def test_impersonation_needs_the_token_creator_role(gcloud: Gcloud) -> None:
    assert gcloud("container", "clusters", "list", "--impersonate-service-account", ADMIN) == []
    err = gcloud.fails("container", "clusters", "list", "--impersonate-service-account", ADMIN, member=ALICE)
    assert "Failed to impersonate" in err


def test_cluster_create_list_describe_credentials_kubectl_delete(gcloud: Gcloud) -> None:
    (cluster,) = gcloud(
        "container", "clusters", "create", "sd-cluster", "--zone", ZONE,
        "--machine-type", "n2-standard-4", "--spot", "--num-nodes", "1",
        "--enable-autoscaling", "--min-nodes", "1", "--max-nodes", "2",
        "--service-account", NODE, "--workload-pool", f"{PROJECT}.svc.id.goog",
        "--impersonate-service-account", ADMIN,
    )  # fmt: skip
    assert (cluster["status"], cluster["location"]) == ("RUNNING", ZONE)
    assert [c["name"] for c in gcloud("container", "clusters", "list")] == ["sd-cluster"]

    described = gcloud("container", "clusters", "describe", "sd-cluster", "--zone", ZONE)
    (pool,) = described["nodePools"]
    assert pool["config"]["spot"] is True and pool["config"]["serviceAccount"] == NODE
    assert pool["config"]["machineType"] == "n2-standard-4"
    assert pool["autoscaling"] == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 2}
    assert described["workloadIdentityConfig"] == {"workloadPool": f"{PROJECT}.svc.id.goog"}
    pools = gcloud("container", "node-pools", "list", "--cluster", "sd-cluster", "--zone", ZONE)
    assert [(p["name"], p["status"]) for p in pools] == [("default-pool", "RUNNING")]

    # kubectl, authenticated by Google's gke-gcloud-auth-plugin (which asks gcloud for the token).
    gcloud.run("container", "clusters", "get-credentials", "sd-cluster", "--zone", ZONE)
    nodes = gcloud.run("get", "nodes", "-o", "json", tool="kubectl").json["items"]
    assert len(nodes) == 1 and nodes[0]["metadata"]["name"].startswith("gke-sd-cluster-default-pool-")

    gcloud("container", "clusters", "delete", "sd-cluster", "--zone", ZONE, "--quiet")
    assert gcloud("container", "clusters", "list") == []


def test_what_gcloud_sends_for_a_full_featured_cluster_is_accepted_and_echoed(gcloud: Gcloud) -> None:
    gcloud(
        "container", "clusters", "create", "full", "--zone", "us-central1-a", "--async",
        "--num-nodes", "1", "--machine-type", "e2-standard-4", "--disk-type", "pd-ssd", "--disk-size", "50",
        "--release-channel", "regular", "--enable-shielded-nodes", "--enable-ip-alias",
        "--logging", "SYSTEM,WORKLOAD", "--monitoring", "SYSTEM",
        "--addons", "HttpLoadBalancing,HorizontalPodAutoscaling", "--labels", "env=dev", "--tags", "web",
        "--node-labels", "role=sd", "--metadata", "disable-legacy-endpoints=true", "--max-pods-per-node", "64",
        "--workload-pool", f"{PROJECT}.svc.id.goog", "--workload-metadata", "GKE_METADATA",
        "--shielded-secure-boot", "--shielded-integrity-monitoring",
    )  # fmt: skip
    c = gcloud("container", "clusters", "describe", "full", "--zone", "us-central1-a")
    assert c["releaseChannel"] == {"channel": "REGULAR"} and c["shieldedNodes"] == {"enabled": True}
    assert c["ipAllocationPolicy"]["useIpAliases"] is True
    assert c["loggingConfig"]["componentConfig"]["enableComponents"] == ["SYSTEM_COMPONENTS", "WORKLOADS"]
    assert c["addonsConfig"]["kubernetesDashboard"] == {"disabled": True}
    assert c["resourceLabels"] == {"env": "dev"}
    config = c["nodePools"][0]["config"]
    assert (config["diskType"], config["diskSizeGb"], config["tags"]) == ("pd-ssd", 50, ["web"])
    assert config["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert config["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert c["nodePools"][0]["maxPodsConstraint"] == {"maxPodsPerNode": "64"}
