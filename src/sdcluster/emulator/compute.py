"""Compute Engine v1, the REST subset google-cloud-compute's clients (and gcloud) call, over the world.

Served by the REST transport (``rest.py``) under ``/compute/`` with Compute's JSON shapes:

- ``regions.get/list`` with quotas whose usage is computed from what the world runs (``usage``):
  vCPUs per family (N1 and E2 count under ``CPUS``, N2 under ``N2_CPUS`` ...), the global
  ``CPUS_ALL_REGIONS`` and ``GPUS_ALL_REGIONS`` (in ``projects.get``), per-type GPU metrics
  (``NVIDIA_L4_GPUS`` ...), boot disks (pd-ssd and pd-balanced under ``SSD_TOTAL_GB``, pd-standard
  under ``DISKS_TOTAL_GB``) and external IPs (``IN_USE_ADDRESSES``: one per node, one per load balancer);
- ``zones.get/list`` and ``machineTypes.get/list`` from the emulator's catalog (``gkecatalog.ZONES``,
  ``gkecatalog.MACHINE_TYPES``): an unknown machine type is a 404, as Compute answers;
- ``networks.get/list``: a project has a ``default`` network unless ``Knobs.default_network`` is off
  (organisations with ``compute.skipDefaultNetworkCreation``);
- ``forwardingRules.get/list/aggregatedList/delete``, ``addresses.list``, ``regionOperations.get/wait``.

The Kubernetes side gives each LoadBalancer Service its forwarding rule with ``allocate_lb`` and
takes it back with ``release_lb``. Nothing here reacts to a cluster's deletion: a rule outlives its
cluster unless its Service was deleted first, as on GKE.

State: ``world.data["compute"]``: ``networks`` {project: {name: record}}, ``forwarding_rules``
{project: {region: {name: record}}}, ``addresses`` (same shape), ``operations`` {name: record}.

Example::

    ip = compute.allocate_lb(world, "demo-proj", "us-central1", cluster_key, service_uid,
                             service_name="default/tf-serving")
    compute.release_lb(world, "demo-proj", "us-central1", cluster_key, service_uid)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from functools import partial
from typing import Any

import grpc

from . import gke, gkecatalog
from .core import EmulatorError, World, invalid, not_found
from .rest import Call, JsonMethod

SERVICE = "compute.googleapis.com"
BASE = "https://www.googleapis.com/compute/v1"

# Metrics a project has per region / globally, in the order regions.get lists them.
REGIONAL_METRICS = (
    "CPUS",
    "N2_CPUS",
    "N2D_CPUS",
    "C2_CPUS",
    "A2_CPUS",
    "G2_CPUS",
    "DISKS_TOTAL_GB",
    "SSD_TOTAL_GB",
    "IN_USE_ADDRESSES",
    "STATIC_ADDRESSES",
    "NVIDIA_T4_GPUS",
    "NVIDIA_V100_GPUS",
    "NVIDIA_P4_GPUS",
    "NVIDIA_L4_GPUS",
    "NVIDIA_A100_GPUS",
)
GLOBAL_METRICS = ("CPUS_ALL_REGIONS", "GPUS_ALL_REGIONS", "NETWORKS", "FIREWALLS")
_SSD_DISKS = ("pd-ssd", "pd-balanced")


def cpu_metric(family: str) -> str:
    """The regional vCPU quota a machine family draws on: N1 and E2 count under ``CPUS``."""
    return "CPUS" if family in ("n1", "e2") else f"{family.upper()}_CPUS"


def gpu_metric(accelerator_type: str) -> str:
    """``nvidia-tesla-t4`` -> ``NVIDIA_T4_GPUS``; ``nvidia-l4`` -> ``NVIDIA_L4_GPUS``."""
    return accelerator_type.upper().replace("-TESLA", "").replace("-", "_") + "_GPUS"


# --------------------------------------------------------------------------------------------------
# Store


def store(world: World) -> dict[str, Any]:
    return world.data.setdefault(  # type: ignore[no-any-return]
        "compute", {"networks": {}, "forwarding_rules": {}, "addresses": {}, "operations": {}}
    )


def _id(world: World) -> str:
    return str(world.rng.getrandbits(63))


def _timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def networks(world: World, project: str) -> dict[str, dict[str, Any]]:
    """The project's networks; the first look creates ``default`` unless the knob says otherwise."""
    nets = store(world)["networks"]
    if project not in nets:
        nets[project] = {}
        if world.knobs.default_network:
            nets[project]["default"] = {
                "name": "default",
                "id": _id(world),
                "created": world.now(),
                "description": "Default network for the project",
            }
    return nets[project]  # type: ignore[no-any-return]


def _regional(world: World, kind: str, project: str, region: str) -> dict[str, dict[str, Any]]:
    return store(world)[kind].setdefault(project, {}).setdefault(region, {})  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# Quota usage, from the world


def pool_usage(pool: dict[str, Any], region: str, size: int | None = None) -> dict[tuple[str, str], float]:
    """What a GKE node pool draws at ``size`` nodes per zone (default: its target size).

    Keys are (scope, metric), scope being the region or ``"global"``.
    """
    cfg = pool["pool"]["config"]
    mt = gkecatalog.MACHINE_TYPES[cfg["machine_type"]]
    nodes = (pool["size"] if size is None else size) * len(pool["pool"]["locations"])
    gpu_type, gpus = gkecatalog.gpus_per_node(cfg)
    disk = "SSD_TOTAL_GB" if cfg.get("disk_type", "pd-balanced") in _SSD_DISKS else "DISKS_TOTAL_GB"
    out = {
        (region, cpu_metric(mt.family)): float(nodes * mt.cpus),
        ("global", "CPUS_ALL_REGIONS"): float(nodes * mt.cpus),
        (region, disk): float(nodes * int(cfg.get("disk_size_gb", 100))),
        (region, "IN_USE_ADDRESSES"): float(nodes),  # each node has an ephemeral external IP
    }
    if gpus:
        out[(region, gpu_metric(gpu_type))] = float(nodes * gpus)
        out[("global", "GPUS_ALL_REGIONS")] = float(nodes * gpus)
    return out


def _add(total: dict[tuple[str, str], float], more: dict[tuple[str, str], float]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0.0) + v


def usage(world: World, project: str, skip: tuple[str, str] | None = None) -> dict[tuple[str, str], float]:
    """Everything ``project`` draws now, by (scope, metric): nodes of every pool (running or being
    created, at their target size) and load-balancer addresses. ``skip`` = (cluster key, pool)."""
    total: dict[tuple[str, str], float] = {}
    with world.lock:
        for key, rec in gke.store(world)["clusters"].items():
            if rec["project"] != project:
                continue
            for name, pool in rec["pools"].items():
                if (key, name) != skip:
                    _add(total, pool_usage(pool, rec["region"]))
        for region, rules in store(world)["forwarding_rules"].get(project, {}).items():
            _add(total, {(region, "IN_USE_ADDRESSES"): float(len(rules))})
        for region, addresses in store(world)["addresses"].get(project, {}).items():
            _add(total, {(region, "STATIC_ADDRESSES"): float(len(addresses))})
        total[("global", "NETWORKS")] = float(len(networks(world, project)))
    return total


def limit(world: World, project: str, metric: str) -> float:
    return float(world.project(project)["quotas"].get(metric, 0.0))


def _check_order(key: tuple[str, str]) -> tuple[int, str]:
    """vCPUs first (the family's, then all regions'), then GPUs (all regions', then the type's)."""
    scope, metric = key
    if metric.endswith("CPUS") or metric == "CPUS_ALL_REGIONS":
        return (0 if scope != "global" else 1, metric)
    if "GPUS" in metric:
        return (2 if scope == "global" else 3, metric)
    return (4, metric)


def shortfall(
    world: World, project: str, demand: dict[tuple[str, str], float], skip: tuple[str, str] | None = None
) -> tuple[str, str, float, float, float] | None:
    """The first limit ``demand`` on top of current usage exceeds (CPUs first), as
    (scope, metric, amount asked, limit, in use); None when everything fits."""
    used = usage(world, project, skip)
    for scope, metric in sorted(demand, key=_check_order):
        amount = demand[(scope, metric)]
        if not amount:
            continue
        cap = limit(world, project, metric)
        in_use = used.get((scope, metric), 0.0)
        if in_use + amount > cap:
            return scope, metric, amount, cap, in_use
    return None


# --------------------------------------------------------------------------------------------------
# Load balancers (called by the Kubernetes side)


def _rule_name(service_uid: str) -> str:
    # GKE names a Service's forwarding rule "a" + its UID without dashes, cut to 32 characters.
    return ("a" + service_uid.replace("-", ""))[:32]


def rule_ips(world: World) -> set[str]:
    """The addresses every forwarding rule holds."""
    return {
        r["ip"]
        for regions in store(world)["forwarding_rules"].values()
        for rules in regions.values()
        for r in rules.values()
    }


def _next_ip(world: World) -> str:
    taken = rule_ips(world)
    base = int(ipaddress.IPv4Address("34.123.0.10"))
    n = 0
    while str(ipaddress.IPv4Address(base + n)) in taken:
        n += 1
    return str(ipaddress.IPv4Address(base + n))


def allocate_lb(
    world: World,
    project: str,
    region: str,
    cluster_key: str,
    service_uid: str,
    service_name: str = "",
    ip: str = "",
) -> str:
    """The external IP of the forwarding rule owned by Service ``service_uid`` of ``cluster_key``.

    Idempotent: a second call for the same Service returns the same IP. ``service_name``
    (``namespace/name``) goes into the rule's description, as GKE writes it; ``ip``: the address the
    Service's ingress shows (default: the next free one).
    """
    with world.lock:
        rules = _regional(world, "forwarding_rules", project, region)
        name = _rule_name(service_uid)
        if name not in rules:
            ip = ip or _next_ip(world)
            rules[name] = {
                "name": name,
                "id": _id(world),
                "created": world.now(),
                "ip": ip,
                "cluster_key": cluster_key,
                "service_uid": service_uid,
                "description": json.dumps(
                    {"kubernetes.io/service-name": service_name, "kubernetes.io/service-ip": ip},
                    separators=(",", ":"),
                ),
            }
            world.changed()
        return str(rules[name]["ip"])


def release_lb(world: World, project: str, region: str, cluster_key: str, service_uid: str) -> None:
    """Delete the Service's forwarding rule (its ephemeral IP goes with it). No-op if already gone."""
    with world.lock:
        rules = _regional(world, "forwarding_rules", project, region)
        rule = rules.get(_rule_name(service_uid))
        if rule is not None and rule["cluster_key"] == cluster_key:
            del rules[rule["name"]]
            world.changed()


def reserve_address(world: World, project: str, region: str, name: str, ip: str) -> None:
    """A reserved (static) external address, as ``gcloud compute addresses create`` makes one."""
    with world.lock:
        _regional(world, "addresses", project, region)[name] = {
            "name": name,
            "id": _id(world),
            "created": world.now(),
            "ip": ip,
        }
        world.changed()


# --------------------------------------------------------------------------------------------------
# JSON shapes


def _project_url(project: str) -> str:
    return f"{BASE}/projects/{project}"


def _zone_json(project: str, zone: str) -> dict[str, Any]:
    return {
        "kind": "compute#zone",
        "id": str(2000 + sorted(gkecatalog.ZONES).index(zone)),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": f"{_project_url(project)}/regions/{gkecatalog.ZONES[zone]}",
        "selfLink": f"{_project_url(project)}/zones/{zone}",
        "availableCpuPlatforms": ["Intel Cascade Lake", "Intel Ice Lake", "AMD Milan"],
        "supportsPzs": False,
    }


def _quota(metric: str, cap: float, used: float) -> dict[str, Any]:
    return {"metric": metric, "limit": cap, "usage": used}


def _region_json(world: World, project: str, region: str) -> dict[str, Any]:
    used = usage(world, project)
    return {
        "kind": "compute#region",
        "id": str(1000 + sorted(gkecatalog.REGIONS).index(region)),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": region,
        "description": region,
        "status": "UP",
        "zones": [f"{_project_url(project)}/zones/{z}" for z in gkecatalog.REGIONS[region]],
        "quotas": [_quota(m, limit(world, project, m), used.get((region, m), 0.0)) for m in REGIONAL_METRICS],
        "selfLink": f"{_project_url(project)}/regions/{region}",
        "supportsPzs": False,
    }


def _machine_type_json(project: str, zone: str, name: str) -> dict[str, Any]:
    mt = gkecatalog.MACHINE_TYPES[name]
    out: dict[str, Any] = {
        "kind": "compute#machineType",
        "id": str(abs(hash(name)) % 10**10),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": f"{mt.cpus} vCPUs, {mt.memory_mib / 1024:g} GB RAM",
        "guestCpus": mt.cpus,
        "memoryMb": mt.memory_mib,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "zone": zone,
        "selfLink": f"{_project_url(project)}/zones/{zone}/machineTypes/{name}",
        "isSharedCpu": name in ("e2-micro", "e2-small", "e2-medium"),
    }
    if mt.gpu:
        out["accelerators"] = [{"guestAcceleratorType": mt.gpu[0], "guestAcceleratorCount": mt.gpu[1]}]
    return out


def _machine_types_in(zone: str) -> list[str]:
    """The catalog's machine types a zone offers: GPU-carrying ones only where their GPU is."""
    return sorted(
        n
        for n, mt in gkecatalog.MACHINE_TYPES.items()
        if mt.gpu is None or zone in gkecatalog.ACCELERATORS[mt.gpu[0]].zones
    )


def _network_json(project: str, net: dict[str, Any]) -> dict[str, Any]:
    link = f"{_project_url(project)}/global/networks/{net['name']}"
    return {
        "kind": "compute#network",
        "id": net["id"],
        "creationTimestamp": _timestamp(net["created"]),
        "name": net["name"],
        "description": net["description"],
        "selfLink": link,
        "selfLinkWithId": f"{_project_url(project)}/global/networks/{net['id']}",
        "autoCreateSubnetworks": True,
        "subnetworks": [
            f"{_project_url(project)}/regions/{r}/subnetworks/{net['name']}"
            for r in sorted(gkecatalog.REGIONS)
        ],
        "routingConfig": {"routingMode": "REGIONAL"},
        "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL",
    }


def _rule_json(project: str, region: str, rule: dict[str, Any]) -> dict[str, Any]:
    regional = f"{_project_url(project)}/regions/{region}"
    return {
        "kind": "compute#forwardingRule",
        "id": rule["id"],
        "creationTimestamp": _timestamp(rule["created"]),
        "name": rule["name"],
        "description": rule["description"],
        "region": regional,
        "IPAddress": rule["ip"],
        "IPProtocol": "TCP",
        "portRange": "8501-8501",
        "target": f"{regional}/targetPools/{rule['name']}",
        "selfLink": f"{regional}/forwardingRules/{rule['name']}",
        "loadBalancingScheme": "EXTERNAL",
        "networkTier": "PREMIUM",
        "labelFingerprint": "42WmSpB8rSM=",
        "fingerprint": "d9lSMkxXVfw=",
    }


def _address_json(project: str, region: str, a: dict[str, Any]) -> dict[str, Any]:
    regional = f"{_project_url(project)}/regions/{region}"
    return {
        "kind": "compute#address",
        "id": a["id"],
        "creationTimestamp": _timestamp(a["created"]),
        "name": a["name"],
        "address": a["ip"],
        "status": "RESERVED",
        "region": regional,
        "selfLink": f"{regional}/addresses/{a['name']}",
        "networkTier": "PREMIUM",
        "addressType": "EXTERNAL",
        "labelFingerprint": "42WmSpB8rSM=",
    }


# --------------------------------------------------------------------------------------------------
# Requests


def _denied(permission: str, resource: str) -> EmulatorError:
    # Compute's own wording (HTTP 403, reason "forbidden").
    return EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED, f"Required '{permission}' permission for '{resource}'"
    )


def _project(world: World, call: Call, caller: str, permission: str, resource: str = "") -> str:
    """The project of the call, its API enabled and ``permission`` held by the caller."""
    ref = str(call.params["project"])
    try:
        project = str(world.project(ref)["project_id"])
    except EmulatorError:
        raise not_found(f"The resource 'projects/{ref}' was not found") from None
    world.require_service(project, SERVICE)
    if not world.has_permission(caller, permission, project):
        raise _denied(permission, f"projects/{project}{resource}")
    return project


def _region(call: Call) -> str:
    region = str(call.params["region"])
    if region not in gkecatalog.REGIONS:
        raise not_found(f"The resource 'projects/{call.params['project']}/regions/{region}' was not found")
    return region


def _zone(call: Call, unknown_is_invalid: bool = False) -> str:
    zone = str(call.params["zone"])
    if zone not in gkecatalog.ZONES:
        if unknown_is_invalid:
            raise invalid(f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
        raise not_found(f"The resource 'projects/{call.params['project']}/zones/{zone}' was not found")
    return zone


def _page(call: Call, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    if call.params.get("filter"):
        raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, "The emulator does not evaluate list filters.")
    size = int(call.params.get("maxResults") or 500)
    if not 0 <= size <= 500:
        raise invalid(f"Invalid value for field 'maxResults': '{size}'. Must be less than or equal to 500")
    start = int(call.params.get("pageToken") or 0)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


def _list(call: Call, kind: str, link: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    page, token = _page(call, items)
    out: dict[str, Any] = {"kind": kind, "id": link.removeprefix(BASE + "/"), "items": page, "selfLink": link}
    if token:
        out["nextPageToken"] = token
    return out


def regions_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.regions.get", f"/regions/{call.params['region']}")
    return _region_json(world, project, _region(call))


def regions_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.regions.list")
    items = [_region_json(world, project, r) for r in sorted(gkecatalog.REGIONS)]
    return _list(call, "compute#regionList", f"{_project_url(project)}/regions", items)


def projects_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.projects.get")
    p = world.project(project)
    used = usage(world, project)
    return {
        "kind": "compute#project",
        "id": p["number"],
        "creationTimestamp": _timestamp(p["create_time"]),
        "name": project,
        "quotas": [_quota(m, limit(world, project, m), used.get(("global", m), 0.0)) for m in GLOBAL_METRICS],
        "selfLink": _project_url(project),
        "defaultServiceAccount": f"{p['number']}-compute@developer.gserviceaccount.com",
        "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
        "defaultNetworkTier": "PREMIUM",
        "vmDnsSetting": "ZONAL_ONLY",
    }


def zones_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.zones.get", f"/zones/{call.params['zone']}")
    return _zone_json(project, _zone(call))


def zones_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.zones.list")
    items = [_zone_json(project, z) for z in sorted(gkecatalog.ZONES)]
    return _list(call, "compute#zoneList", f"{_project_url(project)}/zones", items)


def machine_types_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.machineTypes.get", f"/zones/{call.params['zone']}")
    zone = _zone(call, unknown_is_invalid=True)
    name = str(call.params["machineType"])
    if name not in _machine_types_in(zone):
        raise not_found(f"The resource 'projects/{project}/zones/{zone}/machineTypes/{name}' was not found")
    return _machine_type_json(project, zone, name)


def machine_types_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.machineTypes.list", f"/zones/{call.params['zone']}")
    zone = _zone(call, unknown_is_invalid=True)
    items = [_machine_type_json(project, zone, n) for n in _machine_types_in(zone)]
    return _list(call, "compute#machineTypeList", f"{_project_url(project)}/zones/{zone}/machineTypes", items)


def _accelerator_type_json(project: str, zone: str, name: str) -> dict[str, Any]:
    return {
        "kind": "compute#acceleratorType",
        "id": str(abs(hash(name)) % 10**10),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": name.replace("-", " ").title().replace("Nvidia", "NVIDIA"),
        "zone": f"{_project_url(project)}/zones/{zone}",
        "selfLink": f"{_project_url(project)}/zones/{zone}/acceleratorTypes/{name}",
        "maximumCardsPerInstance": 8,
    }


def _accelerator_types_in(zone: str) -> list[str]:
    return sorted(n for n, acc in gkecatalog.ACCELERATORS.items() if zone in acc.zones)


def accelerator_types_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    """A GPU type offered in the zone; one the zone lacks is a 404, as Compute answers."""
    zone_path = f"/zones/{call.params['zone']}"
    project = _project(world, call, caller, "compute.acceleratorTypes.get", zone_path)
    zone = _zone(call, unknown_is_invalid=True)
    name = str(call.params["acceleratorType"])
    if name not in _accelerator_types_in(zone):
        raise not_found(
            f"The resource 'projects/{project}/zones/{zone}/acceleratorTypes/{name}' was not found"
        )
    return _accelerator_type_json(project, zone, name)


def accelerator_types_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    zone_path = f"/zones/{call.params['zone']}"
    project = _project(world, call, caller, "compute.acceleratorTypes.list", zone_path)
    zone = _zone(call, unknown_is_invalid=True)
    items = [_accelerator_type_json(project, zone, n) for n in _accelerator_types_in(zone)]
    link = f"{_project_url(project)}/zones/{zone}/acceleratorTypes"
    return _list(call, "compute#acceleratorTypeList", link, items)


def subnetworks_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    """An auto-mode network has one subnetwork of its own name in every region."""
    name, region = str(call.params["subnetwork"]), _region(call)
    path = f"/regions/{region}/subnetworks/{name}"
    project = _project(world, call, caller, "compute.subnetworks.get", path)
    with world.lock:
        net = networks(world, project).get(name)
    if net is None:
        raise not_found(f"The resource 'projects/{project}{path}' was not found")
    return {
        "kind": "compute#subnetwork",
        "id": net["id"],
        "creationTimestamp": _timestamp(net["created"]),
        "name": name,
        "network": f"{_project_url(project)}/global/networks/{name}",
        "region": f"{_project_url(project)}/regions/{region}",
        "selfLink": f"{_project_url(project)}{path}",
        "ipCidrRange": f"10.{128 + sorted(gkecatalog.REGIONS).index(region) % 100}.0.0/20",
    }


def networks_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    name = str(call.params["network"])
    project = _project(world, call, caller, "compute.networks.get", f"/global/networks/{name}")
    with world.lock:
        net = networks(world, project).get(name)
        if net is None:
            raise not_found(f"The resource 'projects/{project}/global/networks/{name}' was not found")
        return _network_json(project, net)


def networks_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.networks.list")
    with world.lock:
        items = [_network_json(project, n) for _, n in sorted(networks(world, project).items())]
    return _list(call, "compute#networkList", f"{_project_url(project)}/global/networks", items)


def _rule(world: World, project: str, region: str, name: str) -> dict[str, Any]:
    rule = _regional(world, "forwarding_rules", project, region).get(name)
    if rule is None:
        raise not_found(
            f"The resource 'projects/{project}/regions/{region}/forwardingRules/{name}' was not found"
        )
    return rule


def forwarding_rules_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    name = str(call.params["forwardingRule"])
    project = _project(
        world,
        call,
        caller,
        "compute.forwardingRules.get",
        f"/regions/{call.params['region']}/forwardingRules/{name}",
    )
    region = _region(call)
    with world.lock:
        return _rule_json(project, region, _rule(world, project, region, name))


def forwarding_rules_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(
        world, call, caller, "compute.forwardingRules.list", f"/regions/{call.params['region']}"
    )
    region = _region(call)
    with world.lock:
        rules = _regional(world, "forwarding_rules", project, region)
        items = [_rule_json(project, region, r) for _, r in sorted(rules.items())]
    link = f"{_project_url(project)}/regions/{region}/forwardingRules"
    return _list(call, "compute#forwardingRuleList", link, items)


def forwarding_rules_aggregated_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.forwardingRules.list")
    if call.params.get("filter"):
        raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, "The emulator does not evaluate list filters.")
    scopes: dict[str, Any] = {}
    with world.lock:
        for region in sorted(gkecatalog.REGIONS):
            rules = _regional(world, "forwarding_rules", project, region)
            scope = f"regions/{region}"
            if rules:
                scopes[scope] = {
                    "forwardingRules": [_rule_json(project, region, r) for _, r in sorted(rules.items())]
                }
            else:
                scopes[scope] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope '{scope}' on this page.",
                        "data": [{"key": "scope", "value": scope}],
                    }
                }
    return {
        "kind": "compute#forwardingRuleAggregatedList",
        "id": f"projects/{project}/aggregated/forwardingRules",
        "items": scopes,
        "selfLink": f"{_project_url(project)}/aggregated/forwardingRules",
    }


def _operation(
    world: World, project: str, region: str, op_type: str, target: str, caller: str
) -> dict[str, Any]:
    now = world.now()
    name = f"operation-{int(now * 1000)}-{world.rng.getrandbits(48):012x}"
    regional = f"{_project_url(project)}/regions/{region}"
    op = {
        "kind": "compute#operation",
        "id": _id(world),
        "name": name,
        "operationType": op_type,
        "targetLink": target,
        "targetId": _id(world),
        "status": "DONE",
        "user": caller.split(":", 1)[-1],
        "progress": 100,
        "insertTime": _timestamp(now),
        "startTime": _timestamp(now),
        "endTime": _timestamp(now),
        "selfLink": f"{regional}/operations/{name}",
        "region": regional,
    }
    store(world)["operations"][name] = {"project": project, "region": region, "json": op}
    return op


def forwarding_rules_delete(world: World, call: Call, caller: str) -> dict[str, Any]:
    name = str(call.params["forwardingRule"])
    project = _project(
        world,
        call,
        caller,
        "compute.forwardingRules.delete",
        f"/regions/{call.params['region']}/forwardingRules/{name}",
    )
    region = _region(call)
    with world.lock:
        rule = _rule(world, project, region, name)
        del _regional(world, "forwarding_rules", project, region)[name]
        op = _operation(
            world, project, region, "delete", _rule_json(project, region, rule)["selfLink"], caller
        )
        world.changed()
        return op


def addresses_list(world: World, call: Call, caller: str) -> dict[str, Any]:
    project = _project(world, call, caller, "compute.addresses.list", f"/regions/{call.params['region']}")
    region = _region(call)
    with world.lock:
        items = [
            _address_json(project, region, a)
            for _, a in sorted(_regional(world, "addresses", project, region).items())
        ]
    return _list(call, "compute#addressList", f"{_project_url(project)}/regions/{region}/addresses", items)


def region_operations_get(world: World, call: Call, caller: str) -> dict[str, Any]:
    name = str(call.params["operation"])
    project = _project(
        world, call, caller, "compute.regionOperations.get", f"/regions/{call.params['region']}"
    )
    region = _region(call)
    with world.lock:
        op = store(world)["operations"].get(name)
        if op is None or (op["project"], op["region"]) != (project, region):
            raise not_found(
                f"The resource 'projects/{project}/regions/{region}/operations/{name}' was not found"
            )
        return dict(op["json"])


def json_methods(world: World) -> dict[str, JsonMethod]:
    """The Compute Engine methods served, by ``compute.v1:<method id>`` (``rest.bind``)."""

    def m(fn: Any, name: str, mutating: bool = False) -> JsonMethod:
        def resource(call: Call) -> str:
            return "/".join(
                f"{k}/{call.params[k]}" for k in ("project", "region", "zone") if k in call.params
            )

        return JsonMethod(partial(fn, world), "compute", name, mutating=mutating, resource=resource)

    return {
        "compute.v1:projects.get": m(projects_get, "projects.get"),
        "compute.v1:regions.get": m(regions_get, "regions.get"),
        "compute.v1:regions.list": m(regions_list, "regions.list"),
        "compute.v1:zones.get": m(zones_get, "zones.get"),
        "compute.v1:zones.list": m(zones_list, "zones.list"),
        "compute.v1:machineTypes.get": m(machine_types_get, "machineTypes.get"),
        "compute.v1:machineTypes.list": m(machine_types_list, "machineTypes.list"),
        "compute.v1:acceleratorTypes.get": m(accelerator_types_get, "acceleratorTypes.get"),
        "compute.v1:acceleratorTypes.list": m(accelerator_types_list, "acceleratorTypes.list"),
        "compute.v1:subnetworks.get": m(subnetworks_get, "subnetworks.get"),
        "compute.v1:networks.get": m(networks_get, "networks.get"),
        "compute.v1:networks.list": m(networks_list, "networks.list"),
        "compute.v1:forwardingRules.get": m(forwarding_rules_get, "forwardingRules.get"),
        "compute.v1:forwardingRules.list": m(forwarding_rules_list, "forwardingRules.list"),
        "compute.v1:forwardingRules.aggregatedList": m(
            forwarding_rules_aggregated_list, "forwardingRules.aggregatedList"
        ),
        "compute.v1:forwardingRules.delete": m(
            forwarding_rules_delete, "forwardingRules.delete", mutating=True
        ),
        "compute.v1:addresses.list": m(addresses_list, "addresses.list"),
        "compute.v1:regionOperations.get": m(region_operations_get, "regionOperations.get"),
        "compute.v1:regionOperations.wait": m(region_operations_get, "regionOperations.wait"),
    }
