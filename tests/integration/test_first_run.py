"""The first real run on a project as Google hands it over: a new project (only the default APIs on,
enabling that propagates), the project's real quotas, machine types and network, a create that
fails half-way in a zone out of capacity, and service accounts IAM Credentials does not know yet."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import container_v1

import sdcluster
from sdcluster.errors import ApplyError, ConfigError, QuotaExceeded

from ..helpers import SDCLUSTER_APIS, factory

PROJECT = "demo-proj"
ZONE = "us-central1-c"
KEY = f"projects/{PROJECT}/locations/{ZONE}/clusters/sd-cluster"


def quotas(**limits: float) -> dict[str, float]:
    """A new project's quotas with ``limits`` changed."""
    from sdcluster.emulator.core import Knobs

    return {**Knobs().quotas, **limits}


def clusters(emu: Any) -> list[Any]:
    gke = factory(emu).cluster_manager()
    return list(gke.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters)


# ---- 1. a new project ----------------------------------------------------------------------------


def test_plan_on_a_new_project_reads_what_it_can_and_apply_enables_first(setup: Any) -> None:
    # The default project is a new one; an enabled API answers SERVICE_DISABLED for 1.5 s more.
    emu, ws = setup(knobs={"service_enable_s": 1.5})
    plan = sdcluster.plan(ws)
    by_address = {c.address: c for c in plan.changes}
    cluster = by_address["gke.cluster.sd-cluster"]
    assert cluster.action == "create"
    assert "the container.googleapis.com API is not enabled yet; apply enables it first" in cluster.reason
    assert "iam.googleapis.com API is not enabled yet" in by_address["iam.service_account.gke-admin"].reason
    assert any("planned as absent" in w and "gke.cluster.sd-cluster" in w for w in plan.warnings)
    assert by_address["project.service.storage.googleapis.com"].action == "noop"  # on in a new project

    state = sdcluster.apply(plan)
    assert "gke.cluster.sd-cluster" in state.resources and state.outputs.get("endpoint")
    # Apply waited for the enabling to propagate: GKE said SERVICE_DISABLED, then served.
    codes = [e.code for e in emu.log.entries() if e.service == "container"]
    assert codes[0] == "PERMISSION_DENIED" and "OK" in codes
    # And the next plan reads everything: nothing to do.
    assert sdcluster.plan(ws).counts() == {"import": 0, "add": 0, "change": 0, "destroy": 0}


# ---- 2. real quotas, machine types and networks ---------------------------------------------------


def test_plan_checks_the_projects_own_quotas_with_their_usage(setup: Any) -> None:
    # 12 N2 vCPUs, 8 of them already used elsewhere in the region: room for one n2-standard-4.
    emu, ws = setup(knobs={"enabled_services": SDCLUSTER_APIS, "quotas": quotas(N2_CPUS=12.0)})
    gke = factory(emu).cluster_manager()
    pool = {"name": "p", "initial_node_count": 2, "config": {"machine_type": "n2-standard-4"}}
    gke.create_cluster(
        parent=f"projects/{PROJECT}/locations/us-central1-a", cluster={"name": "other", "node_pools": [pool]}
    )
    plan = sdcluster.plan(ws)
    assert any(
        "quota N2_CPUS (us-central1): needs 4 at creation, 8 at max_nodes; 4 of 12 free: the autoscaler "
        "cannot reach max_nodes" in w
        for w in plan.warnings
    ), plan.warnings


def test_a_mistyped_machine_type_fails_at_plan_with_the_list_command(setup: Any) -> None:
    _emu, ws = setup(knobs={"enabled_services": SDCLUSTER_APIS}, cluster={"machine_type": "n2-standart-4"})
    with pytest.raises(ConfigError) as err:
        sdcluster.plan(ws)
    assert "machine type n2-standart-4 in us-central1-c" in str(err.value)
    assert "gcloud compute machine-types list --zones us-central1-c" in err.value.hint


def test_a_project_without_the_default_network_gets_a_clear_error(setup: Any) -> None:
    _emu, ws = setup(knobs={"enabled_services": SDCLUSTER_APIS, "default_network": False})
    with pytest.raises(ConfigError) as err:
        sdcluster.plan(ws)
    assert "has no VPC network 'default'" in str(err.value)
    assert "compute.skipDefaultNetworkCreation" in str(err.value)
    assert "cluster.network" in err.value.hint and "gcloud compute networks create" in err.value.hint


def test_a_subnetwork_the_network_lacks_fails_at_plan(setup: Any) -> None:
    _emu, ws = setup(knobs={"enabled_services": SDCLUSTER_APIS}, cluster={"subnetwork": "nope"})
    with pytest.raises(ConfigError, match="has no subnetwork 'nope' in us-central1"):
        sdcluster.plan(ws)


def test_gkes_quota_403_is_a_quota_error_not_an_iam_wait(setup: Any) -> None:
    # The plan warned (from the real quota); apply goes on and GKE refuses with its 403 at once,
    # while this run's bindings are still "propagating": no 7-minute wait blamed on roles.
    _emu, ws = setup(knobs={"quotas": quotas(N2_CPUS=2.0)})
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(sdcluster.plan(ws))
    cause = err.value.cause
    assert isinstance(cause, QuotaExceeded), cause
    assert (
        "quota N2_CPUS exceeded in the region: the cluster needs 4.0, 2.0 of the limit 2.0 are free"
        in str(cause)
    )
    assert "cluster.machine_type" in cause.hint and "N2_CPUS" in cause.hint


# ---- 4. a create that fails half-way -------------------------------------------------------------


def test_a_zone_out_of_capacity_is_recorded_explained_and_destroyed(setup: Any) -> None:
    emu, ws = setup(knobs={"stockout_zones": [ZONE]})
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(sdcluster.plan(ws))
    assert err.value.address == "gke.cluster.sd-cluster"
    text = str(err.value)
    assert "zone us-central1-c has no capacity for Spot n2-standard-4 nodes" in text
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in text and "left in ERROR" in text
    assert "cluster.zone = us-central1-a / us-central1-b / us-central1-f" in err.value.hint
    # The broken cluster is GKE's and billing: the state records it, so destroy deletes it.
    (cluster,) = clusters(emu)
    assert cluster.status == container_v1.Cluster.Status.ERROR
    saved = ws.backend.read()
    assert saved is not None and saved.resources["gke.cluster.sd-cluster"].id == KEY
    sdcluster.destroy(ws)
    assert clusters(emu) == []


# ---- 5. service accounts IAM Credentials does not know yet ----------------------------------------


def test_a_just_created_admin_account_is_waited_for_not_blamed_on_the_login(setup: Any) -> None:
    # IAM Credentials answers 404 "Gaia id not found" for 1.5 s after the account's creation.
    emu, ws = setup(knobs={"enabled_services": SDCLUSTER_APIS, "token_propagation_s": 1.5})
    state = sdcluster.apply(sdcluster.plan(ws))
    assert "gke.cluster.sd-cluster" in state.resources
    tokens = [e.code for e in emu.log.entries() if e.method == "GenerateAccessToken"]
    assert "NOT_FOUND" in tokens and tokens[-1] == "OK"
