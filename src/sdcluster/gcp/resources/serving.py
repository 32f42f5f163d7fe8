"""TensorFlow Serving on the cluster: ConfigMap, Deployment, LoadBalancer Service (+ optional HPA),
their manifests, and the waits that make them useful (rollout, load balancer). Each object is a
``kube.KubeObject`` resource, applied server-side.

Destroy deletes the Service and waits until it is gone **before** the cluster goes: GKE does not
delete the load balancer of a Service when the cluster is deleted, and it keeps costing money.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ... import retry
from ...config.quantity import canonical_cpu, quantity_value
from ...engine import Resource
from ...errors import RolloutStuck, WaitTimeout
from ...tfserving import GRPC_PORT, HTTP_PORT, model_url
from ..context import GcpContext
from ..labels import K8S_MANAGED_BY, POOL_LABEL
from ..preflight import machine_vcpus
from .kube import KubeObject, kube_call, raw_json

if TYPE_CHECKING:
    from ...config import Config

APP = "stable-diffusion"
CONFIGMAP = "tfserving-configs"
BATCHING_DIR = "/etc/tfserving"
BATCHING_FILE = "batching_parameters.txt"
BATCHING_PARAMETERS = """max_batch_size { value: 4 }
batch_timeout_micros { value: 1000000 }
max_enqueued_batches { value: 16 }
num_batch_threads { value: 2 }
"""
# GKE gives Spot/preemptible nodes a short shutdown window; stay within it so TF Serving finishes
# in-flight requests instead of being killed mid-response.
TERMINATION_GRACE_S = 25
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
STUCK_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
)
STUCK_HINTS = {
    "Insufficient": "the pod's requests do not fit on a node: lower serving.cpu / serving.memory or use a larger cluster.machine_type",
    "ImagePullBackOff": "check serving.image (does that image and tag exist and can the nodes pull it?)",
    "ErrImagePull": "check serving.image (does that image and tag exist and can the nodes pull it?)",
    "InvalidImageName": "check serving.image",
    "CrashLoopBackOff": "the container keeps crashing: check its logs (kubectl logs deploy/stable-diffusion)",
}


# --------------------------------------------------------------------------------------------------
# Desired objects (pure)


def labels() -> dict[str, str]:
    return {"app": APP, **K8S_MANAGED_BY}


def configmap_manifest(cfg: Config) -> dict[str, Any]:
    data = {"MODEL_NAME": cfg.serving.model_name, "MODEL_PATH": cfg.model_path}
    if cfg.serving.batching:
        data[BATCHING_FILE] = BATCHING_PARAMETERS
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": cfg.serving.namespace, "labels": labels()},
        "data": data,
    }


def deployment_manifest(cfg: Config) -> dict[str, Any]:
    s = cfg.serving
    gpus = cfg.cluster.accelerator_count if cfg.cluster.accelerator_type else 0
    image = s.image
    if gpus and not image.endswith("-gpu"):
        image = f"{image}-gpu"
    args = [
        f"--model_name={s.model_name}",
        f"--model_base_path={cfg.model_path}",
        f"--rest_api_timeout_in_ms={s.rest_api_timeout_ms}",
        f"--port={GRPC_PORT}",
        f"--rest_api_port={HTTP_PORT}",
    ]
    if s.batching:
        args += ["--enable_batching", f"--batching_parameters_file={BATCHING_DIR}/{BATCHING_FILE}"]
    resources: dict[str, Any] = {"requests": {"cpu": canonical_cpu(s.cpu), "memory": s.memory}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    container: dict[str, Any] = {
        "name": "tf-serving",
        "image": image,
        "args": args,
        "env": [
            {
                "name": "MODEL_NAME",
                "valueFrom": {"configMapKeyRef": {"name": CONFIGMAP, "key": "MODEL_NAME"}},
            },
            {
                "name": "MODEL_PATH",
                "valueFrom": {"configMapKeyRef": {"name": CONFIGMAP, "key": "MODEL_PATH"}},
            },
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        # TF Serving answers 200 on /v1/models/<name> while the model is still LOADING; the metadata
        # endpoint answers only once a version is AVAILABLE, so it is the honest readiness signal.
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{s.model_name}/metadata", "port": HTTP_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Liveness only checks that the server answers; loading a large model can take minutes.
        "livenessProbe": {
            "tcpSocket": {"port": GRPC_PORT},
            "initialDelaySeconds": 60,
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        # Our pool carries this node label whatever its GKE name (a replaced pool gets a suffix).
        "nodeSelector": {POOL_LABEL: cfg.cluster.node_pool},
    }
    if s.batching:
        container["volumeMounts"] = [
            {"name": "tfserving-configs", "mountPath": BATCHING_DIR, "readOnly": True}
        ]
        pod_spec["volumes"] = [
            {
                "name": "tfserving-configs",
                "configMap": {"name": CONFIGMAP, "items": [{"key": BATCHING_FILE, "path": BATCHING_FILE}]},
            }
        ]
    if gpus:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": s.namespace, "labels": labels()},
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {"metadata": {"labels": labels()}, "spec": pod_spec},
        },
    }


def service_manifest(cfg: Config) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "selector": {"app": APP},
        "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
        ],
    }
    if cfg.serving.allowed_source_ranges:
        spec["loadBalancerSourceRanges"] = list(cfg.serving.allowed_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "namespace": cfg.serving.namespace, "labels": labels()},
        "spec": spec,
    }


def hpa_manifest(cfg: Config) -> dict[str, Any]:
    s = cfg.serving
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": APP, "namespace": s.namespace, "labels": labels()},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": s.replicas,
            "maxReplicas": s.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": s.target_cpu_utilization},
                    },
                }
            ],
        },
    }


def namespace_manifest(cfg: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": cfg.serving.namespace, "labels": labels()},
    }


class Deployment(KubeObject):
    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        return capacity_warnings(self.cfg)

    def extra(self, live: Mapping[str, Any]) -> dict[str, Any]:
        status = live.get("status", {}) or {}
        return {"ready": f"{status.get('readyReplicas', 0) or 0}/{live.get('spec', {}).get('replicas', 0)}"}

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> None:
        wait_for_rollout(ctx, self, int(live.get("metadata", {}).get("generation", 0)))


class Service(KubeObject):
    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        if self.cfg.serving.allowed_source_ranges:
            return []
        return [
            f"the endpoint (Service {self.obj_name}, type LoadBalancer) will be open to the whole internet; "
            'restrict it with serving.allowed_source_ranges = ["203.0.113.0/24"]'
        ]

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> None:
        load_balancer_ip(ctx, self)

    def extra(self, live: Mapping[str, Any]) -> dict[str, Any]:
        return {"lb_ip": ingress_ip(live) or ""}


def capacity_warnings(cfg: Config) -> list[str]:
    """Can the pods fit on the pool at the configured requests?"""
    vcpus = machine_vcpus(cfg.cluster.machine_type)
    if not vcpus:
        return []
    # GKE reserves part of each node for the system: about 80m of a 4-vCPU node, more on small ones.
    allocatable = Decimal(vcpus) - Decimal("0.08") if vcpus >= 2 else Decimal(vcpus) * Decimal("0.9")
    request = quantity_value(cfg.serving.cpu)
    if request > allocatable:
        return [
            f"serving.cpu = {cfg.serving.cpu} exceeds the allocatable CPU of a {cfg.cluster.machine_type} node "
            f"(~{allocatable}): the pods will never be scheduled"
        ]
    per_node = int(allocatable // request) if request else 0
    wanted = cfg.serving.max_replicas if cfg.serving.autoscaling else cfg.serving.replicas
    fit = per_node * cfg.cluster.max_nodes
    if wanted > fit:
        return [
            f"{wanted} replicas x {cfg.serving.cpu} CPU cannot fit on {cfg.cluster.max_nodes} x "
            f"{cfg.cluster.machine_type} ({per_node} per node): at most {fit} will run"
        ]
    return []


# --------------------------------------------------------------------------------------------------
# Waits


def _pods_and_events(ctx: GcpContext, namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from kubernetes import client as k8s

    client = ctx.kube(admin=True)
    core = k8s.CoreV1Api(client)
    pods = raw_json(
        kube_call(
            ctx,
            lambda: core.list_namespaced_pod(namespace, label_selector=f"app={APP}", _preload_content=False),
        )
    )
    events = raw_json(kube_call(ctx, lambda: core.list_namespaced_event(namespace, _preload_content=False)))
    return pods.get("items", []), events.get("items", [])


def stuck_reason(pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> str | None:
    """Why pods cannot become ready, from pod status and events (None: nothing definitive yet)."""
    names = {p.get("metadata", {}).get("name") for p in pods}
    for p in pods:
        for cs in p.get("status", {}).get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    for e in events:
        if e.get("reason") == "FailedScheduling" and e.get("involvedObject", {}).get("name") in names:
            msg = str(e.get("message", ""))
            if "Insufficient" in msg:
                return f"FailedScheduling: {msg}"
    return None


def wait_for_rollout(ctx: GcpContext, obj: KubeObject, generation: int) -> None:
    """Until the Deployment is Available with readyReplicas == replicas for our generation.

    A stuck rollout (unschedulable, image pull failure, crash loop) seen over a grace period is
    reported with the reason from pod status/events and a hint, instead of waiting out the timeout.
    """
    cfg = obj.cfg
    timeout = cfg.serving.rollout_timeout_s
    grace = min(60.0, timeout / 10)
    first_stuck: dict[str, float] = {}

    def probe() -> bool | None:
        d = obj.get(ctx, admin=True) or {}
        spec, status = d.get("spec", {}), d.get("status", {})
        want = int(spec.get("replicas", 1))
        ready = int(status.get("readyReplicas", 0) or 0)
        available = any(
            c.get("type") == "Available" and c.get("status") == "True"
            for c in status.get("conditions", []) or []
        )
        if int(status.get("observedGeneration", 0) or 0) >= generation and ready >= want and available:
            return True
        ctx.report(obj.address, f"rolling out: {ready}/{want} ready")
        pods, events = _pods_and_events(ctx, obj.namespace)
        reason = stuck_reason(pods, events)
        if reason:
            since = first_stuck.setdefault(reason, time.monotonic())
            if time.monotonic() - since >= grace:
                key = next((k for k in STUCK_HINTS if k in reason), "")
                raise RolloutStuck(
                    f"Deployment {obj.obj_name} cannot become ready: {reason}",
                    hint=STUCK_HINTS.get(key, "see: kubectl describe pods -l app=" + APP),
                )
        return None

    try:
        retry.until(probe, timeout_s=timeout, what=f"Deployment {obj.obj_name} rollout", max_interval_s=5.0)
    except WaitTimeout as e:
        raise WaitTimeout(
            str(e), hint="see: kubectl describe deploy/" + APP + " (sdcluster kubeconfig)"
        ) from e


def ingress_ip(live: Mapping[str, Any]) -> str | None:
    ingress = (live.get("status", {}).get("loadBalancer", {}) or {}).get("ingress") or []
    return (ingress[0].get("ip") or ingress[0].get("hostname")) if ingress else None


def load_balancer_ip(ctx: GcpContext, obj: KubeObject) -> str:
    def probe() -> str | None:
        ip = ingress_ip(obj.get(ctx, admin=True) or {})
        if not ip:
            ctx.report(obj.address, "waiting for the load balancer address")
        return str(ip) if ip else None

    return retry.until(
        probe,
        timeout_s=obj.cfg.serving.lb_timeout_s,
        what=f"the load balancer address of Service {obj.obj_name}",
        hint="GKE can take a few minutes; check: kubectl describe svc " + APP,
        max_interval_s=5.0,
    )


# --------------------------------------------------------------------------------------------------
# Assembly


def serving_resources(
    cfg: Config, cluster_deps: tuple[str, ...], model_deps: tuple[str, ...]
) -> list[Resource[GcpContext]]:
    ns = cfg.serving.namespace
    out: list[Resource[GcpContext]] = []
    base = cluster_deps
    if ns != "default":
        namespace = KubeObject(cfg, namespace_manifest(cfg), cluster_deps)
        out.append(namespace)
        base = (*cluster_deps, namespace.address)
    configmap = KubeObject(cfg, configmap_manifest(cfg), base)
    deployment = Deployment(cfg, deployment_manifest(cfg), (*base, *model_deps, configmap.address))
    # The Service does not wait for the rollout: its load balancer is provisioned meanwhile.
    service = Service(cfg, service_manifest(cfg), base)
    out += [configmap, deployment, service]
    if cfg.serving.autoscaling:
        out.append(KubeObject(cfg, hpa_manifest(cfg), (*base, deployment.address)))
    return out


def endpoint_outputs(cfg: Config, service_ip: str | None) -> dict[str, Any]:
    if not service_ip:
        return {}
    return {
        "endpoint": model_url(service_ip, cfg.serving.model_name),
        "grpc_address": f"{service_ip}:{GRPC_PORT}",
    }
