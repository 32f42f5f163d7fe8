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

import base64
import copy
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.cloud.container_v1 import types as gke
from google.rpc import status_pb2

from . import grpcutil
from .core import EmulatorError, World, already_exists, invalid, not_found, precondition

SERVICE = "container.googleapis.com"
GKE_VERSION = "1.30.5-gke.1014001"
VALID_VERSIONS = [GKE_VERSION, "1.30.4-gke.1348000", "1.29.9-gke.1496000", "1.28.14-gke.1340000"]
API = "https://container.googleapis.com/v1"
COMPUTE = "https://www.googleapis.com/compute/v1"

# --------------------------------------------------------------------------------------------------
# Catalog: locations, machine types, accelerators (a representative subset of GCP's)

_REGION_ZONE_SUFFIXES = {
    "us-central1": "abcf",
    "us-east1": "bcd",
    "us-east4": "abc",
    "us-west1": "abc",
    "europe-west1": "bcd",
    "europe-west4": "abc",
    "asia-east1": "abc",
}
REGIONS: dict[str, list[str]] = {r: [f"{r}-{s}" for s in sfx] for r, sfx in _REGION_ZONE_SUFFIXES.items()}
ZONES: dict[str, str] = {z: r for r, zones in REGIONS.items() for z in zones}


@dataclass(frozen=True)
class MachineType:
    family: str  # "n2": decides the CPU quota metric and which accelerators may be attached
    cpus: int
    memory_mib: int
    gpu: tuple[str, int] | None = None  # accelerators built into the machine (A2, G2)

    @property
    def cpu_metric(self) -> str:
        return f"{self.family.upper()}_CPUS"


def _series(family: str, mib_per_cpu: int, sizes: list[int]) -> dict[str, MachineType]:
    return {f"{family}-standard-{n}": MachineType(family, n, mib_per_cpu * n) for n in sizes}


MACHINE_TYPES: dict[str, MachineType] = {
    **_series("n1", 3840, [1, 2, 4, 8, 16, 32]),
    **_series("n2", 4096, [2, 4, 8, 16, 32]),
    **_series("n2d", 4096, [2, 4, 8, 16]),
    **_series("e2", 4096, [2, 4, 8, 16]),
    **_series("c2", 4096, [4, 8, 16]),
    "e2-micro": MachineType("e2", 2, 1024),
    "e2-small": MachineType("e2", 2, 2048),
    "e2-medium": MachineType("e2", 2, 4096),
    "g2-standard-4": MachineType("g2", 4, 16384, ("nvidia-l4", 1)),
    "g2-standard-8": MachineType("g2", 8, 32768, ("nvidia-l4", 1)),
    "g2-standard-16": MachineType("g2", 16, 65536, ("nvidia-l4", 1)),
    "a2-highgpu-1g": MachineType("a2", 12, 87040, ("nvidia-tesla-a100", 1)),
    "a2-highgpu-2g": MachineType("a2", 24, 174080, ("nvidia-tesla-a100", 2)),
}


@dataclass(frozen=True)
class Accelerator:
    family: str  # the machine family it attaches to
    zones: frozenset[str]


def _zones(*spec: str) -> frozenset[str]:
    """``_zones("us-central1:abcf", ...)`` -> the zone names."""
    return frozenset(f"{region}-{s}" for item in spec for region, sfx in [item.split(":")] for s in sfx)


ACCELERATORS: dict[str, Accelerator] = {
    "nvidia-tesla-t4": Accelerator(
        "n1",
        _zones(
            "us-central1:abcf",
            "us-east1:cd",
            "us-east4:abc",
            "us-west1:ab",
            "europe-west1:bcd",
            "europe-west4:abc",
            "asia-east1:ac",
        ),
    ),
    "nvidia-tesla-v100": Accelerator(
        "n1", _zones("us-central1:abcf", "us-west1:ab", "europe-west4:abc", "asia-east1:c")
    ),
    "nvidia-tesla-p4": Accelerator("n1", _zones("us-central1:ac", "us-east4:abc", "europe-west4:bc")),
    "nvidia-l4": Accelerator(
        "g2",
        _zones(
            "us-central1:abc",
            "us-east1:bcd",
            "us-east4:ac",
            "us-west1:abc",
            "europe-west1:bc",
            "europe-west4:abc",
            "asia-east1:ac",
        ),
    ),
    "nvidia-tesla-a100": Accelerator(
        "a2", _zones("us-central1:abcf", "us-east1:b", "us-west1:b", "europe-west4:ab", "asia-east1:c")
    ),
}

DEFAULT_SCOPES = [
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
]
_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
_RESOURCE_RE = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"(?:/clusters/(?P<cluster>[^/]+)(?:/nodePools/(?P<pool>[^/]+))?|/operations/(?P<operation>[^/]+))?$"
)

# --------------------------------------------------------------------------------------------------
# Resource names


@dataclass(frozen=True)
class Ref:
    """A parsed resource name: a location, a cluster, a node pool or an operation."""

    project: str
    location: str
    cluster: str = ""
    pool: str = ""
    operation: str = ""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def key(self) -> str:
        """The cluster's name, also its key in the store and for the Kubernetes hub."""
        return f"{self.parent}/clusters/{self.cluster}"

    @property
    def pool_name(self) -> str:
        return f"{self.key}/nodePools/{self.pool}"

    @property
    def operation_name(self) -> str:
        return f"{self.parent}/operations/{self.operation}"


_DEPTH = {"location": (), "cluster": ("cluster",), "pool": ("cluster", "pool"), "operation": ("operation",)}
_LEGACY = {"cluster": "cluster_id", "pool": "node_pool_id", "operation": "operation_id"}


def parse_ref(world: World, request: Any, kind: str, field: str = "name") -> Ref:
    """The resource a request names, from the v1 ``name``/``parent`` or the deprecated id fields.

    ``kind`` is "location", "cluster", "pool" or "operation". The project may be an id or a number;
    the result always carries the id. Example: ``parse_ref(world, GetClusterRequest(name=...), "cluster")``.
    """
    text = getattr(request, field, "")
    parts: dict[str, str] = {}
    if text:
        m = _RESOURCE_RE.match(text)
        wanted = set(_DEPTH[kind])
        if m is None or {k for k in ("cluster", "pool", "operation") if m.group(k)} != wanted:
            raise invalid(f'Invalid value for field "{field}": "{text}".')
        parts = {k: v for k, v in m.groupdict().items() if v}
    else:
        parts = {"project": request.project_id, "location": request.zone}
        parts.update({k: getattr(request, _LEGACY[k]) for k in _DEPTH[kind]})
        missing = [k for k, v in parts.items() if not v]
        if missing:
            raise invalid(
                f'Required field "{field}" is missing (or set project_id, zone and {_DEPTH[kind]}).'
            )
    parts["project"] = world.project(parts["project"])["project_id"]
    return Ref(**parts)


@dataclass(frozen=True)
class Site:
    """Where a cluster lives: its region, default node zones, and whether it is regional."""

    project: str
    number: str
    location: str
    region: str
    zones: tuple[str, ...]

    @property
    def regional(self) -> bool:
        return self.location == self.region


def site_of(world: World, project: str, location: str) -> Site:
    """A known zone (zonal cluster) or region (3 zones); INVALID_ARGUMENT otherwise."""
    number = str(world.project(project)["number"])
    if location in ZONES:
        return Site(project, number, location, ZONES[location], (location,))
    if location in REGIONS:
        return Site(project, number, location, location, tuple(REGIONS[location][:3]))
    raise invalid(f'Location "{location}" does not exist.')


def _link(site_or_ref: Site | Ref, project: str, tail: str) -> str:
    """Self links say ``zones/`` for zonal resources and ``locations/`` for regional ones, as GKE does."""
    kind = "zones" if site_or_ref.location in ZONES else "locations"
    return f"{API}/projects/{project}/{kind}/{site_or_ref.location}/{tail}"


def _timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _check_name(field: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise invalid(
            f'Invalid value for field "{field}": "{name}". Must be a match of regex (?:[a-z](?:[-a-z0-9]{{0,38}}[a-z0-9])?).'
        )


# --------------------------------------------------------------------------------------------------
# Store and proto <-> JSON


def store(world: World) -> dict[str, Any]:
    """``world.data["container"]``: {"clusters": {key: record}, "operations": {name: record}}."""
    return world.data.setdefault("container", {"clusters": {}, "operations": {}})  # type: ignore[no-any-return]


def _to_dict(msg: Any) -> dict[str, Any]:
    text = type(msg).to_json(
        msg,
        use_integers_for_enums=False,
        always_print_fields_with_no_presence=False,
        preserving_proto_field_name=True,
    )
    return json.loads(text)  # type: ignore[no-any-return]


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    return cls.from_json(json.dumps(data), ignore_unknown_fields=True)


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
# Node pool validation: machine, accelerators, autoscaling, service account


def _machine(name: str, zone: str) -> MachineType:
    mt = MACHINE_TYPES.get(name)
    if mt is None:
        raise invalid(f'Invalid machine type "{name}" in zone "{zone}": machine type does not exist.')
    return mt


def gpus_per_node(config: dict[str, Any]) -> tuple[str, int]:
    """(accelerator type, count per node): the ones asked for, else those built into the machine."""
    accs = config.get("accelerators") or []
    if accs:
        return str(accs[0].get("accelerator_type", "")), sum(int(a.get("accelerator_count", 0)) for a in accs)
    builtin = MACHINE_TYPES[config["machine_type"]].gpu
    return builtin if builtin else ("", 0)


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


def _check_autoscaling(a: gke.NodePoolAutoscaling, field: str) -> None:
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


def _clamp(requested: int, autoscaling: dict[str, Any] | None) -> int:
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


def _check_workload_metadata(config: gke.NodeConfig, workload_pool: str, field: str) -> None:
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


def _check_config(config: gke.NodeConfig, zones: list[str]) -> None:
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


def _pool_zones(site: Site, pool: gke.NodePool) -> list[str]:
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
    _check_name("node_pool.name", pool.name)
    _check_workload_metadata(pool.config, workload_pool, "node_pool.config")
    if pool.initial_node_count < 0:
        raise invalid(f'Invalid value for field "node_pool.initial_node_count": {pool.initial_node_count}.')
    zones = _pool_zones(site, pool)
    _fill_config_defaults(pool.config)
    _check_config(pool.config, zones)
    _check_autoscaling(pool.autoscaling, "node_pool.autoscaling")
    _check_node_service_account(world, caller, site, pool.config.service_account)
    pool.locations = zones
    pool.version = pool.version or GKE_VERSION
    pool.self_link = _link(site, site.project, f"clusters/{cluster}/nodePools/{pool.name}")
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
        "pool": _to_dict(pool),
        "status": "PROVISIONING",
        "requested": pool.initial_node_count,
        "current": 0,
    }
    record["size"] = _clamp(pool.initial_node_count, record["pool"].get("autoscaling"))
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
        "self_link": _link(site, site.number, f"operations/{name}"),
        "target_link": _link(site, site.number, target),
        "start": now,
        "running_at": now + duration * 0.2,
        "done_at": now + duration,
        "end": None,
        "error": "",
    }
    store(world)["operations"][name] = op
    return op


def operation_message(op: dict[str, Any]) -> gke.Operation:
    msg = gke.Operation(
        name=op["name"],
        zone=op["location"],
        location=op["location"],
        operation_type=op["type"],
        status=op["status"],
        self_link=op["self_link"],
        target_link=op["target_link"],
        start_time=_timestamp(op["start"]),
        end_time=_timestamp(op["end"]) if op["end"] else "",
    )
    if op["error"]:
        msg.status_message = op["error"]
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if op.get("stockout") else grpc.StatusCode.INTERNAL
        msg.error = status_pb2.Status(code=code.value[0], message=op["error"])
        if op.get("stockout"):
            msg.cluster_conditions = [
                gke.StatusCondition(
                    code=gke.StatusCondition.Code.GCE_STOCKOUT,
                    message=op["error"],
                    canonical_code=code.value[0],
                )
            ]
    return msg


# --------------------------------------------------------------------------------------------------
# Messages out of records


def _ca_b64(rec: dict[str, Any]) -> str:
    return base64.b64encode(rec["ca_pem"].encode()).decode() if rec["ca_pem"] else ""


def pool_message(pool: dict[str, Any]) -> gke.NodePool:
    msg: gke.NodePool = _from_dict(gke.NodePool, pool["pool"])
    msg.status = pool["status"]
    return msg


def label_fingerprint(labels: dict[str, str]) -> str:
    """An opaque fingerprint of the resource labels that changes whenever they change (GKE: 8 hex)."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:8]


def cluster_message(rec: dict[str, Any]) -> gke.Cluster:
    msg: gke.Cluster = _from_dict(gke.Cluster, rec["cluster"])
    msg.label_fingerprint = label_fingerprint(dict(msg.resource_labels))
    pools = list(rec["pools"].values())
    msg.status = rec["status"]
    msg.status_message = rec.get("status_message", "")
    msg.conditions = [
        gke.StatusCondition(code=getattr(gke.StatusCondition.Code, c["code"]), message=c["message"])
        for c in rec.get("conditions", [])
    ]
    msg.endpoint = rec["endpoint"]
    msg.master_auth.cluster_ca_certificate = _ca_b64(rec)
    msg.node_pools = [pool_message(p) for p in pools]
    msg.current_node_count = sum(p["current"] * len(p["pool"]["locations"]) for p in pools)
    msg.instance_group_urls = [u for p in pools for u in p["pool"].get("instance_group_urls", [])]
    return msg


def kube_nodes(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The node pools the Kubernetes API should show (``KubeHub`` contract, plus a few extras:
    ``accelerator_type``, ``spot``, ``preemptible``, ``zones``, ``labels``)."""
    nodes = []
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
            }
        )
    return nodes


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
    cluster.self_link = _link(site, site.project, f"clusters/{cluster.name}")
    cluster.zone = site.location
    cluster.location = site.location
    if not cluster.locations:
        cluster.locations = list(site.zones)
    cluster.id = f"{world.rng.getrandbits(128):032x}"
    cluster.create_time = _timestamp(now)
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
        cluster.node_config = _from_dict(gke.NodeConfig, pools[0]["pool"]["config"])
    return {
        "project": site.project,
        "location": site.location,
        "region": site.region,
        "name": cluster.name,
        "cluster": _to_dict(cluster),
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
    _check_name("cluster.name", cluster.name)
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
    size = _clamp(requested, autoscaling)
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
    _check_autoscaling(request.autoscaling, "autoscaling")
    with world.lock:
        rec, pool, site = _mutate_pool(world, ref, caller)
        autoscaling = _to_dict(request.autoscaling)
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
        msg = _from_dict(gke.NodePool, pool["pool"])
        locations_before = list(msg.locations)
        _apply_node_pool_update(request, msg)
        workload_pool = str((rec["cluster"].get("workload_identity_config") or {}).get("workload_pool") or "")
        _check_workload_metadata(msg.config, workload_pool, "update")
        zones = _pool_zones(site, msg)
        _check_config(msg.config, zones)
        updated = {**pool, "pool": _to_dict(msg)}
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
