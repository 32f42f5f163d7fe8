"""The emulated GKE's catalog and names: API constants, regions and zones, machine types,
accelerators, default node scopes (a representative subset of Google Cloud's), resource names
(``Ref``, ``Site``), the proto <-> JSON records and the messages built from them (shared by gke.py,
gkepools.py and compute.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.container_v1 import types as gke
from google.rpc import status_pb2

from .core import World, invalid

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


def link(site_or_ref: Site | Ref, project: str, tail: str) -> str:
    """Self links say ``zones/`` for zonal resources and ``locations/`` for regional ones, as GKE does."""
    kind = "zones" if site_or_ref.location in ZONES else "locations"
    return f"{API}/projects/{project}/{kind}/{site_or_ref.location}/{tail}"


def timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def check_name(field: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise invalid(
            f'Invalid value for field "{field}": "{name}". Must be a match of regex (?:[a-z](?:[-a-z0-9]{{0,38}}[a-z0-9])?).'
        )


def to_dict(msg: Any) -> dict[str, Any]:
    text = type(msg).to_json(
        msg,
        use_integers_for_enums=False,
        always_print_fields_with_no_presence=False,
        preserving_proto_field_name=True,
    )
    return json.loads(text)  # type: ignore[no-any-return]


def from_dict(cls: Any, data: dict[str, Any]) -> Any:
    return cls.from_json(json.dumps(data), ignore_unknown_fields=True)


def gpus_per_node(config: dict[str, Any]) -> tuple[str, int]:
    """(accelerator type, count per node): the ones asked for, else those built into the machine."""
    accs = config.get("accelerators") or []
    if accs:
        return str(accs[0].get("accelerator_type", "")), sum(int(a.get("accelerator_count", 0)) for a in accs)
    builtin = MACHINE_TYPES[config["machine_type"]].gpu
    return builtin if builtin else ("", 0)


# --------------------------------------------------------------------------------------------------
# Messages out of records


def operation_message(op: dict[str, Any]) -> gke.Operation:
    msg = gke.Operation(
        name=op["name"],
        zone=op["location"],
        location=op["location"],
        operation_type=op["type"],
        status=op["status"],
        self_link=op["self_link"],
        target_link=op["target_link"],
        start_time=timestamp(op["start"]),
        end_time=timestamp(op["end"]) if op["end"] else "",
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
    msg: gke.NodePool = from_dict(gke.NodePool, pool["pool"])
    msg.status = pool["status"]
    return msg


def label_fingerprint(labels: dict[str, str]) -> str:
    """An opaque fingerprint of the resource labels that changes whenever they change (GKE: 8 hex)."""
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:8]


def cluster_message(rec: dict[str, Any]) -> gke.Cluster:
    msg: gke.Cluster = from_dict(gke.Cluster, rec["cluster"])
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
