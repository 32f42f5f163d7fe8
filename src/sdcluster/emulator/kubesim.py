"""What a GKE cluster's nodes and controllers make of the stored objects (pure functions of data + time).

- nodes synthesized from the node pools, with GKE's allocatable (system reservations subtracted:
  an n2-standard-4 offers 3920m CPU and about 13 GiB to pods);
- a first-fit scheduler (Deployments in creation order) that says why a pod stays Pending, in the
  scheduler's words (``0/1 nodes are available: 1 Insufficient cpu. ...``);
- pods of a Deployment (``<deploy>-<template hash>-<5 chars>``), their image pulls and readiness
  ``rollout_s`` after they were created, the Deployment status a controller would write, and the
  events a user sees in ``kubectl describe``.

Simplification, on purpose: only the pods of a Deployment's current template take part in
scheduling; the pods of the previous template keep serving until the new ones are ready.

Example::

    gke_allocatable(4, 16384)       # (3920, 14283307008): millicores and bytes for pods
    parse_quantity("500m")          # 0.5
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
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


def node_objects(key: str, pools: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """The Node objects of cluster ``key`` (``projects/P/locations/Z/clusters/C``) for its pools."""
    parts = key.split("/")
    project, zone, cluster = parts[1], parts[3], parts[5]
    nodes: list[dict[str, Any]] = []
    for pool in pools:
        pool_name = str(pool["name"])
        group = _digest(key, pool_name).hex()[:8]
        cpus, mem_mib = float(pool.get("cpus", 0)), float(pool.get("memory_mib", 0))
        alloc_cpu, alloc_mem = gke_allocatable(cpus, mem_mib)
        gpus = int(pool.get("accelerators", 0) or 0)
        zones = list(pool.get("zones") or []) or [zone]
        for i in range(int(pool.get("node_count", 0))):
            name = f"gke-{cluster[:20]}-{pool_name[:16]}-{group}-{_suffix(4, key, pool_name, i)}"
            node_zone = zones[i % len(zones)]
            labels = {
                **{str(k): str(v) for k, v in (pool.get("labels") or {}).items()},
                "cloud.google.com/gke-nodepool": pool_name,
                "cloud.google.com/machine-family": str(pool.get("machine_type", "")).split("-")[0],
                "node.kubernetes.io/instance-type": str(pool.get("machine_type", "")),
                "beta.kubernetes.io/instance-type": str(pool.get("machine_type", "")),
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": node_zone,
                "topology.kubernetes.io/region": node_zone.rsplit("-", 1)[0]
                if node_zone.count("-") > 1
                else node_zone,
            }
            if pool.get("accelerator_type"):
                labels["cloud.google.com/gke-accelerator"] = str(pool["accelerator_type"])
            if pool.get("spot"):
                labels["cloud.google.com/gke-spot"] = "true"
            if pool.get("preemptible"):
                labels["cloud.google.com/gke-preemptible"] = "true"
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
            if gpus:
                capacity[GPU] = allocatable[GPU] = str(gpus)
            nodes.append(_node(name, project, node_zone, labels, capacity, allocatable, since, len(nodes)))
    return nodes


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _node(
    name: str,
    project: str,
    zone: str,
    labels: dict[str, str],
    capacity: dict[str, str],
    allocatable: dict[str, str],
    since: float,
    index: int,
) -> dict[str, Any]:
    created = rfc3339(since)
    return {
        "metadata": {
            "name": name,
            "uid": stable_uid("node", project, zone, name),
            "resourceVersion": "1",
            "creationTimestamp": created,
            "labels": labels,
        },
        "spec": {"podCIDR": f"10.4.{index}.0/24", "providerID": f"gce://{project}/{zone}/{name}"},
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
                {"type": "InternalIP", "address": f"10.128.0.{index + 2}"},
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
# Scheduling


@dataclass
class Placement:
    """Where each pod of one Deployment runs (None: Pending) and, if any is Pending, why."""

    nodes: list[str | None] = field(default_factory=list)
    reason: str = ""


@dataclass
class _Free:
    name: str
    labels: dict[str, str]
    cpu: float
    memory: float
    gpu: float
    pods: int


def schedule(
    nodes: list[dict[str, Any]], workloads: list[tuple[str, int, dict[str, Any]]]
) -> dict[str, Placement]:
    """First-fit placement of ``workloads`` = [(id, replicas, pod spec)] in order onto ``nodes``."""
    free = [
        _Free(
            n["metadata"]["name"],
            n["metadata"]["labels"],
            parse_quantity(n["status"]["allocatable"]["cpu"]),
            parse_quantity(n["status"]["allocatable"]["memory"]),
            parse_quantity(n["status"]["allocatable"].get(GPU, 0)),
            MAX_PODS_PER_NODE,
        )
        for n in nodes
    ]
    out: dict[str, Placement] = {}
    for wid, replicas, pod_spec in workloads:
        need = pod_requests(pod_spec)
        selector = pod_spec.get("nodeSelector") or {}
        placement = Placement()
        for _ in range(replicas):
            fit = next((f for f in free if _matches(f, selector) and not _short(f, need)), None)
            if fit is None:
                placement.nodes.append(None)
                placement.reason = placement.reason or _unschedulable(free, selector, need)
                continue
            fit.cpu -= need["cpu"]
            fit.memory -= need["memory"]
            fit.gpu -= need[GPU]
            fit.pods -= 1
            placement.nodes.append(fit.name)
        out[wid] = placement
    return out


def _matches(node: _Free, selector: dict[str, Any]) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items())


def _short(node: _Free, need: dict[str, float]) -> list[str]:
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


def _unschedulable(free: list[_Free], selector: dict[str, Any], need: dict[str, float]) -> str:
    """The scheduler's FailedScheduling message, e.g. ``0/1 nodes are available: 1 Insufficient cpu. ...``."""
    if not free:
        return "no nodes available to schedule pods"
    counts: dict[str, int] = {}
    for f in free:
        reasons = (
            ["node(s) didn't match Pod's node affinity/selector"]
            if not _matches(f, selector)
            else _short(f, need)
        )
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
    n = len(free)
    listed = ", ".join(sorted(f"{c} {r}" for r, c in counts.items()))
    if any(r.startswith(("Insufficient", "Too many")) for r in counts):
        preemption = (
            f"preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod."
        )
    else:
        preemption = f"preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
    return f"0/{n} nodes are available: {listed}. {preemption}"


# --------------------------------------------------------------------------------------------------
# The Deployment controller's memory: which template runs since when


def observe(record: dict[str, Any] | None, deployment: dict[str, Any], now: float) -> dict[str, Any]:
    """The rollout record after the Deployment controller saw ``deployment`` (a new template starts
    new pods; a replica change adds or removes pods; the previous template's ready pods keep serving)."""
    spec = deployment.get("spec") or {}
    h = template_hash(spec.get("template"))
    replicas = int(spec.get("replicas", 1))
    if record is None:
        return {"hash": h, "starts": [now] * replicas, "old_hash": None, "old_count": 0, "since": now}
    if record["hash"] != h:
        ready = int((deployment.get("status") or {}).get("readyReplicas", 0))
        return {
            "hash": h,
            "starts": [now] * replicas,
            "old_hash": record["hash"],
            "old_count": ready,
            "since": now,
        }
    starts = list(record["starts"])[:replicas]
    starts += [now] * (replicas - len(starts))
    return {**record, "starts": starts}


@dataclass
class PodState:
    """One pod at one moment: ``state`` is Unschedulable, ContainerCreating, ErrImagePull,
    ImagePullBackOff or Running."""

    name: str
    hash: str
    start: float
    node: str | None
    state: str

    @property
    def ready(self) -> bool:
        return self.state == "Running"


def pod_states(
    deployment: dict[str, Any], record: dict[str, Any], placement: Placement, now: float, rollout_s: float
) -> list[PodState]:
    """The pods of ``deployment`` now: current-template pods, then previous-template pods still serving."""
    name = deployment["metadata"]["name"]
    uid = deployment["metadata"].get("uid", "")
    containers = ((deployment["spec"].get("template") or {}).get("spec") or {}).get("containers") or []
    bad_image = any(not image_pullable(str(c.get("image", ""))) for c in containers)
    pods = []
    for i, start in enumerate(record["starts"]):
        node = placement.nodes[i] if i < len(placement.nodes) else None
        age = now - start
        if node is None:
            state = "Unschedulable"
        elif age < rollout_s * 0.5:
            state = "ContainerCreating"
        elif bad_image:
            # kubelet alternates between a fresh pull error and the back-off that follows it
            state = "ErrImagePull" if int(age / max(rollout_s, 0.1)) % 2 == 0 else "ImagePullBackOff"
        elif age < rollout_s:
            state = "ContainerCreating"
        else:
            state = "Running"
        pods.append(PodState(_pod_name(name, uid, record["hash"], i), record["hash"], start, node, state))
    if record.get("old_hash") and not all(p.ready for p in pods):
        for i in range(int(record.get("old_count", 0))):
            pods.append(
                PodState(
                    _pod_name(name, uid, record["old_hash"], i),
                    record["old_hash"],
                    record["since"],
                    "",
                    "Running",
                )
            )
    return pods


def _pod_name(deploy: str, uid: str, h: str, i: int) -> str:
    return f"{deploy}-{h}-{_suffix(5, uid, h, i)}"


def rollout_done(record: dict[str, Any], pods: list[PodState]) -> dict[str, Any]:
    """Forget the previous template once every pod of the current one is ready."""
    if record.get("old_hash") and all(p.ready for p in pods if p.hash == record["hash"]):
        return {**record, "old_hash": None, "old_count": 0}
    return record


def deployment_status(
    deployment: dict[str, Any], record: dict[str, Any], pods: list[PodState], now: float
) -> dict[str, Any]:
    """The status the Deployment controller writes (replica counts and Available/Progressing)."""
    meta, spec = deployment["metadata"], deployment["spec"]
    want = int(spec.get("replicas", 1))
    current = [p for p in pods if p.hash == record["hash"]]
    ready = sum(p.ready for p in pods)
    max_unavailable = _max_unavailable(spec, want)
    rs = f"{meta['name']}-{record['hash']}"
    prev = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}
    if want - max_unavailable <= ready:
        available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    else:
        available = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    deadline = float(spec.get("progressDeadlineSeconds", 600))
    if all(p.ready for p in current) and len(current) == want:
        progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs}" has successfully progressed.')
    elif now - record["since"] > deadline:
        progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs}" has timed out progressing.')
    else:
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.')
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": len(current),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            _condition(prev.get("Available"), "Available", *available, now),
            _condition(prev.get("Progressing"), "Progressing", *progressing, now),
        ],
    }
    if want - ready > 0:
        status["unavailableReplicas"] = want - ready
    return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}


def _max_unavailable(spec: dict[str, Any], replicas: int) -> int:
    value = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return int(replicas * float(value[:-1]) / 100)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _condition(
    prev: dict[str, Any] | None, ctype: str, status: str, reason: str, message: str, now: float
) -> dict[str, Any]:
    stamp = rfc3339(now)
    transition = prev["lastTransitionTime"] if prev and prev.get("status") == status else stamp
    update = (
        prev["lastUpdateTime"]
        if prev and prev.get("reason") == reason and prev.get("message") == message
        else stamp
    )
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
    }


# --------------------------------------------------------------------------------------------------
# Pods and events as the API shows them


def pod_object(deployment: dict[str, Any], pod: PodState, reason: str, now: float) -> dict[str, Any]:
    """A Pod of ``deployment`` as ``kubectl get pod -o json`` would show it."""
    meta = deployment["metadata"]
    template = deployment["spec"].get("template") or {}
    labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": pod.hash}
    spec = {**(template.get("spec") or {})}
    if pod.node:
        spec["nodeName"] = pod.node
    started = rfc3339(pod.start)
    scheduled = pod.node is not None
    conditions = [
        {"type": "PodScheduled", "status": "True" if scheduled else "False", "lastTransitionTime": started},
        {"type": "Initialized", "status": "True" if scheduled else "False", "lastTransitionTime": started},
        {"type": "ContainersReady", "status": str(pod.ready), "lastTransitionTime": started},
        {"type": "Ready", "status": str(pod.ready), "lastTransitionTime": started},
    ]
    if not scheduled:
        conditions = [{**conditions[0], "reason": "Unschedulable", "message": reason}]
    status: dict[str, Any] = {
        "phase": "Running" if pod.ready else "Pending",
        "conditions": conditions,
        "qosClass": "Burstable",
        "startTime": started,
    }
    if scheduled:
        status["hostIP"] = "10.128.0.2"
        status["podIP"] = f"10.4.0.{int.from_bytes(_digest(pod.name)[:1], 'big') % 250 + 2}"
        status["containerStatuses"] = [_container_status(c, pod) for c in spec.get("containers") or []]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": meta.get("namespace", "default"),
            "uid": stable_uid("pod", meta.get("uid", ""), pod.name),
            "resourceVersion": meta.get("resourceVersion", "1"),
            "creationTimestamp": started,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{meta['name']}-{pod.hash}",
                    "uid": stable_uid("rs", meta.get("uid", ""), pod.hash),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }


def _container_status(container: dict[str, Any], pod: PodState) -> dict[str, Any]:
    image = str(container.get("image", ""))
    if pod.ready:
        state: dict[str, Any] = {"running": {"startedAt": rfc3339(pod.start)}}
    elif pod.state == "ErrImagePull":
        state = {"waiting": {"reason": "ErrImagePull", "message": _pull_error(image)}}
    elif pod.state == "ImagePullBackOff":
        state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    return {
        "name": container.get("name", ""),
        "image": image,
        "imageID": "",
        "ready": pod.ready,
        "started": pod.ready,
        "restartCount": 0,
        "state": state,
    }


def _pull_error(image: str) -> str:
    ref = image if "/" in image.split(":")[0] else f"docker.io/library/{image}"
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return (
        f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
        f"pull access denied, repository does not exist or may require authorization"
    )


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


def pod_events(
    deployment: dict[str, Any], pod: PodState, reason: str, rollout_s: float
) -> list[dict[str, Any]]:
    """What ``kubectl describe pod`` lists for ``pod`` (scheduling, image pulls, container start)."""
    ns = deployment["metadata"].get("namespace", "default")
    involved = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod.name,
        "namespace": ns,
        "uid": stable_uid("pod", deployment["metadata"].get("uid", ""), pod.name),
    }
    if pod.node is None:
        return [event(involved, "FailedScheduling", reason, pod.start, "Warning", "default-scheduler")]
    if not pod.node:  # a pod of the previous template: its story was told when it started
        return []
    containers = ((deployment["spec"].get("template") or {}).get("spec") or {}).get("containers") or []
    out = [
        event(
            involved,
            "Scheduled",
            f"Successfully assigned {ns}/{pod.name} to {pod.node}",
            pod.start,
            component="default-scheduler",
        )
    ]
    for c in containers:
        image, cname = str(c.get("image", "")), c.get("name", "")
        out.append(event(involved, "Pulling", f'Pulling image "{image}"', pod.start))
        if pod.state in ("ErrImagePull", "ImagePullBackOff"):
            out.append(
                event(
                    involved,
                    "Failed",
                    f'Failed to pull image "{image}": {_pull_error(image)}',
                    pod.start,
                    "Warning",
                )
            )
            out.append(event(involved, "Failed", "Error: ErrImagePull", pod.start, "Warning"))
            out.append(event(involved, "BackOff", f'Back-off pulling image "{image}"', pod.start))
            out.append(event(involved, "Failed", "Error: ImagePullBackOff", pod.start, "Warning"))
        elif pod.ready:
            t = pod.start + rollout_s
            out.append(
                event(involved, "Pulled", f'Successfully pulled image "{image}" in {rollout_s:.3f}s', t)
            )
            out.append(event(involved, "Created", f"Created container: {cname}", t))
            out.append(event(involved, "Started", f"Started container {cname}", t))
    return out


def deployment_events(deployment: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    meta = deployment["metadata"]
    involved = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid", ""),
    }
    rs = f"{meta['name']}-{record['hash']}"
    n = len(record["starts"])
    return [
        event(
            involved,
            "ScalingReplicaSet",
            f"Scaled up replica set {rs} from 0 to {n}",
            record["since"],
            component="deployment-controller",
        )
    ]


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
