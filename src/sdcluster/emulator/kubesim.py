"""Pure helpers of an emulated GKE cluster: no state, no clock (callers pass ``now``).

- quantities and GKE's node allocatable (system reservations subtracted: an n2-standard-4 offers
  3920m CPU and about 13 GiB to pods);
- Node objects, and the system pods GKE runs on every node (kube-system DaemonSets and mirror pods,
  the GKE metadata server on GKE_METADATA nodes), which take their share of that allocatable;
- the scheduler's fit check and its words (``0/1 nodes are available: 1 Insufficient cpu. ...``);
- the Deployment controller's arithmetic (maxSurge/maxUnavailable) and its condition bookkeeping;
- Events as the API shows them.

Example::

    gke_allocatable(4, 16384)       # (3920, 14283307008): millicores and bytes for pods
    parse_quantity("500m")          # 0.5
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

# Repositories the emulated nodes can pull (anything else fails with ErrImagePull, as a typo would).
PULLABLE_REPOSITORIES = ("tensorflow/serving", "nginx", "busybox", "python", "alpine", "ubuntu", "debian")
PULLABLE_REGISTRIES = ("gcr.io/", "registry.k8s.io/", "us-docker.pkg.dev/", "europe-docker.pkg.dev/")
PULLABLE_REGISTRY_SUFFIXES = ("-docker.pkg.dev",)

GPU = "nvidia.com/gpu"
MAX_PODS_PER_NODE = 110
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def _suffix(n: int, *parts: object) -> str:
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in _digest(*parts)[:n])


def stable_uid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(str(p) for p in parts)))


# --------------------------------------------------------------------------------------------------
# Quantities


class QuantityError(ValueError):
    pass


_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(q: Any) -> float:
    """A Kubernetes quantity in base units: ``"500m"`` -> 0.5, ``"12Gi"`` -> 12884901888.0."""
    if isinstance(q, bool):
        raise QuantityError(str(q))
    if isinstance(q, int | float):
        return float(q)
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise QuantityError(str(q))
    number, suffix = float(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * 10.0 ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def gke_allocatable(cpus: float, memory_mib: float) -> tuple[int, int]:
    """(millicores, bytes) a GKE node leaves to pods after its documented system reservations."""
    milli = int(cpus * 1000)
    reserved_cpu = _tiered(milli, ((1000, 0.06), (1000, 0.01), (2000, 0.005), (float("inf"), 0.0025)))
    gib = 1024.0
    if memory_mib < gib:
        reserved_mem = 255.0
    else:
        reserved_mem = _tiered(
            memory_mib,
            ((4 * gib, 0.25), (4 * gib, 0.2), (8 * gib, 0.1), (112 * gib, 0.06), (float("inf"), 0.02)),
        )
    eviction_mib = 100.0
    mem_bytes = int((memory_mib - reserved_mem - eviction_mib) * 2**20)
    return milli - round(reserved_cpu), max(mem_bytes, 0)


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...]) -> float:
    reserved, rest = 0.0, amount
    for size, share in tiers:
        part = min(rest, size)
        reserved += part * share
        rest -= part
        if rest <= 0:
            break
    return reserved


# --------------------------------------------------------------------------------------------------
# Nodes


def node_name(key: str, pool: str, index: int) -> str:
    """GKE's node name: ``gke-<cluster>-<pool>-<group hash>-<4 chars>`` (stable per pool and index)."""
    cluster = key.split("/")[5]
    group = _digest(key, pool).hex()[:8]
    return f"gke-{cluster[:20]}-{pool[:16]}-{group}-{_suffix(4, key, pool, index)}"


def node_labels(pool: dict[str, Any], name: str, zone: str) -> dict[str, str]:
    """The labels GKE puts on a node of ``pool`` (what nodeSelectors match)."""
    machine = str(pool.get("machine_type", ""))
    labels = {
        **{str(k): str(v) for k, v in (pool.get("labels") or {}).items()},
        "cloud.google.com/gke-nodepool": str(pool["name"]),
        "cloud.google.com/machine-family": machine.split("-")[0],
        "node.kubernetes.io/instance-type": machine,
        "beta.kubernetes.io/instance-type": machine,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": zone.rsplit("-", 1)[0] if zone.count("-") > 1 else zone,
    }
    if pool.get("accelerator_type"):
        labels["cloud.google.com/gke-accelerator"] = str(pool["accelerator_type"])
    if pool.get("spot"):
        labels["cloud.google.com/gke-spot"] = "true"
    if pool.get("preemptible"):
        labels["cloud.google.com/gke-preemptible"] = "true"
    if gke_metadata(pool):
        labels["iam.gke.io/gke-metadata-server-enabled"] = "true"
    return labels


def gke_metadata(pool: dict[str, Any]) -> bool:
    """Whether the pool's nodes run the GKE metadata server (Workload Identity for pods)."""
    return pool.get("workload_metadata") == "GKE_METADATA"


def node_resources(pool: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) of one node of ``pool``."""
    cpus, mem_mib = float(pool.get("cpus", 0)), float(pool.get("memory_mib", 0))
    alloc_cpu, alloc_mem = gke_allocatable(cpus, mem_mib)
    capacity = {
        "cpu": _fmt_number(cpus),
        "memory": f"{int(mem_mib * 1024)}Ki",
        "pods": str(MAX_PODS_PER_NODE),
        "ephemeral-storage": "98831908Ki",
    }
    allocatable = {
        "cpu": f"{alloc_cpu}m",
        "memory": f"{alloc_mem // 1024}Ki",
        "pods": str(MAX_PODS_PER_NODE),
        "ephemeral-storage": "47060071478",
    }
    gpus = int(pool.get("accelerators", 0) or 0)
    if gpus:
        capacity[GPU] = allocatable[GPU] = str(gpus)
    return capacity, allocatable


def node_object(key: str, node: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
    """The Node object of ``node`` ({"name", "pool", "index", "zone", "created"}) in cluster ``key``."""
    project = key.split("/")[1]
    name, zone, index = node["name"], node["zone"], int(node["index"])
    capacity, allocatable = node_resources(pool)
    created = rfc3339(node["created"])
    return {
        "metadata": {
            "name": name,
            "uid": stable_uid("node", project, zone, name),
            "resourceVersion": "1",
            "creationTimestamp": created,
            "labels": node_labels(pool, name, zone),
        },
        "spec": {
            "podCIDR": f"10.4.{index % 256}.0/24",
            "providerID": f"gce://{project}/{zone}/{name}",
            **({"taints": [dict(t) for t in pool["taints"]]} if pool.get("taints") else {}),
        },
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": created,
                    "lastTransitionTime": created,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(index)},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Container-Optimized OS from Google",
                "kubeletVersion": "v1.37.0-gke.1000",
                "kubeProxyVersion": "v1.37.0-gke.1000",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.6.56+",
                "bootID": stable_uid("boot", name),
                "machineID": _digest("machine", name).hex()[:32],
                "systemUUID": stable_uid("system", name),
            },
        },
    }


def node_ip(index: int) -> str:
    return f"10.128.{index // 250 % 256}.{index % 250 + 2}"


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------------------------------
# What GKE runs on every node: kube-system pods with resource requests (observed on GKE 1.29 nodes,
# see docs/emulator-rules.md). They count against the node's allocatable like any pod.


@dataclass(frozen=True)
class SystemPod:
    prefix: str  # kube-proxy is a mirror pod named after the node; the others are DaemonSet pods
    cpu_m: int
    memory_mi: int
    mirror: bool = False
    gke_metadata_only: bool = False


SYSTEM_PODS = (
    SystemPod("kube-proxy", 100, 0, mirror=True),
    SystemPod("fluentbit-gke", 105, 230),
    SystemPod("ip-masq-agent", 10, 16),
    SystemPod("gke-metadata-server", 100, 100, gke_metadata_only=True),
)


def system_pods(pool: dict[str, Any]) -> list[SystemPod]:
    """The system pods one node of ``pool`` runs."""
    return [p for p in SYSTEM_PODS if gke_metadata(pool) or not p.gke_metadata_only]


def system_pod_objects(key: str, node: dict[str, Any], pool: dict[str, Any]) -> list[dict[str, Any]]:
    """The kube-system Pod objects of one node (what ``kubectl describe node`` lists)."""
    out = []
    for sp in system_pods(pool):
        name = (
            f"{sp.prefix}-{node['name']}"
            if sp.mirror
            else f"{sp.prefix}-{_suffix(5, key, node['name'], sp.prefix)}"
        )
        requests = {"cpu": f"{sp.cpu_m}m", **({"memory": f"{sp.memory_mi}Mi"} if sp.memory_mi else {})}
        started = rfc3339(node["created"])
        owner = (
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": node["name"],
                "uid": stable_uid("node", key, node["name"]),
            }
            if sp.mirror
            else {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": sp.prefix,
                "uid": stable_uid("ds", key, sp.prefix),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": "kube-system",
                    "uid": stable_uid("pod", key, name),
                    "resourceVersion": "1",
                    "creationTimestamp": started,
                    "labels": {"k8s-app": sp.prefix},
                    "ownerReferences": [owner],
                },
                "spec": {
                    "nodeName": node["name"],
                    "priorityClassName": "system-node-critical",
                    "containers": [
                        {
                            "name": sp.prefix,
                            "image": f"gke.gcr.io/{sp.prefix}:gke",
                            "resources": {"requests": requests},
                        }
                    ],
                },
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                    "hostIP": node_ip(int(node["index"])),
                    "startTime": started,
                    "qosClass": "Burstable",
                },
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# Scheduling: what is left on a node, whether a pod fits, and the scheduler's message when it does not


@dataclass
class Free:
    """What a node has left for more pods."""

    name: str
    labels: dict[str, str]
    cpu: float
    memory: float
    gpu: float
    pods: int
    taints: list[dict[str, str]] = field(default_factory=list)
    allocatable: tuple[float, float] = (0.0, 0.0)  # (cpu, memory): what LeastAllocated scores against
    apps: list[str] = field(default_factory=list)  # the ``k8s-app`` labels of the add-on pods on it

    def take(self, need: dict[str, float]) -> None:
        self.cpu -= need["cpu"]
        self.memory -= need["memory"]
        self.gpu -= need[GPU]
        self.pods -= 1


def free_on(node_obj: dict[str, Any], pool: dict[str, Any]) -> Free:
    """An empty node's room: allocatable minus the system pods GKE runs on it."""
    alloc = node_obj["status"]["allocatable"]
    free = Free(
        node_obj["metadata"]["name"],
        node_obj["metadata"]["labels"],
        parse_quantity(alloc["cpu"]),
        parse_quantity(alloc["memory"]),
        parse_quantity(alloc.get(GPU, 0)),
        MAX_PODS_PER_NODE,
        list(node_obj["spec"].get("taints") or []),
        (parse_quantity(alloc["cpu"]), parse_quantity(alloc["memory"])),
    )
    for sp in system_pods(pool):
        free.take({"cpu": sp.cpu_m / 1000, "memory": sp.memory_mi * 2.0**20, GPU: 0.0})
    return free


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint`` (``Toleration.ToleratesTaint``: an empty
    effect matches every effect, an empty key with ``Exists`` every key, ``Equal`` compares values)."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("key") and t["key"] != taint.get("key"):
            continue
        if not t.get("key") and t.get("operator") != "Exists":
            continue
        if t.get("operator") == "Exists" or str(t.get("value", "")) == taint.get("value", ""):
            return True
    return False


def untolerated(taints: list[dict[str, str]], pod_spec: dict[str, Any]) -> dict[str, str] | None:
    """The first NoSchedule/NoExecute taint the pod does not tolerate (the TaintToleration filter)."""
    tolerations = list(pod_spec.get("tolerations") or [])
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return taint
    return None


def misfits(node: Free, need: dict[str, float], pod_spec: dict[str, Any]) -> list[str]:
    """Why a pod does not fit on ``node`` (empty: it fits), in the scheduler's words. The filters in
    the default plugin order: TaintToleration, NodeAffinity, NodeResourcesFit; a node reports the
    first that fails."""
    taint = untolerated(node.taints, pod_spec)
    if taint is not None:
        return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    selector = pod_spec.get("nodeSelector") or {}
    if not all(node.labels.get(k) == v for k, v in selector.items()):
        return ["node(s) didn't match Pod's node affinity/selector"]
    short = []
    if need["cpu"] > node.cpu + 1e-9:
        short.append("Insufficient cpu")
    if need["memory"] > node.memory:
        short.append("Insufficient memory")
    if need[GPU] > node.gpu:
        short.append(f"Insufficient {GPU}")
    if node.pods < 1:
        short.append("Too many pods")
    return short


def score(node: Free, need: dict[str, float], spread_app: str = "") -> float:
    """The default scheduler's preference among fitting nodes, reduced to what matters here:
    NodeResourcesFit's ``LeastAllocated`` (the share of CPU and memory left after the pod, averaged)
    and, for a pod with a preferred anti-affinity on its ``k8s-app`` across hostnames (kube-dns), a
    heavy penalty on a node already running one."""
    cpu, memory = node.allocatable
    left = ((node.cpu - need["cpu"]) / cpu if cpu else 0.0) + (
        (node.memory - need["memory"]) / memory if memory else 0.0
    )
    return left / 2 - (1.0 if spread_app and spread_app in node.apps else 0.0)


def pod_involved(pod: dict[str, Any]) -> dict[str, Any]:
    """An event's ``involvedObject`` for a pod record."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod["name"],
        "namespace": pod["namespace"],
        "uid": pod["uid"],
    }


def count_reasons(reasons: list[list[str]]) -> str:
    """``[["Insufficient cpu"], ["Insufficient cpu"]]`` -> ``"2 Insufficient cpu"``."""
    counts: dict[str, int] = {}
    for rs in reasons:
        for r in rs:
            counts[r] = counts.get(r, 0) + 1
    return ", ".join(sorted(f"{c} {r}" for r, c in counts.items()))


def unschedulable_message(reasons: list[list[str]]) -> str:
    """The scheduler's FailedScheduling message from each node's misfits."""
    if not reasons:
        return "no nodes available to schedule pods"
    n = len(reasons)
    # Per node: a resource shortfall might be solved by evicting lower-priority pods (none here), a
    # taint or selector mismatch (UnschedulableAndUnresolvable) never is.
    per_node = [
        ["No preemption victims found for incoming pod"]
        if rs and all(r.startswith(("Insufficient", "Too many")) for r in rs)
        else ["Preemption is not helpful for scheduling"]
        for rs in reasons
    ]
    return f"0/{n} nodes are available: {count_reasons(reasons)}. preemption: 0/{n} nodes are available: {count_reasons(per_node)}."


# --------------------------------------------------------------------------------------------------
# Pod templates


def template_hash(template: Any) -> str:
    """The ``pod-template-hash`` label value of a Deployment's pod template (10 chars)."""
    return _suffix(10, json.dumps(template, sort_keys=True))


def pod_requests(pod_spec: dict[str, Any]) -> dict[str, float]:
    """Summed container requests (a limit without a request counts as the request, as upstream)."""
    total = {"cpu": 0.0, "memory": 0.0, GPU: 0.0}
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {}
        requests = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for name in total:
            if name in requests:
                total[name] += parse_quantity(requests[name])
    return total


def image_pullable(image: str) -> bool:
    """Whether the emulated nodes can pull ``image`` (an allow-list of well-known repositories)."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: len(ref) - len(last[-1]) + last[-1].index(":")]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if ref.startswith("library/"):
        ref = ref[len("library/") :]
    if ref in PULLABLE_REPOSITORIES or ref.startswith(PULLABLE_REGISTRIES):
        return True
    registry = ref.split("/", 1)[0]
    return "/" in ref and registry.endswith(PULLABLE_REGISTRY_SUFFIXES)


def is_tf_serving(image: str) -> bool:
    ref = image.removeprefix("docker.io/").removeprefix("index.docker.io/")
    return ref == "tensorflow/serving" or ref.startswith(("tensorflow/serving:", "tensorflow/serving@"))


# --------------------------------------------------------------------------------------------------
# The Deployment controller's arithmetic and conditions (pkg/controller/deployment)


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = total * float(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def fenceposts(spec: dict[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as ResolveFenceposts computes them: surge rounds up, unavailable
    down, and both zero means one unavailable."""
    desired = int(spec.get("replicas", 1))
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), desired, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, desired)


def set_condition(
    conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, now: float
) -> list[dict[str, Any]]:
    """SetDeploymentCondition: a condition with the same status and reason is kept as it is; a
    changed one replaces it, keeping lastTransitionTime when only the reason changed."""
    stamp = rfc3339(now)
    old = next((c for c in conditions if c["type"] == ctype), None)
    if old is not None and old["status"] == status and old["reason"] == reason:
        return conditions
    new = {
        "type": ctype,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": old["lastTransitionTime"]
        if old is not None and old["status"] == status
        else stamp,
        "reason": reason,
        "message": message,
    }
    return [c for c in conditions if c["type"] != ctype] + [new]


def remove_condition(conditions: list[dict[str, Any]], ctype: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c["type"] != ctype]


def get_condition(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c["type"] == ctype), None)


# --------------------------------------------------------------------------------------------------
# Events


def event(
    involved: dict[str, Any],
    reason: str,
    message: str,
    t: float,
    kind: str = "Normal",
    component: str = "kubelet",
) -> dict[str, Any]:
    """An Event about ``involved`` ({kind, name, namespace, uid, apiVersion})."""
    name = f"{involved['name']}.{_digest(involved.get('uid'), reason, message).hex()[:16]}"
    stamp = rfc3339(t)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": name,
            "namespace": involved.get("namespace", "default"),
            "uid": stable_uid("event", name),
            "resourceVersion": "1",
            "creationTimestamp": stamp,
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def service_events(
    service: dict[str, Any], lb: dict[str, Any], lb_s: float, now: float
) -> list[dict[str, Any]]:
    """The service controller's story of a LoadBalancer: ensuring, ensured, deleting."""
    meta = service["metadata"]
    involved = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid", ""),
    }
    out = [
        event(
            involved,
            "EnsuringLoadBalancer",
            "Ensuring load balancer",
            lb["since"],
            component="service-controller",
        )
    ]
    if now >= lb["since"] + lb_s:
        out.append(
            event(
                involved,
                "EnsuredLoadBalancer",
                "Ensured load balancer",
                lb["since"] + lb_s,
                component="service-controller",
            )
        )
    if lb.get("deleting"):
        out.append(
            event(
                involved,
                "DeletingLoadBalancer",
                "Deleting load balancer",
                lb["deleting"],
                component="service-controller",
            )
        )
    return out
