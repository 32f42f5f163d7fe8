"""The cluster-wide kube-system pods every GKE cluster runs (its DNS and DNS autoscaler), as the
scheduler and the cluster autoscaler meet them.

Unlike the per-node system pods (``kubesim.SYSTEM_PODS``: DaemonSets, which tolerate every taint and
never keep a node up), these are Deployments: the scheduler places them like any pod (their
requests, their tolerations, their preferred anti-affinity), and a node running one is not removed
by the cluster autoscaler, because they are kube-system pods without a PodDisruptionBudget
(kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What types of pods can prevent CA from removing a
node?"). So a serving pool that should reach zero must not receive them: a taint they do not
tolerate keeps them off it.

- ``kube-dns`` (kubernetes/kubernetes cluster/addons/dns/kube-dns/kube-dns.yaml.in): containers
  kubedns 100m/70Mi, dnsmasq 150m/20Mi, sidecar 10m/20Mi; tolerates only ``CriticalAddonsOnly``;
  prefers one pod per hostname (podAntiAffinity, weight 100). Its replicas follow the
  cluster-proportional-autoscaler's linear rule (cluster/addons/dns-horizontal-autoscaler/
  dns-horizontal-autoscaler.yaml: coresPerReplica 256, nodesPerReplica 16,
  preventSinglePointFailure): max(ceil(cores / 256), ceil(nodes / 16)), at least 2 once there are
  two nodes.
- ``kube-dns-autoscaler`` (the same file): one pod, 20m/10Mi, tolerates only ``CriticalAddonsOnly``.

Records live in ``rec["addons"]`` (pod name -> {"app", "uid", "created", "node"}); ``kubecontrol``
creates and deletes them on each tick (``reconcile``), schedules them with the workload pods and
shows them through the API (``pod_object``).

Example::

    replicas("kube-dns", nodes=2, cores=6)   # -> 2
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from . import kubesim

CRITICAL_ADDONS_ONLY = {"key": "CriticalAddonsOnly", "operator": "Exists"}


@dataclass(frozen=True)
class Addon:
    app: str  # the Deployment's name and its pods' ``k8s-app`` label
    containers: tuple[tuple[str, str, int, int], ...]  # (name, image, cpu millicores, memory MiB)
    spread: bool  # a preferred anti-affinity on its own pods across hostnames


ADDONS = (
    Addon(
        "kube-dns",
        (
            ("kubedns", "registry.k8s.io/dns/k8s-dns-kube-dns:1.22.20", 100, 70),
            ("dnsmasq", "registry.k8s.io/dns/k8s-dns-dnsmasq-nanny:1.22.20", 150, 20),
            ("sidecar", "registry.k8s.io/dns/k8s-dns-sidecar:1.22.20", 10, 20),
        ),
        spread=True,
    ),
    Addon(
        "kube-dns-autoscaler",
        (("autoscaler", "k8s.gcr.io/cluster-proportional-autoscaler-amd64:1.1.2-r2", 20, 10),),
        spread=False,
    ),
)
BY_APP = {a.app: a for a in ADDONS}


def replicas(app: str, nodes: int, cores: float) -> int:
    """How many pods of ``app`` run in a cluster of ``nodes`` nodes with ``cores`` CPUs in all."""
    if app != "kube-dns":
        return 1
    want = max(math.ceil(cores / 256), math.ceil(nodes / 16))
    return max(want, 2) if nodes > 1 else max(want, 1)


def spread_app(record: dict[str, Any]) -> str:
    """The ``k8s-app`` a pod record spreads across hostnames ("" for workload pods and add-ons that
    do not): what the scheduler's anti-affinity score looks at."""
    addon = BY_APP.get(str(record.get("app", "")))
    return addon.app if addon is not None and addon.spread else ""


def pod_spec(addon: Addon) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [dict(CRITICAL_ADDONS_ONLY)],
        "serviceAccountName": addon.app,
        "containers": [
            {
                "name": name,
                "image": image,
                "resources": {"requests": {"cpu": f"{cpu}m", "memory": f"{mem}Mi"}},
            }
            for name, image, cpu, mem in addon.containers
        ],
    }
    if addon.spread:
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {
                                "matchExpressions": [
                                    {"key": "k8s-app", "operator": "In", "values": [addon.app]}
                                ]
                            },
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
    return spec


def reconcile(addons: dict[str, Any], nodes: int, cores: float, now: float, key: str) -> None:
    """Pod records to match each add-on's replica count (pending ones go first when it shrinks)."""
    for addon in ADDONS:
        mine = sorted(
            (p for p in addons.values() if p["app"] == addon.app),
            key=lambda p: (p["node"] is not None, p["created"]),
        )
        want = replicas(addon.app, nodes, cores) if nodes else 0
        extra = max(len(mine) - want, 0)
        for p in mine[:extra]:
            del addons[p["name"]]
        for _ in range(want - (len(mine) - extra)):
            uid = str(uuid.uuid4())
            name = f"{addon.app}-{kubesim._suffix(10, key, addon.app)}-{kubesim._suffix(5, uid)}"
            addons[name] = {
                "name": name,
                "namespace": "kube-system",
                "app": addon.app,
                "uid": uid,
                "created": now,
                "node": None,
                "unschedulable": "",
                "spec": pod_spec(addon),
            }


def pod_object(p: dict[str, Any], now: float) -> dict[str, Any]:
    """The Pod as the API shows it: Running once placed, Pending (unschedulable) before."""
    addon = BY_APP[p["app"]]
    spec = {**p["spec"], **({"nodeName": p["node"]} if p["node"] else {})}
    created = kubesim.rfc3339(p["created"])
    if p["node"]:
        status: dict[str, Any] = {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": created}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": name,
                    "image": image,
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": created}},
                }
                for name, image, _, _ in addon.containers
            ],
            "startTime": created,
            "qosClass": "Burstable",
        }
    else:
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": p.get("unschedulable", ""),
                    "lastTransitionTime": created,
                }
            ],
            "qosClass": "Burstable",
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p["name"],
            "namespace": "kube-system",
            "uid": p["uid"],
            "resourceVersion": "1",
            "creationTimestamp": created,
            "labels": {"k8s-app": addon.app, "pod-template-hash": p["name"].split("-")[-2]},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": p["name"].rsplit("-", 1)[0],
                    "uid": kubesim.stable_uid("rs", p["name"].rsplit("-", 1)[0]),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }
