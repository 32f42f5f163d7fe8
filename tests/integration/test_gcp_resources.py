"""GCP resources against the emulator: official client libraries on both ends of real gRPC/HTTP.

"Another admin" is played through the emulator's official clients acting as the project owner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import Aborted
from google.cloud import container_v1
from google.iam.v1 import iam_policy_pb2

import sdcluster
from sdcluster.errors import ApplyError, PermissionDenied, QuotaExceeded
from sdcluster.gcp.resources import iam as sd_iam

from ..helpers import factory, with_apis

PROJECT = "demo-proj"
USER = "user:demo@example.com"
ADMIN = f"gke-admin@{PROJECT}.iam.gserviceaccount.com"
NODE = f"gke-node@{PROJECT}.iam.gserviceaccount.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
POOL = f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster/nodePools/sd-node-pool"


def project_policy(emu: Any) -> Any:
    return (
        factory(emu)
        .projects()
        .get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"))
    )


def edit_project_policy(emu: Any, fn: Callable[[Any], None]) -> None:
    """Another admin's read-modify-write, redone whole when sdcluster's own concurrent edits win the etag."""
    rm = factory(emu).projects()
    while True:
        pol = project_policy(emu)
        fn(pol)
        try:
            rm.set_iam_policy(
                request=iam_policy_pb2.SetIamPolicyRequest(resource=f"projects/{PROJECT}", policy=pol)
            )
            return
        except Aborted:
            continue


def mutating(emu: Any) -> list[tuple[str, str]]:
    return [(e.method, e.resource) for e in emu.log.mutating()]


def test_fresh_apply_then_noop_plan_and_zero_mutating_reapply(setup: Any) -> None:
    emu, ws = setup()
    state = sdcluster.apply(sdcluster.plan(ws))
    assert state.outputs["admin_service_account"] == ADMIN
    assert state.outputs["cluster_endpoint"].startswith("127.0.0.1:")
    assert state.outputs["bucket_url"] == f"gs://{PROJECT}-bucket"
    gke = factory(emu).cluster_manager()
    cluster = gke.get_cluster(name=f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster")
    # One shot: the serving pool and the system pool, no default pool.
    assert [p.name for p in cluster.node_pools] == ["sd-node-pool", "sd-system-pool"]
    system = cluster.node_pools[1]
    assert system.config.machine_type == "e2-medium" and system.autoscaling.max_node_count == 1
    pool = cluster.node_pools[0]
    assert (
        pool.config.spot
        and pool.config.service_account == NODE
        and pool.config.machine_type == "n2-standard-4"
    )
    assert (pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (0, 2)
    assert [m for m, _ in mutating(emu)].count("CreateCluster") == 1
    assert "DeleteNodePool" not in [m for m, _ in mutating(emu)]
    sa_policy = (
        factory(emu)
        .iam_admin()
        .get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}/serviceAccounts/{NODE}")
        )
    )
    assert sd_iam.has_member(sa_policy, "roles/iam.serviceAccountUser", f"serviceAccount:{ADMIN}")
    assert not sd_iam.has_member(
        project_policy(emu), "roles/iam.serviceAccountUser", f"serviceAccount:{ADMIN}"
    )

    emu.log.clear()
    again = sdcluster.plan(ws)
    assert {c.action for c in again.changes} == {"noop"}, str(again)
    sdcluster.apply(again)
    assert mutating(emu) == []
    assert state.to_json().count("emulator:") == 0  # no token in state


def test_other_members_of_our_roles_survive_apply_and_destroy(setup: Any) -> None:
    emu, ws = setup(
        knobs={"enabled_services": with_apis(RESOURCE_MANAGER)}
    )  # the test edits the policy first
    other = "user:colleague@example.com"
    edit_project_policy(emu, lambda p: sd_iam.add_member(p, "roles/container.admin", other))
    sdcluster.apply(sdcluster.plan(ws))
    pol = project_policy(emu)
    assert sd_iam.has_member(pol, "roles/container.admin", other)
    assert sd_iam.has_member(pol, "roles/container.admin", f"serviceAccount:{ADMIN}")
    state = sdcluster.destroy(ws)
    pol = project_policy(emu)
    assert sd_iam.has_member(pol, "roles/container.admin", other)
    assert not sd_iam.has_member(pol, "roles/container.admin", f"serviceAccount:{ADMIN}")
    assert sd_iam.has_member(pol, "roles/owner", USER)
    # The bucket is kept (and reported as such), everything else is gone.
    assert factory(emu).storage(PROJECT).lookup_bucket(f"{PROJECT}-bucket") is not None
    assert list(state.resources) == [f"storage.bucket.{PROJECT}-bucket"]  # kept: still ours to delete later


def test_concurrent_policy_change_is_retried_and_both_changes_survive(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, ws = setup(knobs={"enabled_services": with_apis(RESOURCE_MANAGER)})
    intruder = "user:racer@example.com"
    raced = []
    original = sd_iam.ProjectMember._get_policy

    def racing_read(self: Any, ctx: Any) -> Any:
        policy = original(self, ctx)
        if not raced:  # another admin writes between our read and our write, exactly once
            raced.append(True)
            edit_project_policy(emu, lambda p: sd_iam.add_member(p, "roles/viewer", intruder))
        return policy

    p = sdcluster.plan(ws)
    # Raced from apply on: the first read is then an edit's (a plan's reads never write).
    monkeypatch.setattr(sd_iam.ProjectMember, "_get_policy", racing_read)
    sdcluster.apply(p)
    codes = [
        e.code
        for e in emu.log.entries()
        if e.method == "SetIamPolicy" and e.resource == f"projects/{PROJECT}"
    ]
    assert "ABORTED" in codes  # a stale etag was rejected, then the whole RMW redone
    pol = project_policy(emu)
    assert sd_iam.has_member(pol, "roles/viewer", intruder)
    assert sd_iam.has_member(pol, "roles/container.admin", f"serviceAccount:{ADMIN}")


def test_iam_propagation_is_polled_not_slept(setup: Any) -> None:
    emu, ws = setup(knobs={"iam_propagation_s": 2.0})
    sdcluster.apply(sdcluster.plan(ws))
    tokens = [e.code for e in emu.log.entries() if e.method == "GenerateAccessToken"]
    # Denied while the token-creator binding propagated, then granted: polling, not a fixed sleep.
    assert tokens[0] == "PERMISSION_DENIED" and tokens[-1] == "OK"


def test_missing_act_as_is_a_clear_permission_error(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    _, ws2 = setup(cluster={"machine_type": "n2-standard-2"}, iam={"propagation_timeout_s": 2})
    ws2 = sdcluster.Workspace.open(ws2.config, emulator=emu.address)
    plan = sdcluster.plan(ws2)  # a pool replace; actAs is in place at plan time
    # ...then another admin removes gke-admin's actAs on gke-node before the apply.
    iam = factory(emu).iam_admin()
    res = f"projects/{PROJECT}/serviceAccounts/{NODE}"
    pol = iam.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=res))
    sd_iam.remove_member(pol, "roles/iam.serviceAccountUser", f"serviceAccount:{ADMIN}")
    iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=res, policy=pol))
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(plan)
    text = str(err.value)
    assert err.value.address == "gke.node_pool.sd-node-pool"
    assert isinstance(err.value.cause, PermissionDenied)
    assert "iam.serviceAccounts.actAs" in text and ADMIN in text and NODE in text
    assert "roles/iam.serviceAccountUser" in err.value.hint
    denied = [e for e in emu.log.entries() if e.method == "CreateNodePool" and e.code == "PERMISSION_DENIED"]
    assert denied and denied[0].caller == f"serviceAccount:{ADMIN}"


def test_quota_warning_for_max_nodes_and_failure_for_initial_nodes(setup: Any, tmp_path: Path) -> None:
    _emu, ws = setup(cluster={"max_nodes": 3})
    p = sdcluster.plan(ws)
    assert any("N2_CPUS" in w and "autoscaler cannot reach max_nodes" in w for w in p.warnings)
    sdcluster.apply(p)
    _emu2, ws2 = setup(
        cluster={"max_nodes": 3, "initial_nodes": 3, "min_nodes": 1},
        state={"path": str(tmp_path / "other.json")},
    )
    p2 = sdcluster.plan(ws2)
    assert any("N2_CPUS" in w and "GKE will refuse to create the nodes" in w for w in p2.warnings)
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(p2)
    assert isinstance(err.value.cause, QuotaExceeded)
    assert "N2_CPUS" in str(err.value) and "8" in str(err.value)
    assert "smaller machine type" in err.value.hint
    saved = ws2.backend.read()
    # The refused create stays recorded only as pending (written before the call); nothing exists,
    # so the next plan creates it again.
    assert saved is not None and saved.resources["gke.cluster.sd-cluster"].pending
    assert "iam.service_account.gke-admin" in saved.resources  # what was created is recorded
    again = sdcluster.plan(ws2)
    assert next(c for c in again.changes if c.address == "gke.cluster.sd-cluster").action == "create"


def test_drift_is_planned_attribute_by_attribute_and_restored(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    gke = factory(emu).cluster_manager()
    op = gke.set_node_pool_autoscaling(
        request=container_v1.SetNodePoolAutoscalingRequest(
            name=POOL,
            autoscaling=container_v1.NodePoolAutoscaling(enabled=True, min_node_count=0, max_node_count=5),
        )
    )
    edit_project_policy(
        emu, lambda p: sd_iam.remove_member(p, "roles/compute.viewer", f"serviceAccount:{ADMIN}")
    )
    _wait_op(gke, op)
    p = sdcluster.plan(ws)
    by = {c.address: c for c in p.changes}
    pool = by["gke.node_pool.sd-node-pool"]
    assert pool.action == "update" and [(d.path, d.before, d.after) for d in pool.diffs] == [
        ("max_nodes", 5, 2)
    ]
    assert by["iam.project_member.gke-admin/compute.viewer"].action == "create"
    sdcluster.apply(p)
    assert gke.get_node_pool(name=POOL).autoscaling.max_node_count == 2
    assert {c.action for c in sdcluster.plan(ws).changes} == {"noop"}


def test_deleted_service_account_bucket_and_pool_are_recreated(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    gke = factory(emu).cluster_manager()
    _wait_op(gke, gke.delete_node_pool(name=POOL))
    factory(emu).storage(PROJECT).get_bucket(f"{PROJECT}-bucket").delete()
    factory(emu).iam_admin().delete_service_account(name=f"projects/{PROJECT}/serviceAccounts/{NODE}")
    p = sdcluster.plan(ws)
    actions = {c.address: c.action for c in p.changes}
    assert actions["gke.node_pool.sd-node-pool"] == "create"
    assert actions[f"storage.bucket.{PROJECT}-bucket"] == "create"
    assert actions["iam.service_account.gke-node"] == "create"
    sdcluster.apply(p)
    assert {c.action for c in sdcluster.plan(ws).changes} == {"noop"}


def test_machine_type_change_replaces_the_pool_not_the_cluster(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    emu.log.clear()
    _, ws2 = setup(cluster={"machine_type": "n2-standard-2"})
    ws2 = sdcluster.Workspace.open(ws2.config, emulator=emu.address)
    p = sdcluster.plan(ws2)
    pool = next(c for c in p.changes if c.address == "gke.node_pool.sd-node-pool")
    assert pool.action == "replace" and pool.diffs[0].forces_replacement
    sdcluster.apply(p)
    methods = [m for m, _ in mutating(emu)]
    assert "CreateNodePool" in methods and "DeleteNodePool" in methods
    assert methods.index("CreateNodePool") < methods.index("DeleteNodePool")  # new pool first
    assert "DeleteCluster" not in methods and "CreateCluster" not in methods
    pools = (
        factory(emu)
        .cluster_manager()
        .list_node_pools(parent=f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster")
        .node_pools
    )
    assert [p.config.machine_type for p in pools if p.name != "sd-system-pool"] == ["n2-standard-2"]


def _wait_op(gke: Any, op: Any) -> None:
    import time

    name = f"projects/{PROJECT}/locations/us-central1-c/operations/{op.name}"
    for _ in range(200):
        if gke.get_operation(name=name).status == container_v1.Operation.Status.DONE:
            return
        time.sleep(0.05)
    raise AssertionError("operation did not finish")


def test_a_plan_reads_the_projects_quotas_once_for_both_node_pools(setup: Any) -> None:
    emu, ws = setup()
    emu.log.clear()
    plan = sdcluster.plan(ws)
    assert {c.address for c in plan.changes} >= {"gke.node_pool.sd-node-pool", "gke.node_pool.sd-system-pool"}
    reads = [e.method for e in emu.log.entries() if e.service == "compute"]
    assert reads.count("regions.get") == 1 and reads.count("projects.get") == 1, reads
    assert reads.count("machineTypes.get") == 2, reads  # each pool's own machine type
