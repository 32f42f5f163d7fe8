"""The control loops of an emulated GKE cluster, run on every tick over its records in ``world.data``.

- **nodes**: one record per node of each pool (``node_count`` from GKE, or the autoscaler's);
- **Deployment controller** (``pkg/controller/deployment``): one ReplicaSet per pod template, rolled
  like ``rolloutRolling``: the new ReplicaSet grows within ``maxSurge``, old ones shrink only while
  ``maxUnavailable`` allows (unhealthy old pods first), so the old pod serves until the new one is
  ready; status (observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas) and the Available/Progressing/ReplicaFailure conditions as ``calculateStatus``
  and ``syncRolloutStatus`` write them; ``Recreate`` scales the old pods away first;
- **ReplicaSet controller**: pods to match, deleting not-ready and unscheduled ones first; a pod whose
  ``serviceAccountName`` does not exist is refused by the ServiceAccount admission plugin
  (``FailedCreate`` on the ReplicaSet, ``ReplicaFailure`` on the Deployment);
- **scheduler**: the default plugins' filters in their order (TaintToleration: NoSchedule taints the
  pod does not tolerate; NodeAffinity: its ``nodeSelector``; NodeResourcesFit: allocatable minus the
  system pods and the pods already there), then the fitting node with the most room left
  (``LeastAllocated``; kube-dns also avoids a node that runs one); ``FailedScheduling`` in the
  scheduler's words, the pod's ``PodScheduled`` condition False;
- **GKE's cluster add-ons** (``kubeaddons``): kube-dns and its autoscaler, scheduled like any pod;
- **kubelet** (``kubelet.py``) on scheduled pods;
- **cluster autoscaler** (``kubeautoscale``): scale-up for Pending pods, scale-down of empty nodes;
- **events** are aggregated (count, lastTimestamp) and kept for ``event_ttl_s`` after their last
  update (kube-apiserver's ``--event-ttl``, 1 h): a FailedScheduling stays visible after the pod ran.

Example (what ``kube.Hub.tick`` does under ``world.lock``)::

    sim = ClusterSim(key, rec, world.now(), world.knobs, number, bump, resized)
    sim.step(env)
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from . import kubeaddons, kubelet, kuberevisions, kubesim
from .core import Knobs
from .kubeautoscale import Autoscaler

WORKLOAD_NAMESPACES_EXCLUDED = ("kube-system",)


def _oid(ns: str, name: str) -> str:
    return f"{ns}/{name}"


class ClusterSim(Autoscaler):
    """One cluster's controllers over its record ``rec`` at time ``now``."""

    def __init__(
        self,
        key: str,
        rec: dict[str, Any],
        now: float,
        knobs: Knobs,
        project_number: str,
        bump: Callable[[], str],
        resized: Callable[[str, int], None],
    ) -> None:
        self.key = key
        self.rec = rec
        self.now = now
        self.knobs = knobs
        self.project = key.split("/")[1]
        self.number = project_number
        self.bump = bump
        self.resized = resized
        for section in ("replicasets", "pods", "events", "node_records", "scale_ups", "addons"):
            rec.setdefault(section, [] if section == "scale_ups" else {})
        self.sync_nodes()

    # ---- objects --------------------------------------------------------------------------------------
    def objects(self, plural: str) -> dict[str, Any]:
        return self.rec["objects"].setdefault(plural, {})  # type: ignore[no-any-return]

    def pools(self) -> dict[str, dict[str, Any]]:
        return {str(p["name"]): p for p in self.rec.get("nodes") or []}

    # ---- nodes ----------------------------------------------------------------------------------------
    def sync_nodes(self) -> None:
        """Node records to match each pool's ``node_count`` (new ones Ready now; extra ones go)."""
        records = self.rec["node_records"]
        pools = self.pools()
        for name in [n for n, r in records.items() if r["pool"] not in pools]:
            self._remove_node(name)
        for pool_name, pool in pools.items():
            mine = sorted((r for r in records.values() if r["pool"] == pool_name), key=lambda r: r["index"])
            want = int(pool.get("node_count", 0))
            zones = list(pool.get("zones") or []) or [self.key.split("/")[3]]
            used = {r["index"] for r in mine}
            index = 0
            while len(mine) < want:
                while index in used:
                    index += 1
                used.add(index)
                node = {
                    "name": kubesim.node_name(self.key, pool_name, index),
                    "pool": pool_name,
                    "index": index,
                    "zone": zones[index % len(zones)],
                    "created": self.now,
                    "empty_since": None,
                }
                records[node["name"]] = node
                mine.append(node)
            for extra in mine[want:][::-1] if len(mine) > want else []:
                self._remove_node(extra["name"])

    def _remove_node(self, name: str) -> None:
        """The node is gone: its pods go with it (their ReplicaSets make new ones)."""
        self.rec["node_records"].pop(name, None)
        for section in ("pods", "addons"):
            for pid in [pid for pid, p in self.rec[section].items() if p.get("node") == name]:
                del self.rec[section][pid]

    def addons(self) -> None:
        """GKE's cluster-wide kube-system pods, as many as the cluster's size asks for."""
        pools = self.pools()
        nodes = list(self.rec["node_records"].values())
        cores = sum(float(pools[n["pool"]].get("cpus", 0)) for n in nodes)
        kubeaddons.reconcile(self.rec["addons"], len(nodes), cores, self.now, self.key)

    def pending_pods(self) -> list[dict[str, Any]]:
        """Pods without a node, workload and add-on alike, oldest first."""
        every = [*self.rec["pods"].values(), *self.rec["addons"].values()]
        return sorted((p for p in every if not p.get("node")), key=lambda p: p["created"])

    def busy_nodes(self) -> set[str]:
        """Nodes running a pod the cluster autoscaler will not remove (DaemonSets do not count)."""
        every = [*self.rec["pods"].values(), *self.rec["addons"].values()]
        return {str(p["node"]) for p in every if p.get("node")}

    def node_objects(self) -> list[dict[str, Any]]:
        pools = self.pools()
        return [
            {"apiVersion": "v1", "kind": "Node", **kubesim.node_object(self.key, n, pools[n["pool"]])}
            for n in sorted(self.rec["node_records"].values(), key=lambda n: (n["pool"], n["index"]))
        ]

    def system_pod_objects(self) -> list[dict[str, Any]]:
        pools = self.pools()
        out = []
        for n in sorted(self.rec["node_records"].values(), key=lambda n: (n["pool"], n["index"])):
            out += kubesim.system_pod_objects(self.key, n, pools[n["pool"]])
        return out

    # ---- events ---------------------------------------------------------------------------------------
    def record(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        t: float | None = None,
        kind: str = "Normal",
        component: str = "kubelet",
    ) -> None:
        """Record an event; a repeat of the same one counts up (kube's event aggregation)."""
        t = self.now if t is None else t
        ev = kubesim.event(involved, reason, message, t, kind, component)
        name = f"{ev['metadata']['namespace']}/{ev['metadata']['name']}"
        events = self.rec["events"]
        if name in events:
            old = events[name]
            old["count"] = int(old.get("count", 1)) + 1
            old["lastTimestamp"] = kubesim.rfc3339(t)
            old["metadata"]["resourceVersion"] = self.bump()
            old["_expires"] = t + self.knobs.event_ttl_s
            return
        ev["metadata"]["resourceVersion"] = self.bump()
        ev["_expires"] = t + self.knobs.event_ttl_s
        events[name] = ev

    def expire_events(self) -> None:
        events = self.rec["events"]
        for name in [n for n, e in events.items() if e.get("_expires", 0) < self.now]:
            del events[name]

    def event_objects(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in self.rec["events"].values()]

    # ---- the loop -------------------------------------------------------------------------------------
    def step(self, env: kubelet.Env) -> None:
        self.expire_events()
        self.autoscale_due()
        self.addons()
        for oid, d in sorted(self.objects("deployments").items(), key=_created):
            self.deployment(oid, d)
        for rsid in list(self.rec["replicasets"]):
            self.replicaset(rsid)
        self.schedule()
        for pod in self.rec["pods"].values():
            if pod.get("node"):
                kubelet.step(pod, self.now, env)
        self.autoscale()
        for oid, d in self.objects("deployments").items():
            self.deployment_status(oid, d)

    # ---- Deployment controller ------------------------------------------------------------------------
    def _replicasets_of(self, oid: str) -> list[dict[str, Any]]:
        return sorted(
            (rs for rs in self.rec["replicasets"].values() if rs["deployment"] == oid),
            key=lambda rs: (rs["created"], rs["name"]),
        )

    def _pods_of(self, rsid: str) -> list[dict[str, Any]]:
        return [p for p in self.rec["pods"].values() if p["rs"] == rsid]

    def _rs_counts(self, rs: dict[str, Any]) -> tuple[int, int, int]:
        """(pods, ready, available) of a ReplicaSet (minReadySeconds 0: available = ready)."""
        pods = self._pods_of(_oid(rs["namespace"], rs["name"]))
        ready = sum(kubelet.ready(p) for p in pods)
        return len(pods), ready, ready

    def _scale(self, d: dict[str, Any], rs: dict[str, Any], to: int) -> None:
        if rs["replicas"] == to:
            return
        word = "up" if to > rs["replicas"] else "down"
        self.record(
            _involved(d),
            "ScalingReplicaSet",
            f"Scaled {word} replica set {rs['name']} from {rs['replicas']} to {to}",
            component="deployment-controller",
        )
        rs["replicas"] = to

    def deployment(self, oid: str, d: dict[str, Any]) -> None:
        spec, meta = d["spec"], d["metadata"]
        template = spec.get("template") or {}
        h = kubesim.template_hash(template)
        ns = meta.get("namespace", "default")
        rss = self._replicasets_of(oid)
        new = next((rs for rs in rss if rs["hash"] == h), None)
        top = max((rs["revision"] for rs in rss), default=0)
        if spec.get("paused") and new is None and rss:
            return  # a paused Deployment rolls no new template out (kubectl rollout pause)
        if new is None:
            name = f"{meta['name']}-{h}"
            new = {
                "name": name,
                "namespace": ns,
                "deployment": oid,
                "hash": h,
                "uid": str(uuid.uuid4()),
                "replicas": 0,
                "revision": top + 1,
                "created": self.now,
                "template": copy.deepcopy(template),
                "failure": None,
                "pod_serial": 0,
            }
            self.rec["replicasets"][_oid(ns, name)] = new
            status = d.setdefault("status", {})
            status["updatedReplicas"] = 0  # the new ReplicaSet has no pods yet when this is written
            status["conditions"] = kubesim.set_condition(
                status.get("conditions") or [],
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{name}"',
                self.now,
            )
            rss = [*rss, new]
        elif new["revision"] < top:
            new["revision"] = top + 1  # a rollback makes the old template the newest revision
        kuberevisions.annotate(d, new, self.bump)
        olds = [rs for rs in rss if rs is not new]
        desired = int(spec.get("replicas", 1))
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            for old in olds:
                self._scale(d, old, 0)
            if not any(self._pods_of(_oid(ns, old["name"])) for old in olds):
                self._scale(d, new, desired)
            return
        if not self._reconcile_new(d, new, rss, desired):
            self._reconcile_old(d, new, olds, rss, desired)

    def _reconcile_new(
        self, d: dict[str, Any], new: dict[str, Any], rss: list[dict[str, Any]], desired: int
    ) -> bool:
        if new["replicas"] == desired:
            return False
        if new["replicas"] > desired:
            self._scale(d, new, desired)
            return True
        surge, _ = kubesim.fenceposts(d["spec"])
        total = sum(rs["replicas"] for rs in rss)
        if total >= desired + surge:
            return False
        self._scale(d, new, new["replicas"] + min(desired + surge - total, desired - new["replicas"]))
        return True

    def _reconcile_old(
        self,
        d: dict[str, Any],
        new: dict[str, Any],
        olds: list[dict[str, Any]],
        rss: list[dict[str, Any]],
        desired: int,
    ) -> None:
        if not sum(rs["replicas"] for rs in olds):
            return
        _, max_unavailable = kubesim.fenceposts(d["spec"])
        min_available = desired - max_unavailable
        new_unavailable = new["replicas"] - self._rs_counts(new)[2]
        max_down = sum(rs["replicas"] for rs in rss) - min_available - new_unavailable
        if max_down <= 0:
            return
        cleaned = 0  # cleanupUnhealthyReplicas: old pods that are not available go first
        for old in olds:
            available = self._rs_counts(old)[2]
            if cleaned >= max_down or old["replicas"] == 0 or old["replicas"] == available:
                continue
            down = min(max_down - cleaned, old["replicas"] - available)
            self._scale(d, old, old["replicas"] - down)
            cleaned += down
        available_all = sum(self._rs_counts(rs)[2] for rs in rss)
        budget = available_all - min_available  # scaleDownOldReplicaSetsForRollingUpdate
        for old in olds:
            if budget <= 0:
                break
            down = min(old["replicas"], budget)
            self._scale(d, old, old["replicas"] - down)
            budget -= down

    def deployment_status(self, oid: str, d: dict[str, Any]) -> None:
        """calculateStatus + syncRolloutStatus; written (with a new resourceVersion) only on change."""
        spec, meta = d["spec"], d["metadata"]
        desired = int(spec.get("replicas", 1))
        rss = self._replicasets_of(oid)
        h = kubesim.template_hash(spec.get("template") or {})
        new = next((rs for rs in rss if rs["hash"] == h), None)
        counts = {rs["name"]: self._rs_counts(rs) for rs in rss}
        pods = sum(c[0] for c in counts.values())
        ready = sum(c[1] for c in counts.values())
        available = sum(c[2] for c in counts.values())
        updated = counts[new["name"]][0] if new else 0
        _, max_unavailable = kubesim.fenceposts(spec)
        old_status = d.get("status") or {}
        conditions = list(old_status.get("conditions") or [])
        if available >= desired - max_unavailable:
            conditions = kubesim.set_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                self.now,
            )
        else:
            conditions = kubesim.set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                self.now,
            )
        status: dict[str, Any] = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": pods,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(desired - available, 0),
        }
        rs_name = new["name"] if new else meta["name"]
        current = kubesim.get_condition(conditions, "Progressing")
        conditions, paused = kuberevisions.paused_conditions(spec, current, conditions, self.now)
        current = kubesim.get_condition(conditions, "Progressing")
        complete = (
            updated == desired
            and pods == desired
            and available >= desired - max_unavailable
            and status["observedGeneration"] >= meta.get("generation", 1)
        )
        settled = paused or (
            pods == updated and current is not None and current["reason"] == "NewReplicaSetAvailable"
        )
        if not settled:
            old_updated = int(old_status.get("updatedReplicas", 0) or 0)
            old_old = int(old_status.get("replicas", 0) or 0) - old_updated
            progressing = (
                updated > old_updated
                or pods - updated < old_old
                or available > int(old_status.get("availableReplicas", 0) or 0)
            )
            deadline = float(spec.get("progressDeadlineSeconds", 600))
            if complete:
                conditions = kubesim.set_condition(
                    conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                    self.now,
                )
            elif progressing:
                kept = current["lastTransitionTime"] if current and current["status"] == "True" else None
                conditions = kubesim.remove_condition(conditions, "Progressing")
                conditions = kubesim.set_condition(
                    conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" is progressing.',
                    self.now,
                )
                if kept:
                    conditions[-1]["lastTransitionTime"] = kept
            elif current is not None and (
                current["reason"] == "ProgressDeadlineExceeded"
                or _parse_time(current["lastUpdateTime"]) + deadline < self.now
            ):
                conditions = kubesim.set_condition(
                    conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                    self.now,
                )
        failure = next(
            (rs["failure"] for rs in ([new] if new else []) + rss if rs and rs.get("failure")), None
        )
        if failure:
            conditions = kubesim.set_condition(
                conditions, "ReplicaFailure", "True", "FailedCreate", failure, self.now
            )
        else:
            conditions = kubesim.remove_condition(conditions, "ReplicaFailure")
        order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c["type"], 9))
        status = {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}
        if status != old_status:
            d["status"] = status
            meta["resourceVersion"] = self.bump()

    # ---- ReplicaSet controller ------------------------------------------------------------------------
    def replicaset(self, rsid: str) -> None:
        rs = self.rec["replicasets"][rsid]
        if rs["deployment"] not in self.objects("deployments"):
            del self.rec["replicasets"][rsid]
            for pid in [pid for pid, p in self.rec["pods"].items() if p["rs"] == rsid]:
                del self.rec["pods"][pid]
            return
        pods = self._pods_of(rsid)
        involved = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs["name"],
            "namespace": rs["namespace"],
            "uid": rs["uid"],
        }
        if len(pods) < rs["replicas"]:
            spec = rs["template"].get("spec") or {}
            sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
            if _oid(rs["namespace"], sa) not in self.objects("serviceaccounts"):
                message = (
                    f'pods "{rs["name"]}-" is forbidden: error looking up service account '
                    f'{rs["namespace"]}/{sa}: serviceaccount "{sa}" not found'
                )
                if rs.get("failure") != message:
                    rs["failure_since"] = self.now
                rs["failure"] = message
                self.record(
                    involved,
                    "FailedCreate",
                    f"Error creating: {message}",
                    kind="Warning",
                    component="replicaset-controller",
                )
                return
            rs["failure"] = None
            for _ in range(rs["replicas"] - len(pods)):
                pod = self._new_pod(rs, sa)
                self.rec["pods"][_oid(pod["namespace"], pod["name"])] = pod
                self.record(
                    involved,
                    "SuccessfulCreate",
                    f"Created pod: {pod['name']}",
                    component="replicaset-controller",
                )
        elif len(pods) > rs["replicas"]:
            for pod in sorted(pods, key=_deletion_rank)[: len(pods) - rs["replicas"]]:
                del self.rec["pods"][_oid(pod["namespace"], pod["name"])]
                self.record(
                    involved,
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['name']}",
                    component="replicaset-controller",
                )

    def _new_pod(self, rs: dict[str, Any], sa: str) -> dict[str, Any]:
        rs["pod_serial"] = int(rs.get("pod_serial", 0)) + 1
        name = f"{rs['name']}-{kubesim._suffix(5, rs['uid'], rs['pod_serial'])}"
        template = copy.deepcopy(rs["template"])
        spec = template.get("spec") or {}
        spec["serviceAccountName"] = spec["serviceAccount"] = sa
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        return {
            "name": name,
            "namespace": rs["namespace"],
            "uid": str(uuid.uuid4()),
            "rs": _oid(rs["namespace"], rs["name"]),
            "rs_uid": rs["uid"],
            "hash": rs["hash"],
            "labels": {
                **((template.get("metadata") or {}).get("labels") or {}),
                "pod-template-hash": rs["hash"],
            },
            "spec": spec,
            "created": self.now,
            "node": None,
            "scheduled_at": None,
            "unschedulable": "",
            "containers": {},
            "rv": self.bump(),
        }

    # ---- scheduler ------------------------------------------------------------------------------------
    def _free(self) -> list[kubesim.Free]:
        pools = self.pools()
        nodes = {o["metadata"]["name"]: o for o in self.node_objects()}
        free = {
            name: kubesim.free_on(obj, pools[self.rec["node_records"][name]["pool"]])
            for name, obj in nodes.items()
        }
        for p in [*self.rec["pods"].values(), *self.rec["addons"].values()]:
            if p.get("node") in free:
                free[p["node"]].take(kubesim.pod_requests(p["spec"]))
                if "app" in p:
                    free[p["node"]].apps.append(p["app"])
        return list(free.values())

    def schedule(self) -> None:
        pending = self.pending_pods()
        if not pending:
            return
        free = self._free()
        for pod in pending:
            need = kubesim.pod_requests(pod["spec"])
            reasons = [kubesim.misfits(f, need, pod["spec"]) for f in free]
            fits = [f for f, r in zip(free, reasons, strict=True) if not r]
            spread = kubeaddons.spread_app(pod)
            # The highest score wins; among equals, the first node (max keeps the first).
            fit = max(fits, key=lambda f: kubesim.score(f, need, spread), default=None)
            if fit is None:
                message = kubesim.unschedulable_message(reasons)
                if message != pod["unschedulable"]:
                    pod["unschedulable"] = message
                    pod["rv"] = self.bump()
                self.record(
                    _pod_involved(pod),
                    "FailedScheduling",
                    message,
                    kind="Warning",
                    component="default-scheduler",
                )
                continue
            fit.take(need)
            if "app" in pod:  # an add-on pod: placed, it runs (its containers are GKE's, not simulated)
                fit.apps.append(pod["app"])
                pod.update(node=fit.name, unschedulable="")
                self.rec["node_records"][fit.name]["empty_since"] = None
                continue
            self._bind(pod, fit.name)

    def _bind(self, pod: dict[str, Any], node_name: str) -> None:
        node = self.rec["node_records"][node_name]
        pool = self.pools()[node["pool"]]
        serial = self.rec["pod_ip_serial"] = int(self.rec.get("pod_ip_serial", 1)) + 1
        pod.update(
            node=node_name,
            scheduled_at=self.now,
            unschedulable="",
            host_ip=kubesim.node_ip(int(node["index"])),
            ip=f"10.4.{int(node['index']) % 256}.{serial % 250 + 2}",
            identity=kubelet.identity(pod, pool, self.project, self.number),
            containers=kubelet.new_containers(pod["spec"], self.now, self.knobs.rollout_s),
            rv=self.bump(),
        )
        self.record(
            _pod_involved(pod),
            "Scheduled",
            f"Successfully assigned {pod['namespace']}/{pod['name']} to {node_name}",
            component="default-scheduler",
        )
        for c in pod["spec"].get("containers") or []:
            involved = {**_pod_involved(pod), "fieldPath": f"spec.containers{{{c.get('name')}}}"}
            self.record(involved, "Pulling", f'Pulling image "{c.get("image", "")}"')
        node["empty_since"] = None

    # ---- what the API shows ------------------------------------------------------------------------------
    def pod_objects(self) -> list[dict[str, Any]]:
        return (
            [kubelet.pod_object(p, self.now) for p in self.rec["pods"].values()]
            + self.system_pod_objects()
            + [kubeaddons.pod_object(p, self.now) for p in self.rec["addons"].values()]
        )

    def replicaset_objects(self) -> list[dict[str, Any]]:
        out = []
        deployments = self.objects("deployments")
        for rs in self.rec["replicasets"].values():
            d = deployments.get(rs["deployment"])
            if d is None:
                continue
            pods, ready, available = self._rs_counts(rs)
            template = copy.deepcopy(rs["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = rs["hash"]
            selector = copy.deepcopy(d["spec"].get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = rs["hash"]
            status: dict[str, Any] = {
                "replicas": pods,
                "fullyLabeledReplicas": pods,
                "readyReplicas": ready,
                "availableReplicas": available,
                "observedGeneration": 1,
            }
            if rs.get("failure"):
                status["conditions"] = [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": rs["failure"],
                        "lastTransitionTime": kubesim.rfc3339(rs.get("failure_since") or self.now),
                    }
                ]
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs["name"],
                        "namespace": rs["namespace"],
                        "uid": rs["uid"],
                        "resourceVersion": str(self.rec.get("rv", 1)),
                        "generation": 1,
                        "creationTimestamp": kubesim.rfc3339(rs["created"]),
                        "labels": dict(template["metadata"]["labels"]),
                        "annotations": {
                            **rs.get("annotations", {}),
                            "deployment.kubernetes.io/desired-replicas": str(d["spec"].get("replicas", 1)),
                            "deployment.kubernetes.io/max-replicas": str(
                                int(d["spec"].get("replicas", 1)) + kubesim.fenceposts(d["spec"])[0]
                            ),
                            "deployment.kubernetes.io/revision": str(rs["revision"]),
                        },
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": d["metadata"]["name"],
                                "uid": d["metadata"].get("uid", ""),
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": {"replicas": rs["replicas"], "selector": selector, "template": template},
                    "status": {k: v for k, v in status.items() if v != 0 or k == "replicas"},
                }
            )
        return out

    def ready_pods(self, ns: str, selector: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Ready pods a Service with ``selector`` sends traffic to, newest first."""
        if not selector:
            return []
        out = [
            p
            for p in self.rec["pods"].values()
            if p["namespace"] == ns
            and all(p["labels"].get(k) == v for k, v in selector.items())
            and kubelet.ready(p)
        ]
        return sorted(out, key=lambda p: -p["created"])


def _created(kv: tuple[str, dict[str, Any]]) -> tuple[str, str]:
    return kv[1]["metadata"].get("creationTimestamp", ""), kv[0]


def _involved(d: dict[str, Any]) -> dict[str, Any]:
    meta = d["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid", ""),
    }


_pod_involved = kubesim.pod_involved


def _deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, int, float]:
    """ActivePods order: unassigned < assigned, pending < running, not ready < ready, more restarts
    first, newer first."""
    running = any(c["state"] == "running" for c in pod["containers"].values())
    restarts = sum(c["restarts"] for c in pod["containers"].values())
    return (bool(pod.get("node")), running, kubelet.ready(pod), -restarts, -pod["created"])


def _parse_time(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
