"""The waits of TF Serving's objects: a Deployment's rollout as ``kubectl rollout status`` decides it,
with the reason a rollout cannot finish (the pod's, with a hint), and a Service's load balancer
address. Used by the serving resources (``serving.Deployment``, ``serving.Service``).

Example::

    wait_for_rollout(ctx, deployment, generation)      # RolloutStuck names the pod's reason
    ip = ingress_ip(with_load_balancer(ctx, service))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ... import retry
from ...errors import RolloutStuck, WaitTimeout
from ..context import GcpContext
from ..labels import APP
from .kube import KubeObject, kube_call, raw_json

STUCK_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
)
STUCK_HINTS = {
    "max node group size reached": "the node pool is at cluster.max_nodes: raise it, or lower serving.replicas / serving.cpu",
    "wouldn't fit if a new node is added": "the pod's requests do not fit on a node: lower serving.cpu / serving.memory or use a larger cluster.machine_type",
    "Insufficient": "the pod's requests do not fit on a node: lower serving.cpu / serving.memory or use a larger cluster.machine_type",
    "service account": "the Deployment's Kubernetes service account is missing: run sdcluster apply",
    "ImagePullBackOff": "check serving.image (does that image and tag exist and can the nodes pull it?)",
    "ErrImagePull": "check serving.image (does that image and tag exist and can the nodes pull it?)",
    "InvalidImageName": "check serving.image",
    "CrashLoopBackOff": "the container keeps crashing: check its logs (kubectl logs deploy/stable-diffusion)",
}


def pods_and_events(
    ctx: GcpContext, obj: KubeObject, deployment: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pods of the Deployment's newest ReplicaSet (its current template) and the namespace's events."""
    from kubernetes import client as k8s

    client = ctx.kube(admin=True)
    core, apps = k8s.CoreV1Api(client), k8s.AppsV1Api(client)
    ns, selector = obj.namespace, f"app={APP}"
    sets = raw_json(
        kube_call(
            ctx, lambda: apps.list_namespaced_replica_set(ns, label_selector=selector, _preload_content=False)
        )
    ).get("items", [])
    uid = (deployment.get("metadata") or {}).get("uid")
    owned = [
        rs
        for rs in sets
        if any(o.get("uid") == uid for o in (rs.get("metadata") or {}).get("ownerReferences") or [])
    ]
    newest = max(
        owned, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION, 0)), default=None
    )
    hash_ = ((newest or {}).get("metadata", {}).get("labels") or {}).get("pod-template-hash")
    if hash_:
        selector = f"{selector},pod-template-hash={hash_}"
    pods = raw_json(
        kube_call(ctx, lambda: core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False))
    )
    events = raw_json(kube_call(ctx, lambda: core.list_namespaced_event(ns, _preload_content=False)))
    return pods.get("items", []), events.get("items", [])


REVISION = "deployment.kubernetes.io/revision"
WATCH_S = 30  # one watch request's timeoutSeconds; the next one starts afresh (and wakes the wait)


class Watches(retry.Wake):
    """Set on every event of the object's watches; ``watched`` while all of them are connected and
    ``relied`` (the waiter's say: what it waits for now is a change they see)."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self._want, self._live = set(kinds), set[str]()
        self._lock = threading.Lock()
        self.relied = True

    @property
    def watched(self) -> bool:
        with self._lock:
            return self.relied and bool(self._want) and self._live == self._want

    def connected(self, kind: str, up: bool) -> None:
        with self._lock:
            (self._live.add if up else self._live.discard)(kind)
        if up:  # a change before the watch began is not an event of it: look once now
            self.set()


@contextmanager
def watching(ctx: GcpContext, obj: KubeObject, *kinds: str) -> Iterator[Watches]:
    """A wake set whenever the object (``kinds``: "deployment", "service") or its pods ("pods")
    change, from Kubernetes watches, as ``kubectl rollout status`` and ``kubectl get -w`` follow
    them: a wait given it probes at once, not at its next poll, and while every watch is connected
    it polls only as their backup (``retry.Wake.watched``). Best effort: when a watch cannot be made
    or breaks, the polls go on as without it.
    """
    from kubernetes import client as k8s

    wake, done = Watches(kinds), threading.Event()
    api = ctx.kube(admin=True)
    ns, name = obj.namespace, f"metadata.name={obj.obj_name}"
    lists: dict[str, Callable[..., Any]] = {
        "deployment": lambda **kw: k8s.AppsV1Api(api).list_namespaced_deployment(
            ns, field_selector=name, **kw
        ),
        "service": lambda **kw: k8s.CoreV1Api(api).list_namespaced_service(ns, field_selector=name, **kw),
        "pods": lambda **kw: k8s.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app={APP}", **kw),
    }

    def follow(kind: str) -> None:
        while not done.is_set():
            try:
                response: Any = lists[kind](
                    watch=True, timeout_seconds=WATCH_S, _preload_content=False, _request_timeout=WATCH_S + 10
                )
                wake.connected(kind, True)
                try:
                    for _ in response.stream(4096, decode_content=True):  # any event: look again
                        wake.set()
                        if done.is_set():
                            break
                finally:
                    wake.connected(kind, False)
                    response.release_conn()
            except Exception:  # the wait's own polls go on; try again a little later
                done.wait(1.0)

    if api is not None:
        for kind in kinds:
            threading.Thread(target=follow, args=(kind,), name=f"watch-{kind}", daemon=True).start()
    try:
        yield wake
    finally:
        done.set()  # each watch ends at its next event or timeout (daemon threads meanwhile)


def _condition(obj: Mapping[str, Any], ctype: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == ctype), {})


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return _condition(pod, "Ready").get("status") == "True"


def stuck_reason(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> str | None:
    """Why the new pods cannot become ready, if that is final (None: keep waiting).

    A pod not yet scheduled (its PodScheduled condition False) is waiting for a node: final only when
    the cluster autoscaler said it will not add one (NotTriggerScaleUp: the pod would not fit, or the
    pool is at its maximum). Old FailedScheduling events (they live for an hour) decide nothing.
    """
    for p in pods:
        if pod_ready(p):
            continue
        meta = p.get("metadata", {})
        scheduled = _condition(p, "PodScheduled")
        if scheduled.get("status") == "False":
            verdicts = [
                e
                for e in events
                if e.get("reason") == "NotTriggerScaleUp"
                and (e.get("involvedObject") or {}).get("uid") == meta.get("uid")
            ]
            if verdicts:
                latest = max(verdicts, key=lambda e: str(e.get("lastTimestamp") or ""))
                return f"{scheduled.get('message', 'unschedulable')} (cluster autoscaler: {latest.get('message', '')})"
            continue
        for cs in p.get("status", {}).get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    return None


def rollout_progress(deployment: Mapping[str, Any]) -> str | None:
    """What ``kubectl rollout status`` waits for (None: rolled out). Raises RolloutStuck once the
    Deployment has exceeded its progress deadline or cannot create its pods.

    (kubectl's polymorphichelpers/rollout_status.go: observedGeneration, updatedReplicas, replicas,
    availableReplicas.)
    """
    meta, spec, status = (
        deployment.get("metadata", {}),
        deployment.get("spec", {}),
        deployment.get("status", {}) or {},
    )
    name = meta.get("name", "")
    if int(status.get("observedGeneration", 0) or 0) < int(meta.get("generation", 0) or 0):
        return "waiting for the spec update to be observed"
    failure = _condition(deployment, "ReplicaFailure")
    if failure.get("status") == "True":
        raise RolloutStuck(
            f"Deployment {name} cannot create its pods: {failure.get('message', '')}",
            hint=stuck_hint(str(failure.get("message", ""))),
        )
    if _condition(deployment, "Progressing").get("reason") == "ProgressDeadlineExceeded":
        raise RolloutStuck(
            f'deployment "{name}" exceeded its progress deadline',
            hint=f"see: kubectl describe deploy/{name} (sdcluster kubeconfig)",
        )
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0) or 0)
    replicas = int(status.get("replicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    if updated < want:
        return f"{updated} of {want} new replicas updated"
    if replicas > updated:
        return f"{replicas - updated} old replica(s) pending termination"
    if available < updated:
        return f"{available} of {updated} updated replicas available"
    return None


def stuck_hint(reason: str) -> str:
    key = next((k for k in STUCK_HINTS if k in reason), "")
    return STUCK_HINTS.get(key, f"see: kubectl describe pods -l app={APP} (sdcluster kubeconfig)")


def wait_for_rollout(
    ctx: GcpContext, obj: KubeObject, generation: int, until: str = "available"
) -> dict[str, Any]:
    """Until the Deployment has rolled out its new template, as ``kubectl rollout status`` decides;
    the Deployment as it was then.

    ``until="started"``: until the new pods run (their containers started), for a model path with no
    version yet, where TF Serving cannot become ready. A final reason (an image that cannot be pulled,
    a crash loop, pods that will not fit, a missing service account) seen over a grace period fails
    the update with the pod's reason and a hint, as a failed create does.
    """
    cfg = obj.cfg
    timeout = cfg.serving.rollout_timeout_s
    grace = min(60.0, timeout / 10)
    first_stuck: dict[str, float] = {}

    def probe() -> dict[str, Any] | None:
        d = obj.get(ctx, admin=True) or {}
        if int((d.get("metadata") or {}).get("generation", 0) or 0) < generation:
            d = {}
        waiting = rollout_progress(d) if d else "waiting for the Deployment"
        if waiting is None:
            return d  # rolled out: no pods or events to read
        pods, events = pods_and_events(ctx, obj, d)
        if until == "started" and "available" in waiting:
            started = [p for p in pods if _started(p)]
            if len(started) >= int((d.get("spec") or {}).get("replicas", 1)):
                return d
        ctx.report(obj.address, f"rolling out: {waiting}")
        reason = stuck_reason(pods, events)
        if reason:
            since = first_stuck.setdefault(reason, time.monotonic())
            if time.monotonic() - since >= grace:
                raise RolloutStuck(
                    f"Deployment {obj.obj_name} cannot become ready: {reason}", hint=stuck_hint(reason)
                )
        return None

    try:
        with watching(ctx, obj, "deployment", "pods") as wake:
            return retry.until(
                probe,
                timeout_s=timeout,
                what=f"Deployment {obj.obj_name} rollout",
                max_interval_s=5.0,
                wake=wake,
            )
    except WaitTimeout as e:
        raise WaitTimeout(
            str(e), hint="see: kubectl describe deploy/" + APP + " (sdcluster kubeconfig)"
        ) from e


def _started(pod: Mapping[str, Any]) -> bool:
    """All containers of the pod are running (TF Serving may still be waiting for its model)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (cs.get("state") or {}) for cs in statuses)


def ingress_ip(live: Mapping[str, Any]) -> str | None:
    ingress = (live.get("status", {}).get("loadBalancer", {}) or {}).get("ingress") or []
    return (ingress[0].get("ip") or ingress[0].get("hostname")) if ingress else None


def with_load_balancer(ctx: GcpContext, obj: KubeObject) -> dict[str, Any]:
    """The Service once its load balancer has an address (``ingress_ip`` of it)."""

    def probe() -> dict[str, Any] | None:
        live = obj.get(ctx, admin=True) or {}
        if not ingress_ip(live):
            ctx.report(obj.address, "waiting for the load balancer address")
            return None
        return live

    with watching(ctx, obj, "service") as wake:
        return retry.until(
            probe,
            timeout_s=obj.cfg.serving.lb_timeout_s,
            what=f"the load balancer address of Service {obj.obj_name}",
            hint="GKE can take a few minutes; check: kubectl describe svc " + APP,
            max_interval_s=5.0,
            wake=wake,
        )
