"""The emulated GKE's node pool checks: machine type, accelerators, autoscaling, the node service
account, Workload Identity metadata, config defaults, and the Compute Engine quota a pool's nodes
need. Each answers as GKE does (messages and sources in docs/emulator-rules.md)."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.cloud.container_v1 import types as gke

from .core import EmulatorError, World, invalid
from .gkecatalog import (
    ACCELERATORS,
    COMPUTE,
    DEFAULT_SCOPES,
    GKE_VERSION,
    MACHINE_TYPES,
    ZONES,
    Accelerator,
    MachineType,
    Site,
    check_name,
    link,
    to_dict,
)

# --------------------------------------------------------------------------------------------------
# Node pool validation: machine, accelerators, autoscaling, service account


def _machine(name: str, zone: str) -> MachineType:
    mt = MACHINE_TYPES.get(name)
    if mt is None:
        raise invalid(f'Invalid machine type "{name}" in zone "{zone}": machine type does not exist.')
    return mt


def _check_accelerators(config: gke.NodeConfig, mt: MachineType, zones: list[str]) -> None:
    wanted = [(a.accelerator_type, a.accelerator_count) for a in config.accelerators]
    if not wanted and mt.gpu:
        wanted = [mt.gpu]  # A2/G2 machines carry their GPUs: the zone must offer them too
    for acc_type, count in wanted:
        acc = ACCELERATORS.get(acc_type, Accelerator("", frozenset()))
        for zone in zones:
            if zone not in acc.zones:
                raise invalid(f'Accelerator type "{acc_type}" does not exist in zone {zone}.')
        if acc.family != mt.family:
            raise invalid(
                f'Accelerator type "{acc_type}" is not supported with machine type "{config.machine_type}": '
                f"it attaches to {acc.family.upper()} machine types only."
            )
        if count < 1:
            raise invalid(f'Invalid value for field "accelerator_count": {count}. Must be greater than 0.')


def check_autoscaling(a: gke.NodePoolAutoscaling, field: str) -> None:
    if not a.enabled:
        return
    if a.max_node_count < 1:
        raise invalid(
            f'Invalid value for field "{field}.max_node_count": {a.max_node_count}. Must be greater than 0.'
        )
    if not 0 <= a.min_node_count <= a.max_node_count:
        raise invalid(
            f'Invalid value for field "{field}.min_node_count": {a.min_node_count}. '
            f"Must be between 0 and max_node_count ({a.max_node_count})."
        )


def clamp(requested: int, autoscaling: dict[str, Any] | None) -> int:
    """Nodes per zone that run: the requested count, within the autoscaler's limits when enabled.

    The autoscaler itself is not emulated: a pool just stays at its clamped size.
    """
    a = autoscaling or {}
    if not a.get("enabled"):
        return requested
    return max(int(a.get("min_node_count", 0)), min(requested, int(a.get("max_node_count", 0))))


def _sa_project(email: str, default: str) -> str:
    m = re.match(r"^[^@]+@([^.]+)\.iam\.gserviceaccount\.com$", email)
    return m.group(1) if m else default


def _check_node_service_account(world: World, caller: str, site: Site, name: str) -> None:
    """The node SA must exist (and have propagated); the caller must be able to act as it."""
    from .iam import service_account

    default_sa = f"{site.number}-compute@developer.gserviceaccount.com"
    email = default_sa if name in ("", "default") else name
    project = _sa_project(email, site.project)
    if email != default_sa and service_account(world, project, email, usable=True) is None:
        raise invalid(f'Service account "{email}" does not exist.')
    if not world.has_permission(caller, "iam.serviceAccounts.actAs", project, service_account=email):
        raise EmulatorError(
            grpc.StatusCode.PERMISSION_DENIED,
            f'The user does not have access to service account "{email}". Ask a project owner to grant you '
            "the iam.serviceAccountUser role on the service account.",
        )


def check_workload_metadata(config: gke.NodeConfig, workload_pool: str, field: str) -> None:
    """GKE_METADATA needs Workload Identity on the cluster, and is the default when it is on."""
    mode = config.workload_metadata_config.mode
    if mode == gke.WorkloadMetadataConfig.Mode.GKE_METADATA and not workload_pool:
        raise invalid(
            f'Invalid value for field "{field}.workload_metadata_config.mode": "GKE_METADATA". '
            "Workload Identity must be enabled on the cluster to run the GKE Metadata Server on its nodes."
        )
    if mode == gke.WorkloadMetadataConfig.Mode.MODE_UNSPECIFIED:
        modes = gke.WorkloadMetadataConfig.Mode
        config.workload_metadata_config = gke.WorkloadMetadataConfig(
            mode=modes.GKE_METADATA if workload_pool else modes.GCE_METADATA
        )


def _fill_config_defaults(config: gke.NodeConfig) -> None:
    """The defaults GKE applies (and then returns) when the caller leaves a field unset."""
    config.machine_type = config.machine_type or "e2-medium"
    config.disk_size_gb = config.disk_size_gb or 100
    config.disk_type = config.disk_type or "pd-balanced"
    config.image_type = config.image_type or "COS_CONTAINERD"
    config.service_account = config.service_account or "default"
    if not config.oauth_scopes:
        config.oauth_scopes = DEFAULT_SCOPES


def check_config(config: gke.NodeConfig, zones: list[str]) -> None:
    mt = _machine(config.machine_type, zones[0])
    if config.disk_size_gb < 10:
        raise invalid(
            f'Invalid value for field "node_config.disk_size_gb": {config.disk_size_gb}. Must be at least 10.'
        )
    if config.disk_type not in ("pd-standard", "pd-balanced", "pd-ssd", "hyperdisk-balanced"):
        raise invalid(f'Invalid value for field "node_config.disk_type": "{config.disk_type}".')
    if config.spot and config.preemptible:
        raise invalid(
            "Spot VMs and preemptible VMs cannot both be enabled on a node pool: set only one of spot, preemptible."
        )
    _check_accelerators(config, mt, zones)


def pool_zones(site: Site, pool: gke.NodePool) -> list[str]:
    zones = list(pool.locations) or list(site.zones)
    for z in zones:
        if ZONES.get(z) != site.region:
            raise invalid(
                f'Invalid value for field "node_pool.locations": "{z}" is not a zone of {site.region}.'
            )
    return zones


def prepare_pool(
    world: World, caller: str, site: Site, cluster: str, pool: gke.NodePool, workload_pool: str = ""
) -> dict[str, Any]:
    """Validate a new node pool and return its store record (status PROVISIONING, no nodes yet)."""
    check_name("node_pool.name", pool.name)
    check_workload_metadata(pool.config, workload_pool, "node_pool.config")
    if pool.initial_node_count < 0:
        raise invalid(f'Invalid value for field "node_pool.initial_node_count": {pool.initial_node_count}.')
    zones = pool_zones(site, pool)
    _fill_config_defaults(pool.config)
    check_config(pool.config, zones)
    check_autoscaling(pool.autoscaling, "node_pool.autoscaling")
    _check_node_service_account(world, caller, site, pool.config.service_account)
    pool.locations = zones
    pool.version = pool.version or GKE_VERSION
    pool.self_link = link(site, site.project, f"clusters/{cluster}/nodePools/{pool.name}")
    suffix = f"{world.rng.getrandbits(32):08x}"
    pool.instance_group_urls = [
        f"{COMPUTE}/projects/{site.project}/zones/{z}/instanceGroupManagers/gke-{cluster[:18]}-{pool.name[:14]}-{suffix}-grp"
        for z in zones
    ]
    if "management" not in pool:
        pool.management = gke.NodeManagement(auto_upgrade=True, auto_repair=True)
    if "max_pods_constraint" not in pool:
        pool.max_pods_constraint = gke.MaxPodsConstraint(max_pods_per_node=110)
    pool.pod_ipv4_cidr_size = pool.pod_ipv4_cidr_size or 24
    record: dict[str, Any] = {
        "pool": to_dict(pool),
        "status": "PROVISIONING",
        "requested": pool.initial_node_count,
        "current": 0,
    }
    record["size"] = clamp(pool.initial_node_count, record["pool"].get("autoscaling"))
    return record


# --------------------------------------------------------------------------------------------------
# Quota: what Compute Engine counts (``compute.usage``) for the nodes a pool would run


def check_quota(
    world: World, site: Site, pools: list[dict[str, Any]], skip: tuple[str, str] | None = None
) -> None:
    """PERMISSION_DENIED (HTTP 403), worded as GKE words it, when ``pools`` (at their target size)
    would exceed a Compute quota: "Insufficient regional quota to satisfy request: resource
    "N2_CPUS": request requires '12.0' and is short '4.0'. project has a quota of '8.0' with '8.0'
    available. View and manage quotas at ..." (googlecodelabs/feedback#950,
    GoogleCloudPlatform/cloud-ops-sandbox#44; "project quota" for the all-regions metrics,
    kubeflow/examples#597). GKE lists every shortfall; the emulator names the first (CPUs first).

    ``skip`` = (cluster key, pool name) of a pool being resized, so its old size is not counted twice.
    """
    from . import compute  # Compute reads this module's pools for its usage, so it imports us

    demand: dict[tuple[str, str], float] = {}
    for pool in pools:
        for k, v in compute.pool_usage(pool, site.region).items():
            demand[k] = demand.get(k, 0.0) + v
    short = compute.shortfall(world, site.project, demand, skip)
    if short is None:
        return
    scope, metric, amount, cap, in_use = short
    available = max(cap - in_use, 0.0)
    kind = "project" if scope == "global" else "regional"
    raise EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED,
        f'Insufficient {kind} quota to satisfy request: resource "{metric}": request requires '
        f"'{amount:.1f}' and is short '{amount - available:.1f}'. project has a quota of '{cap:.1f}' "
        f"with '{available:.1f}' available. View and manage quotas at "
        f"https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={site.project}.",
    )
