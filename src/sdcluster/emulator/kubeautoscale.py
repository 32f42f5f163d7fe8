"""GKE's cluster autoscaler over an emulated cluster (a mixin of ``kubecontrol.ClusterSim``).

- **scale-up**: a Pending pod that fits an empty node of a pool below its maximum triggers a
  scale-up (``TriggeredScaleUp``) that lands ``autoscale_s`` later; one that would not fit (the
  node group's template: its labels, taints and room), or only on pools at their maximum, gets
  ``NotTriggerScaleUp`` in the autoscaler's words;
- **scale-down**: a node without pods for ``scale_down_s`` (and at least that old) is removed down
  to the pool's minimum, which may be 0 (``ScaleDownEmpty``). DaemonSet pods do not count; every
  other pod does, and GKE's cluster-wide kube-system pods (``kubeaddons``) keep their node up
  because they have no PodDisruptionBudget (kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What
  types of pods can prevent CA from removing a node?").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import kubesim
from .core import Knobs


class Autoscaler:
    """The cluster autoscaler's half of ``ClusterSim`` (it provides the attributes declared here)."""

    key: str
    rec: dict[str, Any]
    now: float
    knobs: Knobs
    project: str
    resized: Callable[[str, int], None]
    record: Callable[..., None]  # ClusterSim.record: an event (involved, reason, message, ...)

    def pools(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def sync_nodes(self) -> None:
        raise NotImplementedError

    def _remove_node(self, name: str) -> None:
        raise NotImplementedError

    def pending_pods(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def busy_nodes(self) -> set[str]:
        raise NotImplementedError

    def _autoscaled(self) -> dict[str, tuple[dict[str, Any], int, int]]:
        """Pools with autoscaling: (pool, min, max) in nodes (the limits are per zone)."""
        out = {}
        for name, pool in self.pools().items():
            a = pool.get("autoscaling") or {}
            if a.get("enabled"):
                zones = len(pool.get("zones") or []) or 1
                out[name] = (
                    pool,
                    int(a.get("min_node_count", 0)) * zones,
                    int(a.get("max_node_count", 0)) * zones,
                )
        return out

    def _template_free(self, pool: dict[str, Any]) -> kubesim.Free:
        """An empty node the pool would add (what the autoscaler simulates scheduling on)."""
        record = {
            "name": "template",
            "pool": pool["name"],
            "index": 0,
            "zone": (pool.get("zones") or [""])[0],
            "created": self.now,
        }
        return kubesim.free_on(kubesim.node_object(self.key, record, pool), pool)

    def autoscale(self) -> None:
        pools = self._autoscaled()
        if not pools:
            return
        waiting = {uid for up in self.rec["scale_ups"] for uid in up["pods"]}
        pending = [p for p in self.pending_pods() if p["unschedulable"] and p["uid"] not in waiting]
        planned: dict[str, list[kubesim.Free]] = {}
        triggered: dict[str, list[dict[str, Any]]] = {}
        for pod in pending:
            need = kubesim.pod_requests(pod["spec"])
            misfit, fitting = [], []
            for name, (pool, _, _) in pools.items():
                m = kubesim.misfits(self._template_free(pool), need, pod["spec"])
                (misfit.append(m) if m else fitting.append(name))
            if not fitting:
                message = f"pod didn't trigger scale-up (it wouldn't fit if a new node is added): {kubesim.count_reasons(misfit)}"
                self.record(
                    kubesim.pod_involved(pod), "NotTriggerScaleUp", message, component="cluster-autoscaler"
                )
                continue
            placed = self._place_virtually(pod, need, fitting, pools, planned, triggered)
            if not placed:
                at_max = [["max node group size reached"]] * len(fitting)
                message = f"pod didn't trigger scale-up: {kubesim.count_reasons(at_max + misfit)}"
                self.record(
                    kubesim.pod_involved(pod), "NotTriggerScaleUp", message, component="cluster-autoscaler"
                )
        for name, nodes in planned.items():
            pool, _, most = pools[name]
            current = self._size(name)
            up: dict[str, Any] = {
                "pool": name,
                "to": current + len(nodes),
                "at": self.now + self.knobs.autoscale_s,
                "pods": [],
            }
            for pod in triggered[name]:
                up["pods"].append(pod["uid"])
                group = str(pool.get("instance_group", "")).replace(
                    "/instanceGroupManagers/", "/instanceGroups/"
                )
                self.record(
                    kubesim.pod_involved(pod),
                    "TriggeredScaleUp",
                    f"pod triggered scale-up: [{{{group} {current}->{up['to']} (max: {most})}}]",
                    component="cluster-autoscaler",
                )
            self.rec["scale_ups"].append(up)
        self._scale_down(pools)

    def _size(self, pool: str) -> int:
        """Nodes of ``pool`` now plus those a scale-up is bringing."""
        planned = [u["to"] for u in self.rec["scale_ups"] if u["pool"] == pool]
        return int(max([int(self.pools()[pool].get("node_count", 0)), *planned]))

    def _place_virtually(
        self,
        pod: dict[str, Any],
        need: dict[str, float],
        fitting: list[str],
        pools: dict[str, tuple[dict[str, Any], int, int]],
        planned: dict[str, list[kubesim.Free]],
        triggered: dict[str, list[dict[str, Any]]],
    ) -> bool:
        for name in fitting:
            for vnode in planned.get(name, []):
                if not kubesim.misfits(vnode, need, pod["spec"]):
                    vnode.take(need)
                    triggered[name].append(pod)
                    return True
        for name in fitting:
            pool, _, most = pools[name]
            if self._size(name) + len(planned.get(name, [])) < most:
                vnode = self._template_free(pool)
                vnode.take(need)
                planned.setdefault(name, []).append(vnode)
                triggered.setdefault(name, []).append(pod)
                return True
        return False

    def autoscale_due(self) -> None:
        """Scale-ups whose nodes have come up."""
        due = [u for u in self.rec["scale_ups"] if u["at"] <= self.now]
        self.rec["scale_ups"] = [u for u in self.rec["scale_ups"] if u["at"] > self.now]
        for up in due:
            pool = self.pools().get(up["pool"])
            if pool is None or int(pool.get("node_count", 0)) >= up["to"]:
                continue
            self._set_size(pool, up["to"])

    def _set_size(self, pool: dict[str, Any], count: int) -> None:
        pool["node_count"] = count
        self.sync_nodes()
        self.resized(str(pool["name"]), count)

    def _scale_down(self, pools: dict[str, tuple[dict[str, Any], int, int]]) -> None:
        busy = self.busy_nodes()
        pending = bool(self.pending_pods())
        for name, (pool, least, _) in pools.items():
            nodes = sorted(
                (n for n in self.rec["node_records"].values() if n["pool"] == name), key=lambda n: -n["index"]
            )
            count = int(pool.get("node_count", 0))
            for node in nodes:
                if node["name"] in busy:
                    node["empty_since"] = None
                    continue
                node["empty_since"] = node.get("empty_since") or self.now
                idle = self.now - node["empty_since"] >= self.knobs.scale_down_s
                old = self.now - node["created"] >= self.knobs.scale_down_s
                if count > least and idle and old and not pending:
                    self.record(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": node["name"],
                            "namespace": "default",
                            "uid": kubesim.stable_uid("node", self.project, node["zone"], node["name"]),
                        },
                        "ScaleDownEmpty",
                        f'Scale-down: removing empty node "{node["name"]}"',
                        component="cluster-autoscaler",
                    )
                    self._remove_node(node["name"])
                    count -= 1
                    pool["node_count"] = count
                    self.resized(name, count)
