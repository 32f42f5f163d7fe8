"""Pause and resume: the serving Deployment at zero replicas (its nodes then go) and back.

A paused cluster keeps everything but its serving pods: the cluster, the system pool, the bucket and
the model, the LoadBalancer Service and its address, the state. Pausing is recorded **on the
cluster**, as the annotation ``sdcluster.dev/paused`` of the Deployment, so the laptop (plan, status,
apply, generate) and the in-cluster autostop (``sdcluster/data/autostop.py``, which pauses the same
way with its own narrow Kubernetes service account) see the same thing.

With ``cluster.min_nodes = 0`` (the default) and the system pool holding GKE's own pods, the cluster
autoscaler removes the serving nodes once they are empty (GKE: after about 10 minutes of being
unneeded); on resume the pending pods make it add them again (scale from zero).

Example::

    ctx = GcpStack(cfg).context(None)
    pause(ctx)          # -> "2026-12-01T13:00:00Z"
    resume(ctx)         # returns once TF Serving's model is AVAILABLE
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from ..errors import NotFound
from .context import GcpContext
from .labels import APP, POOL_LABEL, SERVING_TAINT
from .resources.kube import kube_call, raw_json
from .resources.serving import AUTOSTOP, AUTOSTOP_STATE, PAUSED, Deployment, deployment_manifest, paused_note

RESUME_SECONDS = "sdcluster.dev/resume-seconds"  # how long the last resume took, measured here
MERGE_PATCH = "application/merge-patch+json"
PAUSE_MANAGER = "sdcluster-pause"


def deployment(ctx: GcpContext) -> Deployment:
    cfg = ctx.config
    return Deployment(cfg, deployment_manifest(cfg), ())


def _live(ctx: GcpContext, dep: Deployment) -> dict[str, Any]:
    live = dep.get(ctx, admin=True)
    if live is None:
        raise NotFound(
            f"Deployment {APP} does not exist in namespace {dep.namespace}: nothing to pause or resume",
            hint="run: sdcluster apply",
        )
    return live


def _api(ctx: GcpContext, kind: str) -> Any:
    """``kind`` ("AppsV1Api", "CoreV1Api") on the cluster, as the admin."""
    from kubernetes import client as k8s

    return getattr(k8s, kind)(ctx.kube(admin=True))


def _merge_patch(
    ctx: GcpContext, patch: Any, name: str, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    """One JSON merge patch by the pause's field manager (a client's ``patch_namespaced_*``)."""
    return raw_json(
        kube_call(
            ctx,
            lambda: patch(
                name,
                namespace,
                body,
                field_manager=PAUSE_MANAGER,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            ),
        )
    )


def _annotate(ctx: GcpContext, dep: Deployment, values: dict[str, str | None]) -> dict[str, Any]:
    apps = _api(ctx, "AppsV1Api")
    return _merge_patch(
        ctx, apps.patch_namespaced_deployment, APP, dep.namespace, {"metadata": {"annotations": values}}
    )


def _scale(ctx: GcpContext, dep: Deployment, replicas: int) -> None:
    apps = _api(ctx, "AppsV1Api")
    _merge_patch(
        ctx, apps.patch_namespaced_deployment_scale, APP, dep.namespace, {"spec": {"replicas": replicas}}
    )


def now_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pause(ctx: GcpContext, by: str = "sdcluster pause") -> str:
    """Annotate the Deployment as paused, then scale it to zero; returns the annotation. Pausing a
    paused cluster changes nothing. (Annotation first: a run killed in between leaves a cluster
    that plan calls paused and resume brings back.)"""
    dep = deployment(ctx)
    live = _live(ctx, dep)
    note = paused_note(live)
    if not note:
        note = f"{now_stamp()} by {by}"
        _annotate(ctx, dep, {PAUSED: note})
    if int((live.get("spec") or {}).get("replicas", 0) or 0) != 0:
        _scale(ctx, dep, 0)
    return note


def resume(ctx: GcpContext) -> dict[str, Any]:
    """Scale back to ``serving.replicas``, drop the annotation, and wait as apply does: until the
    new pods serve the model (AVAILABLE), or only until they run while no version exists."""
    started = time.monotonic()
    dep = deployment(ctx)
    live = _live(ctx, dep)
    replicas = ctx.config.serving.replicas
    was_paused = bool(paused_note(live))
    if int((live.get("spec") or {}).get("replicas", 0) or 0) != replicas:
        _scale(ctx, dep, replicas)
    # The autostop's idle clock starts again: the time paused was not idleness of a running server.
    live = _annotate(ctx, dep, {PAUSED: None, AUTOSTOP: None}) if was_paused else _live(ctx, dep)
    if was_paused and ctx.config.serving.idle_stop_minutes:
        _clear_autostop(ctx)
    dep.after_apply(ctx, live)
    if was_paused:
        _annotate(ctx, dep, {RESUME_SECONDS: str(round(time.monotonic() - started))})
    return dep.read(ctx, None) or {}


def _clear_autostop(ctx: GcpContext) -> None:
    """The autostop's note and idle clock go (its next run starts the clock again)."""
    core = _api(ctx, "CoreV1Api")
    body = {"data": {"paused": None, "count": None, "since": None}}
    try:
        _merge_patch(
            ctx, core.patch_namespaced_config_map, AUTOSTOP_STATE, ctx.config.serving.namespace, body
        )
    except NotFound:
        pass


def usual_resume(ctx: GcpContext) -> str:
    """How long a resume usually takes here: the last one measured on this cluster, else what it
    is made of."""
    live = deployment(ctx).get(ctx) or {}
    seconds = ((live.get("metadata") or {}).get("annotations") or {}).get(RESUME_SECONDS)
    if seconds and str(seconds).isdigit():
        return f"the last resume of this cluster took {_duration(int(seconds))}"
    return (
        "usually a few minutes: a new serving node (GKE's autoscaler, 1-2 minutes), the image pull "
        "and TF Serving loading the model"
    )


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60} s"


def is_paused(ctx: GcpContext) -> str:
    """The paused annotation of the configured Deployment ("" if it serves or does not exist)."""
    return paused_note(deployment(ctx).get(ctx) or {})


def node_holders(ctx: GcpContext) -> list[dict[str, Any]]:
    """The kube-system pods that keep a serving node up ({"pod", "node", "tainted": whether that
    node carries SERVING_TAINT yet}): not a DaemonSet's and not a node's mirror pod, so the cluster
    autoscaler does not remove their node (kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What
    types of pods can prevent CA from removing a node?"). With the serving pool tainted new ones go
    to the system pool; one placed before the taint stays until it is deleted (its Deployment then
    makes it again, on the system pool)."""
    core = _api(ctx, "CoreV1Api")
    selector = f"{POOL_LABEL}={ctx.config.cluster.node_pool}"
    tainted = {
        n.metadata.name: any(t.key == SERVING_TAINT["key"] for t in n.spec.taints or [])
        for n in kube_call(ctx, lambda: core.list_node(label_selector=selector)).items
    }
    if not tainted:
        return []
    pods = kube_call(ctx, lambda: core.list_namespaced_pod("kube-system")).items
    out = []
    for pod in pods:
        owners = {o.kind for o in pod.metadata.owner_references or []}
        if pod.spec.node_name in tainted and not owners & {"DaemonSet", "Node"}:
            node = pod.spec.node_name
            out.append({"pod": pod.metadata.name, "node": node, "tainted": tainted[node]})
    return sorted(out, key=lambda h: (h["node"], h["pod"]))
