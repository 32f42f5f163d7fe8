"""GKE ``google.container.v1.ClusterManager`` over gRPC, enforcing the rules GKE enforces.

Served with the official proto-plus types (``google.cloud.container_v1.types``). What is modelled:

- clusters and node pools with their lifecycle (PROVISIONING -> RUNNING, STOPPING -> gone), driven by
  ``Operation``s that go PENDING -> RUNNING -> DONE over ``knobs.operation_s`` (advanced by ``tick``);
- one operation at a time per cluster (FAILED_PRECONDITION "Cluster is running incompatible
  operation ..."), duplicate names (ALREADY_EXISTS), unknown clusters (NOT_FOUND);
- locations: a known zone makes a zonal cluster; a known region a regional one whose pools run
  ``node_count`` nodes in each of 3 zones (quota and node counts triple); anything else INVALID_ARGUMENT;
- machine types, accelerators per zone and machine family, Spot vs preemptible;
- regional CPU quota per family (``N2_CPUS`` ...) and the global ``GPUS_ALL_REGIONS``, counted over the
  nodes that would actually run, including other clusters in the region (RESOURCE_EXHAUSTED);
- node service accounts: each must exist and have propagated, and the caller needs
  ``iam.serviceAccounts.actAs`` on it (GKE's PERMISSION_DENIED message otherwise);
- the cluster's Kubernetes API: started through ``world.kube`` when the cluster becomes RUNNING, told
  about node pool changes, stopped when the cluster is gone (never while holding ``world.lock``).

State lives in ``world.data["container"]``: ``clusters`` (key ``projects/P/locations/L/clusters/C`` ->
record holding the caller's Cluster/NodePool messages as JSON dicts plus server state) and
``operations`` (name -> record).

Example::

    gke = ClientFactory(user="user:demo@example.com", emulator=emu.address).cluster_manager()  # sdcluster.gcp.clients
    op = gke.create_cluster(parent="projects/demo-proj/locations/us-central1-c",
                            cluster={"name": "c1", "initial_node_count": 1})
    gke.get_operation(name=f"projects/demo-proj/locations/us-central1-c/operations/{op.name}")
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from google.cloud.container_v1 import types as gke

from . import grpcutil
from .core import World, already_exists, invalid, not_found, precondition
from .gkecatalog import (
    GKE_VERSION,
    MACHINE_TYPES,
    SERVICE,
    VALID_VERSIONS,
    ZONES,
    Ref,
    Site,
    check_name,
    cluster_message,
    from_dict,
    gpus_per_node,
    label_fingerprint,
    link,
    operation_message,
    parse_ref,
    pool_message,
    site_of,
    timestamp,
    to_dict,
)
from .gkepools import (
    check_autoscaling,
    check_config,
    check_quota,
    check_workload_metadata,
    clamp,
    pool_zones,
    prepare_pool,
)

# --------------------------------------------------------------------------------------------------
# Store and proto <-> JSON


def store(world: World) -> dict[str, Any]:
    """``world.data["container"]``: {"clusters": {key: record}, "operations": {name: record}}."""
    return world.data.setdefault("container", {"clusters": {}, "operations": {}})  # type: ignore[no-any-return]


def _cluster_record(world: World, ref: Ref) -> dict[str, Any]:
    rec = store(world)["clusters"].get(ref.key)
    if rec is None:
        raise not_found(f"Not found: {ref.key}.")
    return rec  # type: ignore[no-any-return]


def _pool_record(world: World, ref: Ref) -> dict[str, Any]:
    rec = _cluster_record(world, ref)
    pool = rec["pools"].get(ref.pool)
    if pool is None:
        raise not_found(f"Not found: {ref.pool_name}.")
    return pool  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# Operations


def _ensure_idle(rec: dict[str, Any], need_running: bool = True) -> None:
    """GKE runs one mutating operation per cluster at a time (and changes pools of running ones only)."""
    if rec["busy"]:
        raise precondition(f"Cluster is running incompatible operation {rec['busy']}.")
    if need_running and rec["status"] not in ("RUNNING", "RECONCILING"):
        raise precondition(f"Cluster {rec['name']} is in state {rec['status']}; it must be RUNNING.")


def start_operation(world: World, site: Site, op_type: str, cluster: str, pool: str = "") -> dict[str, Any]:
    """Record a new PENDING operation on ``cluster`` (and ``pool``); ``tick`` advances it."""
    now = world.now()
    name = f"operation-{int(now * 1000)}-{world.rng.getrandbits(32):08x}"
    target = f"clusters/{cluster}" + (f"/nodePools/{pool}" if pool else "")
    duration = max(0.0, float(world.knobs.operation_s))
    op = {
        "name": name,
        "project": site.project,
        "location": site.location,
        "type": op_type,
        "status": "PENDING",
        "cluster_key": f"projects/{site.project}/locations/{site.location}/clusters/{cluster}",
        "pool": pool,
        "self_link": link(site, site.number, f"operations/{name}"),
        "target_link": link(site, site.number, target),
        "start": now,
        "running_at": now + duration * 0.2,
        "done_at": now + duration,
        "end": None,
        "error": "",
    }
    store(world)["operations"][name] = op
    return op


def kube_nodes(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The node pools the Kubernetes API should show (``KubeHub`` contract, plus a few extras:
    ``accelerator_type``, ``spot``, ``preemptible``, ``zones``, ``labels``)."""
    nodes = []
    gpu_free_pool = any(not gpus_per_node(p["pool"]["config"])[1] for p in rec["pools"].values())
    for name, pool in rec["pools"].items():
        if pool["status"] == "PROVISIONING":
            continue
        cfg = pool["pool"]["config"]
        mt = MACHINE_TYPES[cfg["machine_type"]]
        gpu_type, gpus = gpus_per_node(cfg)
        nodes.append(
            {
                "name": name,
                "machine_type": cfg["machine_type"],
                "node_count": pool["current"] * len(pool["pool"]["locations"]),
                "cpus": mt.cpus,
                "memory_mib": mt.memory_mib,
                "accelerators": gpus,
                "accelerator_type": gpu_type,
                "spot": bool(cfg.get("spot")),
                "preemptible": bool(cfg.get("preemptible")),
                "zones": list(pool["pool"]["locations"]),
                "labels": dict(cfg.get("labels") or {}),
                "workload_metadata": str((cfg.get("workload_metadata_config") or {}).get("mode") or ""),
                "service_account": str(cfg.get("service_account") or "default"),
                "oauth_scopes": list(cfg.get("oauth_scopes") or []),
                "autoscaling": dict(pool["pool"].get("autoscaling") or {}),
                "instance_group": (pool["pool"].get("instance_group_urls") or [""])[0],
                "taints": node_taints(cfg, gpus > 0 and gpu_free_pool),
            }
        )
    return nodes


def node_taints(cfg: dict[str, Any], gpu_taint: bool) -> list[dict[str, str]]:
    """The taints on a pool's nodes, as Kubernetes writes them: the pool's own (NodeConfig.taints,
    NO_SCHEDULE -> NoSchedule), and GKE's ``nvidia.com/gpu=present:NoSchedule`` on GPU nodes of a
    cluster that also has a pool without GPUs."""
    effects = {
        "NO_SCHEDULE": "NoSchedule",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
        "NO_EXECUTE": "NoExecute",
    }
    out = [
        {
            "key": str(t.get("key", "")),
            "value": str(t.get("value", "")),
            "effect": effects.get(str(t.get("effect")), ""),
        }
        for t in cfg.get("taints") or []
    ]
    if gpu_taint:
        out.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return out


def autoscaled(world: World, key: str, pool_name: str, nodes: int) -> None:
    """The cluster autoscaler resized ``pool_name`` of cluster ``key`` to ``nodes`` in all (GKE keeps
    the count per zone). Example (from the Kubernetes hub): ``autoscaled(world, key, "pool", 2)``."""
    with world.lock:
        rec = store(world)["clusters"].get(key)
        pool = (rec or {}).get("pools", {}).get(pool_name)
        if pool is None:
            return
        per_zone = nodes // max(len(pool["pool"]["locations"]), 1)
        pool["current"] = pool["size"] = per_zone
        world.changed()


# --------------------------------------------------------------------------------------------------
# Handlers: clusters


def _new_cluster_record(
    world: World, site: Site, cluster: gke.Cluster, pools: list[dict[str, Any]]
) -> dict[str, Any]:
    now = world.now()
    cluster.node_pools = []
    cluster.self_link = link(site, site.project, f"clusters/{cluster.name}")
    cluster.zone = site.location
    cluster.location = site.location
    if not cluster.locations:
        cluster.locations = list(site.zones)
    cluster.id = f"{world.rng.getrandbits(128):032x}"
    cluster.create_time = timestamp(now)
    cluster.current_master_version = cluster.initial_cluster_version or GKE_VERSION
    cluster.current_node_version = cluster.current_master_version
    cluster.network = cluster.network or "default"
    cluster.subnetwork = cluster.subnetwork or "default"
    cluster.logging_service = cluster.logging_service or "logging.googleapis.com/kubernetes"
    cluster.monitoring_service = cluster.monitoring_service or "monitoring.googleapis.com/kubernetes"
    cluster.cluster_ipv4_cidr = cluster.cluster_ipv4_cidr or f"10.{world.rng.randrange(4, 120, 4)}.0.0/14"
    cluster.services_ipv4_cidr = cluster.services_ipv4_cidr or "34.118.224.0/20"
    cluster.node_ipv4_cidr_size = 24
    if pools:  # GKE reports the first pool's configuration (with defaults) as the cluster's
        cluster.node_config = from_dict(gke.NodeConfig, pools[0]["pool"]["config"])
    return {
        "project": site.project,
        "location": site.location,
        "region": site.region,
        "name": cluster.name,
        "cluster": to_dict(cluster),
        "pools": {p["pool"]["name"]: p for p in pools},
        "status": "PROVISIONING",
        "status_message": "",
        "busy": "",
        "endpoint": "",
        "ca_pem": "",
    }


def _initial_pools(cluster: gke.Cluster) -> list[gke.NodePool]:
    """The pools to create: ``node_pools``, or a ``default-pool`` from ``initial_node_count``."""
    if cluster.node_pools:
        if cluster.initial_node_count:
            raise invalid("Cluster.initial_node_count must not be set when Cluster.node_pools is specified.")
        return list(cluster.node_pools)
    if cluster.initial_node_count <= 0:
        raise invalid("Cluster.initial_node_count must be greater than zero.")
    pool = gke.NodePool(name="default-pool", initial_node_count=cluster.initial_node_count)
    if "node_config" in cluster:
        pool.config = cluster.node_config
    if cluster.locations:
        pool.locations = list(cluster.locations)
    return [pool]


def _check_cluster_fields(site: Site, cluster: gke.Cluster) -> None:
    check_name("cluster.name", cluster.name)
    for z in cluster.locations:
        if ZONES.get(z) != site.region:
            raise invalid(
                f'Invalid value for field "cluster.locations": "{z}" is not a zone of {site.region}.'
            )
    if not site.regional and cluster.locations and site.location not in cluster.locations:
        raise invalid(
            f'Invalid value for field "cluster.locations": it must include the cluster zone {site.location}.'
        )
    pool_wi = cluster.workload_identity_config.workload_pool
    if pool_wi and pool_wi != f"{site.project}.svc.id.goog":
        raise invalid(
            f'Invalid value for field "workload_identity_config.workload_pool": "{pool_wi}". Must be "{site.project}.svc.id.goog".'
        )


def create_cluster(world: World, request: gke.CreateClusterRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "location", field="parent")
    world.require_service(ref.project, SERVICE)
    cluster = request.cluster
    world.check(caller, "container.clusters.create", ref.project, f"{ref.parent}/clusters/{cluster.name}")
    site = site_of(world, ref.project, ref.location)
    _check_cluster_fields(site, cluster)
    site = replace(site, zones=tuple(cluster.locations) or site.zones)
    specs = _initial_pools(cluster)
    if len({p.name for p in specs}) != len(specs):
        raise invalid("Node pool names must be unique within a cluster.")
    with world.lock:
        key = Ref(ref.project, ref.location, cluster.name).key
        if key in store(world)["clusters"]:
            raise already_exists(f"Already exists: {key}.")
        workload_pool = cluster.workload_identity_config.workload_pool
        pools = [prepare_pool(world, caller, site, cluster.name, p, workload_pool) for p in specs]
        check_quota(world, site, pools)
        rec = _new_cluster_record(world, site, cluster, pools)
        op = start_operation(world, site, "CREATE_CLUSTER", cluster.name)
        rec["busy"] = op["name"]
        store(world)["clusters"][key] = rec
        world.changed()
    if world.kube is not None:
        world.kube.prepare()
    return operation_message(op)


def get_cluster(world: World, request: gke.GetClusterRequest, caller: str) -> gke.Cluster:
    ref = parse_ref(world, request, "cluster")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.get", ref.project, ref.key)
    with world.lock:
        return cluster_message(_cluster_record(world, ref))


def _location_matches(ref: Ref, location: str) -> bool:
    return ref.location == "-" or ref.location == location


def list_clusters(world: World, request: gke.ListClustersRequest, caller: str) -> gke.ListClustersResponse:
    ref = parse_ref(world, request, "location", field="parent")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.list", ref.project, ref.parent)
    if ref.location != "-":
        site_of(world, ref.project, ref.location)
    with world.lock:
        recs = [r for r in store(world)["clusters"].values() if r["project"] == ref.project]
        return gke.ListClustersResponse(
            clusters=[cluster_message(r) for r in recs if _location_matches(ref, r["location"])]
        )


def delete_cluster(world: World, request: gke.DeleteClusterRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "cluster")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.delete", ref.project, ref.key)
    with world.lock:
        rec = _cluster_record(world, ref)
        _ensure_idle(rec, need_running=False)  # a cluster in ERROR can still be deleted
        site = site_of(world, ref.project, ref.location)
        op = start_operation(world, site, "DELETE_CLUSTER", ref.cluster)
        rec["busy"] = op["name"]
        rec["status"] = "STOPPING"
        for pool in rec["pools"].values():
            pool["status"] = "STOPPING"
        world.changed()
        return operation_message(op)


def set_labels(world: World, request: gke.SetLabelsRequest, caller: str) -> gke.Operation:
    """SetLabels replaces the cluster's resource labels, compare-and-swap on ``label_fingerprint``:
    an empty or stale one is FAILED_PRECONDITION with GKE's wording."""
    ref = parse_ref(world, request, "cluster")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.update", ref.project, ref.key)
    with world.lock:
        rec = _cluster_record(world, ref)
        _ensure_idle(rec)
        current = label_fingerprint(dict(rec["cluster"].get("resource_labels") or {}))
        if request.label_fingerprint != current:
            raise precondition(
                "Labels could not be set due to fingerprint mismatch; try again with the proper fingerprint: "
                f'incorrect fingerprint supplied was "{request.label_fingerprint}", the expected one is "{current}".'
            )
        rec["cluster"]["resource_labels"] = dict(request.resource_labels)
        site = site_of(world, ref.project, ref.location)
        op = start_operation(world, site, "SET_LABELS", ref.cluster)
        rec["busy"] = op["name"]
        world.changed()
        return operation_message(op)


# --------------------------------------------------------------------------------------------------
# Handlers: operations


def get_operation(world: World, request: gke.GetOperationRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "operation")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.operations.get", ref.project, ref.operation_name)
    with world.lock:
        op = store(world)["operations"].get(ref.operation)
        if op is None or op["project"] != ref.project or not _location_matches(ref, op["location"]):
            raise not_found(f"Not found: {ref.operation_name}.")
        return operation_message(op)


def list_operations(
    world: World, request: gke.ListOperationsRequest, caller: str
) -> gke.ListOperationsResponse:
    ref = parse_ref(world, request, "location", field="parent")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.operations.list", ref.project, ref.parent)
    with world.lock:
        ops = [
            operation_message(op)
            for op in store(world)["operations"].values()
            if op["project"] == ref.project and _location_matches(ref, op["location"])
        ]
        return gke.ListOperationsResponse(operations=ops)


# --------------------------------------------------------------------------------------------------
# Handlers: node pools


def _cluster_site(world: World, rec: dict[str, Any]) -> Site:
    site = site_of(world, rec["project"], rec["location"])
    return replace(site, zones=tuple(rec["cluster"].get("locations") or site.zones))


def _mutate_pool(world: World, ref: Ref, caller: str) -> tuple[dict[str, Any], dict[str, Any], Site]:
    """Shared prologue of node pool updates: service, permission, existence, idle cluster."""
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.update", ref.project, ref.key)
    rec = _cluster_record(world, ref)
    pool = _pool_record(world, ref)
    _ensure_idle(rec)
    return rec, pool, _cluster_site(world, rec)


def _begin_pool_operation(
    world: World, rec: dict[str, Any], site: Site, op_type: str, pool_name: str, pool_status: str
) -> gke.Operation:
    op = start_operation(world, site, op_type, rec["name"], pool_name)
    rec["busy"] = op["name"]
    rec["status"] = "RECONCILING"
    rec["pools"][pool_name]["status"] = pool_status
    world.changed()
    return operation_message(op)


def create_node_pool(world: World, request: gke.CreateNodePoolRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "cluster", field="parent")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.update", ref.project, ref.key)
    with world.lock:
        rec = _cluster_record(world, ref)
        _ensure_idle(rec)
        name = request.node_pool.name
        if name in rec["pools"]:
            raise already_exists(f"Already exists: {ref.key}/nodePools/{name}.")
        site = _cluster_site(world, rec)
        workload_pool = str((rec["cluster"].get("workload_identity_config") or {}).get("workload_pool") or "")
        pool = prepare_pool(world, caller, site, ref.cluster, request.node_pool, workload_pool)
        check_quota(world, site, [pool])
        rec["pools"][name] = pool
        return _begin_pool_operation(world, rec, site, "CREATE_NODE_POOL", name, "PROVISIONING")


def get_node_pool(world: World, request: gke.GetNodePoolRequest, caller: str) -> gke.NodePool:
    ref = parse_ref(world, request, "pool")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.get", ref.project, ref.key)
    with world.lock:
        return pool_message(_pool_record(world, ref))


def list_node_pools(
    world: World, request: gke.ListNodePoolsRequest, caller: str
) -> gke.ListNodePoolsResponse:
    ref = parse_ref(world, request, "cluster", field="parent")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.get", ref.project, ref.key)
    with world.lock:
        rec = _cluster_record(world, ref)
        return gke.ListNodePoolsResponse(node_pools=[pool_message(p) for p in rec["pools"].values()])


def delete_node_pool(world: World, request: gke.DeleteNodePoolRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "pool")
    with world.lock:
        rec, _, site = _mutate_pool(world, ref, caller)
        return _begin_pool_operation(world, rec, site, "DELETE_NODE_POOL", ref.pool, "STOPPING")


def _resize(
    world: World,
    ref: Ref,
    site: Site,
    pool: dict[str, Any],
    requested: int,
    autoscaling: dict[str, Any] | None,
) -> None:
    """Set the pool's target size; a bigger footprint must fit the quota first."""
    size = clamp(requested, autoscaling)
    if size > pool["size"]:
        check_quota(world, site, [{**pool, "size": size}], skip=(ref.key, ref.pool))
    pool["requested"] = requested
    pool["size"] = size


def set_node_pool_size(world: World, request: gke.SetNodePoolSizeRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "pool")
    if request.node_count < 0:
        raise invalid(f'Invalid value for field "node_count": {request.node_count}. Must be >= 0.')
    with world.lock:
        rec, pool, site = _mutate_pool(world, ref, caller)
        _resize(world, ref, site, pool, request.node_count, pool["pool"].get("autoscaling"))
        return _begin_pool_operation(world, rec, site, "SET_NODE_POOL_SIZE", ref.pool, "RECONCILING")


def set_node_pool_autoscaling(
    world: World, request: gke.SetNodePoolAutoscalingRequest, caller: str
) -> gke.Operation:
    ref = parse_ref(world, request, "pool")
    check_autoscaling(request.autoscaling, "autoscaling")
    with world.lock:
        rec, pool, site = _mutate_pool(world, ref, caller)
        autoscaling = to_dict(request.autoscaling)
        # New limits keep the pool's current size, clamped into them (it is not reset to the initial count).
        _resize(world, ref, site, pool, pool["current"] or pool["requested"], autoscaling)
        pool["pool"]["autoscaling"] = autoscaling
        return _begin_pool_operation(world, rec, site, "UPDATE_CLUSTER", ref.pool, "RECONCILING")


def _apply_node_pool_update(request: gke.UpdateNodePoolRequest, msg: gke.NodePool) -> None:
    """Copy the fields UpdateNodePool sets (only those present in the request) onto the pool."""
    cfg = msg.config
    for field in ("machine_type", "disk_type", "disk_size_gb", "image_type"):
        if getattr(request, field):
            setattr(cfg, field, getattr(request, field))
    if request.node_version:
        msg.version = GKE_VERSION if request.node_version == "-" else request.node_version
    if "labels" in request:
        cfg.labels = dict(request.labels.labels)
    if "resource_labels" in request:
        cfg.resource_labels = dict(request.resource_labels.labels)
    if "tags" in request:
        cfg.tags = list(request.tags.tags)
    if "taints" in request:
        cfg.taints = list(request.taints.taints)
    if request.accelerators:
        cfg.accelerators = list(request.accelerators)
    if "workload_metadata_config" in request:
        cfg.workload_metadata_config = request.workload_metadata_config
    if request.locations:
        msg.locations = list(request.locations)


def update_node_pool(world: World, request: gke.UpdateNodePoolRequest, caller: str) -> gke.Operation:
    ref = parse_ref(world, request, "pool")
    with world.lock:
        rec, pool, site = _mutate_pool(world, ref, caller)
        msg = from_dict(gke.NodePool, pool["pool"])
        locations_before = list(msg.locations)
        _apply_node_pool_update(request, msg)
        workload_pool = str((rec["cluster"].get("workload_identity_config") or {}).get("workload_pool") or "")
        check_workload_metadata(msg.config, workload_pool, "update")
        zones = pool_zones(site, msg)
        check_config(msg.config, zones)
        updated = {**pool, "pool": to_dict(msg)}
        if list(msg.locations) != locations_before or request.machine_type or request.accelerators:
            check_quota(world, site, [updated], skip=(ref.key, ref.pool))
        pool["pool"] = updated["pool"]
        return _begin_pool_operation(world, rec, site, "UPGRADE_NODES", ref.pool, "RECONCILING")


def get_server_config(world: World, request: gke.GetServerConfigRequest, caller: str) -> gke.ServerConfig:
    ref = parse_ref(world, request, "location")
    world.require_service(ref.project, SERVICE)
    world.check(caller, "container.clusters.list", ref.project, ref.parent)
    site_of(world, ref.project, ref.location)
    return gke.ServerConfig(
        default_cluster_version=GKE_VERSION,
        valid_master_versions=VALID_VERSIONS,
        valid_node_versions=VALID_VERSIONS,
        default_image_type="COS_CONTAINERD",
        valid_image_types=["COS_CONTAINERD", "UBUNTU_CONTAINERD"],
    )


def services(world: World) -> list[grpcutil.Service]:
    """The ``google.container.v1.ClusterManager`` service, bound to ``world`` (gRPC and REST)."""

    def bind(fn: Any) -> Any:
        return lambda request, caller: fn(world, request, caller)

    m = grpcutil.method
    methods = {
        "CreateCluster": m(gke.CreateClusterRequest, gke.Operation, bind(create_cluster), mutating=True),
        "GetCluster": m(gke.GetClusterRequest, gke.Cluster, bind(get_cluster)),
        "ListClusters": m(gke.ListClustersRequest, gke.ListClustersResponse, bind(list_clusters)),
        "DeleteCluster": m(gke.DeleteClusterRequest, gke.Operation, bind(delete_cluster), mutating=True),
        "GetOperation": m(gke.GetOperationRequest, gke.Operation, bind(get_operation)),
        "ListOperations": m(gke.ListOperationsRequest, gke.ListOperationsResponse, bind(list_operations)),
        "CreateNodePool": m(gke.CreateNodePoolRequest, gke.Operation, bind(create_node_pool), mutating=True),
        "GetNodePool": m(gke.GetNodePoolRequest, gke.NodePool, bind(get_node_pool)),
        "ListNodePools": m(gke.ListNodePoolsRequest, gke.ListNodePoolsResponse, bind(list_node_pools)),
        "DeleteNodePool": m(gke.DeleteNodePoolRequest, gke.Operation, bind(delete_node_pool), mutating=True),
        "SetNodePoolSize": m(
            gke.SetNodePoolSizeRequest, gke.Operation, bind(set_node_pool_size), mutating=True
        ),
        "SetNodePoolAutoscaling": m(
            gke.SetNodePoolAutoscalingRequest, gke.Operation, bind(set_node_pool_autoscaling), mutating=True
        ),
        "UpdateNodePool": m(gke.UpdateNodePoolRequest, gke.Operation, bind(update_node_pool), mutating=True),
        "GetServerConfig": m(gke.GetServerConfigRequest, gke.ServerConfig, bind(get_server_config)),
        "SetLabels": m(gke.SetLabelsRequest, gke.Operation, bind(set_labels), mutating=True),
    }
    return [grpcutil.Service("google.container.v1.ClusterManager", "container", methods)]


# --------------------------------------------------------------------------------------------------
# Time: operations advance in tick(); the Kubernetes hub is called outside world.lock


def _settle(rec: dict[str, Any], op: dict[str, Any]) -> None:
    """Apply the end state of ``op`` to its cluster record (not used for DELETE_CLUSTER)."""
    rec["busy"] = ""
    rec["status"] = "RUNNING"
    if op["type"] == "DELETE_NODE_POOL":
        rec["pools"].pop(op["pool"], None)
        return
    for name, pool in rec["pools"].items():
        if op["type"] == "CREATE_CLUSTER" or name == op["pool"]:
            pool["status"] = "RUNNING"
            pool["current"] = pool["size"]


def _call_hub(world: World, op: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Tell the Kubernetes hub what ``op`` changed. Returns (endpoint, ca_pem, error)."""
    hub = world.kube
    if hub is None:
        return "", "", ""
    key = op["cluster_key"]
    try:
        if op["type"] == "CREATE_CLUSTER":
            endpoint, ca_pem = hub.start_cluster(key, nodes)
            return endpoint, ca_pem, ""
        if op["type"] == "DELETE_CLUSTER":
            hub.stop_cluster(key)
        else:
            hub.update_nodes(key, nodes)
    except Exception as e:  # the operation fails the way GKE reports an internal error
        return "", "", f"Internal error while updating the Kubernetes control plane: {type(e).__name__}: {e}"
    return "", "", ""


def finish_operation(world: World, name: str) -> None:
    """Complete a due operation: work out the new nodes, call the hub (unlocked), then commit."""
    with world.lock:
        op = store(world)["operations"][name]
        rec = store(world)["clusters"].get(op["cluster_key"])
        after = copy.deepcopy(rec) if rec else None
        if after is not None and op["type"] != "DELETE_CLUSTER":
            _settle(after, op)
        nodes = kube_nodes(after) if after else []
        zone = _stocked_out(world, rec, op)
    if zone:
        _fail_stockout(world, op, zone)
        return
    endpoint, ca_pem, error = _call_hub(world, op, nodes)
    with world.lock:
        clusters = store(world)["clusters"]
        rec = clusters.get(op["cluster_key"])
        if op["type"] == "DELETE_CLUSTER":
            clusters.pop(op["cluster_key"], None)
        elif rec is not None:
            _settle(rec, op)
            if op["type"] == "CREATE_CLUSTER" and error:
                rec["status"], rec["status_message"] = "ERROR", error
            elif op["type"] == "CREATE_CLUSTER":
                rec["endpoint"], rec["ca_pem"] = endpoint, ca_pem
                # The project's Workload Identity pool exists once a cluster that uses it does.
                wi = str((rec["cluster"].get("workload_identity_config") or {}).get("workload_pool") or "")
                if wi:
                    world.add_workload_pool(wi)
        op.update(status="DONE", end=world.now(), error=error)
        world.changed()


def stockout_message(zone: str) -> str:
    """GKE's words for a zone out of capacity (operation statusMessage and the GCE_STOCKOUT
    condition), as gcloud printed them in kubeflow/pipelines#673."""
    return (
        "Try a different location, or try again later: Google Compute Engine does not have enough "
        f"resources available to fulfill request: {zone}."
    )


def _stocked_out(world: World, rec: dict[str, Any] | None, op: dict[str, Any]) -> str:
    """The zone out of capacity (``Knobs.stockout_zones``) where ``op`` would create nodes, or ""."""
    if rec is None or op["type"] not in ("CREATE_CLUSTER", "CREATE_NODE_POOL"):
        return ""
    pools = [p for name, p in rec["pools"].items() if op["type"] == "CREATE_CLUSTER" or name == op["pool"]]
    for pool in pools:
        for zone in pool["pool"]["locations"]:
            if zone in world.knobs.stockout_zones and pool["size"]:
                return str(zone)
    return ""


def _fail_stockout(world: World, op: dict[str, Any], zone: str) -> None:
    """The nodes cannot be created: the operation ends in error and the cluster (for a
    CREATE_CLUSTER) or the pool is left in ERROR with no nodes, still to be deleted by its owner."""
    message = stockout_message(zone)
    with world.lock:
        rec = store(world)["clusters"][op["cluster_key"]]
        rec["busy"] = ""
        for name, pool in rec["pools"].items():
            if op["type"] == "CREATE_CLUSTER" or name == op["pool"]:
                pool.update(status="ERROR", current=0, size=0)
        if op["type"] == "CREATE_CLUSTER":
            rec["status"], rec["status_message"] = "ERROR", message
        rec["conditions"] = [{"code": "GCE_STOCKOUT", "message": message}]
        op.update(status="DONE", end=world.now(), error=message, stockout=True)
        world.changed()


def tick(world: World) -> None:
    """Advance operations: PENDING -> RUNNING after a fifth of their time, DONE at the end."""
    now = world.now()
    with world.lock:
        due = []
        for op in store(world)["operations"].values():
            if op["status"] == "PENDING" and now >= op["running_at"]:
                op["status"] = "RUNNING"
            if op["status"] == "RUNNING" and now >= op["done_at"]:
                due.append(op["name"])
    for name in due:
        finish_operation(world, name)


# --------------------------------------------------------------------------------------------------
# Contract with the Kubernetes hub across restarts


def running_clusters(world: World) -> list[tuple[str, list[dict[str, Any]]]]:
    """(key, nodes) of every cluster whose Kubernetes API should be up (for ``Hub.resume``).

    Clusters still being created are absent: their operation starts the API when it completes.
    """
    with world.lock:
        return [
            (key, kube_nodes(rec))
            for key, rec in store(world)["clusters"].items()
            if rec["status"] in ("RUNNING", "RECONCILING", "STOPPING")
        ]


def set_endpoint(world: World, key: str, endpoint: str, ca_pem: str) -> None:
    """Record the endpoint and CA of a restarted Kubernetes API (GetCluster returns them)."""
    with world.lock:
        rec = store(world)["clusters"].get(key)
        if rec is None:
            return
        rec["endpoint"], rec["ca_pem"] = endpoint, ca_pem
        world.changed()


def resume_clusters(world: World) -> None:
    """Restart the Kubernetes API of every running cluster and record the new endpoints.

    Example (in ``Hub.resume``): ``gke.resume_clusters(self.world)``.
    """
    hub = world.kube
    if hub is None:
        return
    for key, nodes in running_clusters(world):
        endpoint, ca_pem = hub.start_cluster(key, nodes)
        set_endpoint(world, key, endpoint, ca_pem)
