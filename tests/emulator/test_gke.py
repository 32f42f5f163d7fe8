"""The emulated GKE ClusterManager, driven through the official ``ClusterManagerClient``.

The Kubernetes side is replaced by a small recording hub (``RecordingHub``) so these tests check
GKE's half of the contract: what it asks the hub to start, update and stop, and what it returns.
Service accounts are created through the official IAM client; bindings are written with
``world.set_policy`` (the project's IAM is tested in its own file).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import container_v1

from sdcluster.emulator import Emulator, kube
from sdcluster.emulator import gke as gke_emulator

from ..helpers import SDCLUSTER_APIS, factory

PROJECT = "demo-proj"
ZONE = "us-central1-c"
PARENT = f"projects/{PROJECT}/locations/{ZONE}"
NODE_SA = f"gke-node@{PROJECT}.iam.gserviceaccount.com"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


class RecordingHub:
    """Stands in for the Kubernetes hub: hands out endpoints and records every call."""

    ports = 40000  # every start gets a new port, as a restarted API server would

    def __init__(self, world: Any) -> None:
        self.world = world
        self.calls: list[tuple[str, str, Any]] = []
        self.port = 0

    def start_cluster(self, key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        RecordingHub.ports += 1
        self.port = RecordingHub.ports
        self.calls.append(("start", key, nodes))
        return f"127.0.0.1:{self.port}", CA_PEM

    def update_nodes(self, key: str, nodes: list[dict[str, Any]]) -> None:
        self.calls.append(("update", key, nodes))

    def stop_cluster(self, key: str) -> None:
        self.calls.append(("stop", key, None))

    def prepare(self) -> None:
        pass  # nothing to load ahead of a cluster's first request

    def resume(self) -> None:
        self.calls.append(("resume", "", None))
        gke_emulator.resume_clusters(self.world)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def recording_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "Hub", RecordingHub)


@pytest.fixture
def emu(make_emu: Callable[..., Any]) -> Any:
    return make_emu(operation_s=0.2)


def client(emu: Any, member: str | None = None) -> container_v1.ClusterManagerClient:
    return factory(emu, member).cluster_manager()


def wait(
    gke: container_v1.ClusterManagerClient, op: container_v1.Operation, timeout: float = 10.0
) -> set[str]:
    """Poll the operation until DONE; return the statuses seen on the way."""
    name = f"projects/{PROJECT}/locations/{op.location}/operations/{op.name}"
    seen = {op.status.name}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = gke.get_operation(name=name)
        seen.add(op.status.name)
        if op.status == container_v1.Operation.Status.DONE:
            assert not op.error.message, op.error.message
            return seen
        time.sleep(0.01)
    raise AssertionError(f"operation {name} still {op.status.name}")


def make_sa(emu: Any, account_id: str = "gke-node") -> str:
    sa = factory(emu).iam_admin().create_service_account(name=f"projects/{PROJECT}", account_id=account_id)
    return str(sa.email)


def grant(emu: Any, resource: str, role: str, member: str) -> None:
    world = emu.world
    bindings = [*world.policy(resource)["bindings"], {"role": role, "members": [member]}]
    world.set_policy(resource, bindings, etag=b"")


def pool_spec(
    name: str = "sd-node-pool", machine: str = "n2-standard-4", count: int = 1, **config: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "initial_node_count": count,
        "config": {"machine_type": machine, "service_account": NODE_SA, **config},
    }


def create(
    gke: container_v1.ClusterManagerClient, name: str = "sd-cluster", location: str = ZONE, **cluster: Any
) -> Any:
    cluster.setdefault("initial_node_count", 1)
    return gke.create_cluster(
        parent=f"projects/{PROJECT}/locations/{location}", cluster={"name": name, **cluster}
    )


def cluster_name(name: str = "sd-cluster", location: str = ZONE) -> str:
    return f"projects/{PROJECT}/locations/{location}/clusters/{name}"


def hub(emu: Any) -> RecordingHub:
    assert isinstance(emu.world.kube, RecordingHub)
    return emu.world.kube


# ---- lifecycle ----------------------------------------------------------------------------------


def test_create_cluster_runs_its_operation_and_starts_the_kubernetes_api(
    make_emu: Callable[..., Any],
) -> None:
    emu = make_emu(operation_s=1.0)
    make_sa(emu)
    gke = client(emu)
    spec = pool_spec(
        spot=True,
        disk_size_gb=50,
        labels={"app": "sd"},
        oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    spec["autoscaling"] = {"enabled": True, "min_node_count": 1, "max_node_count": 2}
    op = create(
        gke,
        initial_node_count=0,
        node_pools=[spec],
        workload_identity_config={"workload_pool": f"{PROJECT}.svc.id.goog"},
    )

    assert re.fullmatch(r"operation-\d+-[0-9a-f]+", op.name)
    assert op.operation_type == container_v1.Operation.Type.CREATE_CLUSTER
    assert op.target_link.endswith(f"/zones/{ZONE}/clusters/sd-cluster")
    assert op.self_link.endswith(f"/zones/{ZONE}/operations/{op.name}")
    assert gke.get_cluster(name=cluster_name()).status == container_v1.Cluster.Status.PROVISIONING
    assert wait(gke, op) == {"PENDING", "RUNNING", "DONE"}

    cluster = gke.get_cluster(name=cluster_name())
    assert cluster.status == container_v1.Cluster.Status.RUNNING
    assert cluster.endpoint.startswith("127.0.0.1:")
    assert base64.b64decode(cluster.master_auth.cluster_ca_certificate).decode() == CA_PEM
    assert cluster.current_master_version and cluster.create_time and cluster.location == ZONE
    assert cluster.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    (pool,) = cluster.node_pools
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert (pool.config.machine_type, pool.config.spot, pool.config.disk_size_gb) == (
        "n2-standard-4",
        True,
        50,
    )
    assert pool.config.service_account == NODE_SA and dict(pool.config.labels) == {"app": "sd"}
    assert list(pool.config.oauth_scopes) == ["https://www.googleapis.com/auth/cloud-platform"]
    assert (pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (1, 2)
    assert pool.instance_group_urls and cluster.current_node_count == 1

    (call,) = [c for c in hub(emu).calls if c[0] == "start"]
    assert call[1] == cluster_name()
    assert call[2][0] | {"cpus": 4, "memory_mib": 16384, "node_count": 1, "spot": True} == call[2][0]


def test_duplicate_names_and_concurrent_operations_are_refused(emu: Any) -> None:
    gke = client(emu)
    op = create(gke)
    with pytest.raises(exceptions.AlreadyExists, match="Already exists"):
        create(gke)
    with pytest.raises(
        exceptions.FailedPrecondition, match=f"Cluster is running incompatible operation {op.name}"
    ):
        gke.delete_cluster(name=cluster_name())
    wait(gke, op)
    op = gke.create_node_pool(parent=cluster_name(), node_pool={"name": "second", "initial_node_count": 1})
    with pytest.raises(exceptions.FailedPrecondition, match="incompatible operation"):
        gke.set_node_pool_size(request={"name": f"{cluster_name()}/nodePools/default-pool", "node_count": 2})
    wait(gke, op)
    with pytest.raises(exceptions.AlreadyExists):
        gke.create_node_pool(parent=cluster_name(), node_pool={"name": "second", "initial_node_count": 1})


def test_unknown_cluster_location_and_machine_are_rejected(emu: Any) -> None:
    gke = client(emu)
    with pytest.raises(exceptions.NotFound, match=f"Not found: {cluster_name()}"):
        gke.get_cluster(name=cluster_name())
    with pytest.raises(exceptions.InvalidArgument, match="us-central1-z"):
        create(gke, location="us-central1-z")
    with pytest.raises(exceptions.InvalidArgument, match="n9-standard-4"):
        create(gke, node_config={"machine_type": "n9-standard-4"})
    with pytest.raises(exceptions.InvalidArgument, match="Spot"):
        create(gke, node_config={"spot": True, "preemptible": True})
    with pytest.raises(exceptions.InvalidArgument, match="Sd_Cluster"):
        create(gke, name="Sd_Cluster")
    assert emu.log.mutating() == []


def test_a_control_plane_that_fails_to_start_leaves_the_cluster_in_error(emu: Any) -> None:
    def broken(key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        raise OSError("no free port")

    hub(emu).start_cluster = broken  # type: ignore[method-assign]
    gke = client(emu)
    op = create(gke)
    with pytest.raises(AssertionError, match="no free port"):
        wait(gke, op)
    cluster = gke.get_cluster(name=cluster_name())
    assert cluster.status == container_v1.Cluster.Status.ERROR and "no free port" in cluster.status_message
    wait(gke, gke.delete_cluster(name=cluster_name()))  # a broken cluster can still be deleted


def test_a_zone_out_of_capacity_fails_the_create_and_leaves_the_cluster_in_error(
    make_emu: Callable[..., Any],
) -> None:
    emu = make_emu(operation_s=0.2, stockout_zones=[ZONE])
    make_sa(emu)
    gke = client(emu)
    op = create(gke, initial_node_count=0, node_pools=[pool_spec()])
    message = (
        "Try a different location, or try again later: Google Compute Engine does not have enough "
        f"resources available to fulfill request: {ZONE}."
    )
    with pytest.raises(AssertionError, match=re.escape(message)):
        wait(gke, op)
    done = gke.get_operation(name=f"projects/{PROJECT}/locations/{ZONE}/operations/{op.name}")
    assert done.status_message == message
    assert [c.code for c in done.cluster_conditions] == [container_v1.StatusCondition.Code.GCE_STOCKOUT]
    cluster = gke.get_cluster(name=cluster_name())
    assert cluster.status == container_v1.Cluster.Status.ERROR and cluster.current_node_count == 0
    assert cluster.status_message == message
    assert [c for c in hub(emu).calls if c[0] != "resume"] == []  # no control plane, no nodes
    wait(gke, gke.delete_cluster(name=cluster_name()))  # its owner still has to delete it
    # Another zone of the region has capacity.
    wait(gke, create(gke, location="us-central1-a", initial_node_count=0, node_pools=[pool_spec()]))


def test_legacy_project_zone_fields_address_the_same_cluster(emu: Any) -> None:
    gke = client(emu)
    wait(
        gke,
        gke.create_cluster(
            project_id=PROJECT, zone=ZONE, cluster={"name": "legacy", "initial_node_count": 1}
        ),
    )
    got = gke.get_cluster(project_id=PROJECT, zone=ZONE, cluster_id="legacy")
    assert got.self_link.endswith("/zones/us-central1-c/clusters/legacy")
    assert [c.name for c in gke.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters] == [
        "legacy"
    ]


# ---- identity: node service account and actAs ------------------------------------------------------


def test_node_service_account_must_exist(emu: Any) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=f'Service account "{NODE_SA}" does not exist'):
        create(client(emu), initial_node_count=0, node_pools=[pool_spec(machine="e2-medium")])


def test_a_just_created_node_service_account_is_not_usable_yet(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(operation_s=0.2, sa_propagation_s=30)
    make_sa(emu)
    with pytest.raises(exceptions.InvalidArgument, match="does not exist"):
        create(client(emu), initial_node_count=0, node_pools=[pool_spec(machine="e2-medium")])


def test_caller_needs_act_as_on_the_node_service_account(emu: Any) -> None:
    make_sa(emu)
    admin = f"serviceAccount:{make_sa(emu, 'gke-admin')}"
    grant(emu, f"projects/{PROJECT}", "roles/container.admin", admin)
    gke = client(emu, admin)
    with pytest.raises(exceptions.PermissionDenied) as err:
        create(gke, initial_node_count=0, node_pools=[pool_spec(machine="e2-medium")])
    assert err.value.message == (
        f'The user does not have access to service account "{NODE_SA}". Ask a project owner to grant you '
        "the iam.serviceAccountUser role on the service account."
    )
    grant(emu, f"projects/{PROJECT}/serviceAccounts/{NODE_SA}", "roles/iam.serviceAccountUser", admin)
    wait(gke, create(gke, initial_node_count=0, node_pools=[pool_spec(machine="e2-medium")]))


def test_callers_without_container_permissions_are_denied(emu: Any) -> None:
    gke = client(emu, "user:stranger@example.com")
    with pytest.raises(exceptions.PermissionDenied, match=r"container\.clusters\.create"):
        create(gke)
    with pytest.raises(exceptions.PermissionDenied, match=r"container\.clusters\.list"):
        gke.list_clusters(parent=PARENT)
    emu.world.project(PROJECT)["enabled_services"].remove("container.googleapis.com")
    with pytest.raises(exceptions.PermissionDenied, match="Kubernetes Engine API has not been used") as err:
        client(emu).list_clusters(parent=PARENT)
    assert err.value.reason == "SERVICE_DISABLED"


# ---- regional clusters and quota -------------------------------------------------------------------


def test_regional_cluster_runs_each_pool_in_three_zones(emu: Any) -> None:
    gke = client(emu)
    wait(gke, create(gke, location="us-central1", node_config={"machine_type": "e2-medium"}))
    cluster = gke.get_cluster(name=cluster_name(location="us-central1"))
    assert len(cluster.locations) == 3 and cluster.current_node_count == 3
    assert cluster.self_link.endswith("/locations/us-central1/clusters/sd-cluster")
    # One n2-standard-4 per zone is 12 vCPUs: over the 8 N2 vCPUs a new project has in a region.
    # GKE answers a shortfall with 403, worded as in googlecodelabs/feedback#950.
    with pytest.raises(
        exceptions.PermissionDenied,
        match=re.escape(
            "Insufficient regional quota to satisfy request: resource \"N2_CPUS\": request requires '12.0' "
            "and is short '4.0'. project has a quota of '8.0' with '8.0' available. View and manage quotas at "
            "https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=demo-proj."
        ),
    ):
        big = {"name": "big", "initial_node_count": 1, "config": {"machine_type": "n2-standard-4"}}
        gke.create_node_pool(parent=cluster_name(location="us-central1"), node_pool=big)


def test_cpu_quota_counts_the_nodes_that_would_run(emu: Any) -> None:
    make_sa(emu)
    gke = client(emu)
    with pytest.raises(exceptions.PermissionDenied) as err:
        create(gke, initial_node_count=0, node_pools=[pool_spec(count=3)])
    assert err.value.message.startswith(
        "Insufficient regional quota to satisfy request: resource \"N2_CPUS\": request requires '12.0' and "
        "is short '4.0'. project has a quota of '8.0' with '8.0' available."
    )
    # An autoscaling maximum above quota is accepted: only the initial node runs.
    scaled = pool_spec(count=1) | {"autoscaling": {"enabled": True, "min_node_count": 1, "max_node_count": 3}}
    wait(gke, create(gke, initial_node_count=0, node_pools=[scaled]))
    # Another cluster in the same region shares the quota (4 + 8 > 8) ...
    with pytest.raises(exceptions.PermissionDenied, match=re.escape("with '4.0' available")):
        create(
            gke, name="other", location="us-central1-a", initial_node_count=0, node_pools=[pool_spec(count=2)]
        )
    # ... a cluster in another region does not.
    wait(
        gke,
        create(
            gke,
            name="other",
            location="europe-west4-a",
            initial_node_count=0,
            node_pools=[pool_spec(count=2)],
        ),
    )


def test_gpus_need_quota_and_a_matching_machine_and_zone(emu: Any) -> None:
    make_sa(emu)
    gke = client(emu)
    t4 = {"accelerators": [{"accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}]}
    with pytest.raises(exceptions.InvalidArgument, match="n2-standard-4"):
        create(gke, initial_node_count=0, node_pools=[pool_spec(**t4)])
    with pytest.raises(exceptions.InvalidArgument, match="us-east1-b"):
        create(
            gke,
            location="us-east1-b",
            initial_node_count=0,
            node_pools=[pool_spec(machine="n1-standard-4", **t4)],
        )
    with pytest.raises(exceptions.PermissionDenied) as err:
        create(gke, initial_node_count=0, node_pools=[pool_spec(machine="n1-standard-4", **t4)])
    assert err.value.message.startswith(
        'Insufficient project quota to satisfy request: resource "GPUS_ALL_REGIONS": request requires '
        "'1.0' and is short '1.0'. project has a quota of '0.0' with '0.0' available."
    )

    emu.world.project(PROJECT)["quotas"]["GPUS_ALL_REGIONS"] = 1.0
    driver = {"gpu_driver_installation_config": {"gpu_driver_version": "LATEST"}}
    t4["accelerators"][0] |= driver
    wait(gke, create(gke, initial_node_count=0, node_pools=[pool_spec(machine="n1-standard-4", **t4)]))
    (acc,) = gke.get_cluster(name=cluster_name()).node_pools[0].config.accelerators
    assert acc.gpu_driver_installation_config.gpu_driver_version.name == "LATEST"
    assert hub(emu).calls[-1][2][0]["accelerators"] == 1


# ---- node pool updates -------------------------------------------------------------------------------


def test_resize_autoscaling_and_update_change_the_running_nodes(emu: Any) -> None:
    make_sa(emu)
    gke = client(emu)
    wait(gke, create(gke, initial_node_count=0, node_pools=[pool_spec()]))
    pool = f"{cluster_name()}/nodePools/sd-node-pool"

    op = gke.set_node_pool_size(request={"name": pool, "node_count": 2})
    assert op.operation_type == container_v1.Operation.Type.SET_NODE_POOL_SIZE
    wait(gke, op)
    assert gke.get_cluster(name=cluster_name()).current_node_count == 2
    assert (
        hub(emu).calls[-1][0:2] == ("update", cluster_name()) and hub(emu).calls[-1][2][0]["node_count"] == 2
    )
    with pytest.raises(exceptions.PermissionDenied, match='resource "N2_CPUS"'):
        gke.set_node_pool_size(request={"name": pool, "node_count": 3})

    autoscaling = container_v1.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=1)
    wait(gke, gke.set_node_pool_autoscaling(request={"name": pool, "autoscaling": autoscaling}))
    assert gke.get_node_pool(name=pool).autoscaling.max_node_count == 1
    assert gke.get_cluster(name=cluster_name()).current_node_count == 1
    with pytest.raises(exceptions.InvalidArgument):
        bad = {"enabled": True, "min_node_count": 3, "max_node_count": 2}
        gke.set_node_pool_autoscaling(request={"name": pool, "autoscaling": bad})

    labels = container_v1.NodeLabels(labels={"tier": "gpu"})
    wait(gke, gke.update_node_pool(request={"name": pool, "machine_type": "n2-standard-8", "labels": labels}))
    got = gke.get_node_pool(name=pool)
    assert (got.config.machine_type, dict(got.config.labels)) == ("n2-standard-8", {"tier": "gpu"})
    assert got.config.service_account == NODE_SA  # fields not in the update are kept


def test_deleted_node_pools_and_clusters_are_gone(emu: Any) -> None:
    gke = client(emu)
    wait(
        gke,
        create(
            gke,
            node_pools=[{"name": "a", "initial_node_count": 1}, {"name": "b", "initial_node_count": 1}],
            initial_node_count=0,
        ),
    )
    op = gke.delete_node_pool(name=f"{cluster_name()}/nodePools/a")
    assert (
        gke.get_node_pool(name=f"{cluster_name()}/nodePools/a").status
        == container_v1.NodePool.Status.STOPPING
    )
    wait(gke, op)
    with pytest.raises(exceptions.NotFound):
        gke.get_node_pool(name=f"{cluster_name()}/nodePools/a")
    assert [p.name for p in gke.list_node_pools(parent=cluster_name()).node_pools] == ["b"]

    op = gke.delete_cluster(name=cluster_name())
    assert gke.get_cluster(name=cluster_name()).status == container_v1.Cluster.Status.STOPPING
    wait(gke, op)
    with pytest.raises(exceptions.NotFound):
        gke.get_cluster(name=cluster_name())
    assert hub(emu).calls[-1] == ("stop", cluster_name(), None)
    kinds = [o.operation_type.name for o in gke.list_operations(parent=PARENT).operations]
    assert kinds == ["CREATE_CLUSTER", "DELETE_NODE_POOL", "DELETE_CLUSTER"]


def test_tutorial_sequence_replaces_the_default_pool(emu: Any) -> None:
    """The tutorial: cluster with a default pool, delete it, then add the Spot pool."""
    make_sa(emu)
    gke = client(emu)
    wait(gke, create(gke, initial_node_count=1))
    wait(gke, gke.delete_node_pool(name=f"{cluster_name()}/nodePools/default-pool"))
    spec = pool_spec(spot=True) | {"autoscaling": {"enabled": True, "min_node_count": 1, "max_node_count": 2}}
    op = gke.create_node_pool(parent=cluster_name(), node_pool=spec)
    assert op.operation_type == container_v1.Operation.Type.CREATE_NODE_POOL
    wait(gke, op)
    cluster = gke.get_cluster(name=cluster_name())
    assert [p.name for p in cluster.node_pools] == ["sd-node-pool"]
    assert cluster.current_node_count == 1 and cluster.status == container_v1.Cluster.Status.RUNNING
    assert [n["name"] for n in hub(emu).calls[-1][2]] == ["sd-node-pool"]

    mutating = [(e.method, e.code) for e in emu.log.entries() if e.service == "container" and e.mutating]
    assert mutating == [("CreateCluster", "OK"), ("DeleteNodePool", "OK"), ("CreateNodePool", "OK")]


# ---- persistence ------------------------------------------------------------------------------------


def test_clusters_survive_a_restart_and_get_their_api_back(
    make_emu: Callable[..., Any], tmp_path: Any
) -> None:
    state = str(tmp_path / "state.json")
    with Emulator(state_file=state, operation_s=0.2, enabled_services=SDCLUSTER_APIS) as first:
        gke = client(first)
        wait(gke, create(gke))
        before = gke.get_cluster(name=cluster_name())

    second = make_emu(state_file=state)
    after = client(second).get_cluster(name=cluster_name())
    assert after.status == container_v1.Cluster.Status.RUNNING and after.id == before.id
    assert [c[0] for c in hub(second).calls] == ["resume", "start"]
    assert after.endpoint == f"127.0.0.1:{hub(second).port}" != before.endpoint


def test_set_labels_needs_the_current_fingerprint(emu: Any) -> None:
    gke = client(emu)
    wait(gke, create(gke, resource_labels={"team": "ml"}))
    current = gke.get_cluster(name=cluster_name())
    assert current.label_fingerprint  # GKE always returns one
    with pytest.raises(exceptions.FailedPrecondition, match="fingerprint mismatch") as err:
        gke.set_labels(
            request={"name": cluster_name(), "resource_labels": {"team": "x"}, "label_fingerprint": ""}
        )
    assert f'the expected one is "{current.label_fingerprint}"' in str(err.value)
    op = gke.set_labels(
        request={
            "name": cluster_name(),
            "resource_labels": {"team": "x"},
            "label_fingerprint": current.label_fingerprint,
        }
    )
    assert op.operation_type == container_v1.Operation.Type.SET_LABELS
    wait(gke, op)
    after = gke.get_cluster(name=cluster_name())
    assert dict(after.resource_labels) == {"team": "x"}
    assert after.label_fingerprint != current.label_fingerprint
    with pytest.raises(
        exceptions.FailedPrecondition, match="fingerprint mismatch"
    ):  # the old one is stale now
        gke.set_labels(
            request={
                "name": cluster_name(),
                "resource_labels": {},
                "label_fingerprint": current.label_fingerprint,
            }
        )


def test_workload_metadata_mode_follows_workload_identity(emu: Any) -> None:
    make_sa(emu)
    gke = client(emu)
    number, pool_id = emu.world.project(PROJECT)["number"], f"{PROJECT}.svc.id.goog"
    op = create(
        gke,
        initial_node_count=0,
        node_pools=[pool_spec()],
        workload_identity_config={"workload_pool": pool_id},
    )
    assert not emu.world.has_workload_pool(number, pool_id)  # not before the first such cluster exists
    wait(gke, op)
    assert emu.world.has_workload_pool(number, pool_id)
    (pool,) = gke.get_cluster(name=cluster_name()).node_pools
    assert pool.config.workload_metadata_config.mode == container_v1.WorkloadMetadataConfig.Mode.GKE_METADATA
    (call,) = [c for c in hub(emu).calls if c[0] == "start"]
    assert call[2][0]["workload_metadata"] == "GKE_METADATA"  # the nodes run the GKE metadata server

    plain = create(gke, "plain", initial_node_count=0, node_pools=[pool_spec()])
    wait(gke, plain)
    (pool,) = gke.get_cluster(name=cluster_name("plain")).node_pools
    assert pool.config.workload_metadata_config.mode == container_v1.WorkloadMetadataConfig.Mode.GCE_METADATA
    wanted = pool_spec(workload_metadata_config={"mode": "GKE_METADATA"})
    with pytest.raises(exceptions.InvalidArgument, match="Workload Identity must be enabled on the cluster"):
        create(gke, "no-wi", initial_node_count=0, node_pools=[wanted])
