"""TensorFlow Serving on the cluster: ConfigMap, Deployment, LoadBalancer Service (+ optional HPA).

Each Kubernetes object is a resource of the engine, applied with **server-side apply** (field manager
``sdcluster``, ``application/apply-patch+yaml``). Plan compares only the fields sdcluster sets: the
live object is projected onto the shape of the desired manifest, so fields set by the cluster or by
other managers elsewhere are not drift, while one of ours changed out of band is (and apply restores
it, taking the field back with ``force``).

The cluster is reached with the endpoint and CA from GetCluster and a bearer token from the
impersonated gke-admin credentials (reads use the user's); TLS is verified against the cluster CA
and no kubeconfig is written.

Destroy deletes the Service and waits until it is gone **before** the cluster goes: GKE does not
delete the load balancer of a Service when the cluster is deleted, and it keeps costing money.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import retry
from .errors import NotFound, RolloutStuck, WaitTimeout
from .plan import Change, Resource
from .state import ResourceState

if TYPE_CHECKING:
    from .config import Config
    from .stack import GcpContext

FIELD_MANAGER = "sdcluster"
APP = "stable-diffusion"
CONFIGMAP = "tfserving-configs"
HTTP_PORT = 8501
GRPC_PORT = 8500
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


def canonical_cpu(cpu: str) -> str:
    """The form the API server stores a CPU quantity in ("2.5" -> "2500m"), so plans stay quiet."""
    if cpu.endswith("m"):
        return cpu
    value = Decimal(cpu)
    return str(int(value)) if value == value.to_integral_value() else f"{int(value * 1000)}m"


def labels() -> dict[str, str]:
    return {"app": APP, "app.kubernetes.io/managed-by": "sdcluster"}


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
        "nodeSelector": {"sdcluster-pool": cfg.cluster.node_pool},
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


# --------------------------------------------------------------------------------------------------
# Projection and flattening (pure): what counts as "our fields"

_LIST_KEYS = ("name", "containerPort", "port", "key", "mountPath", "type")


def _item_key(item: Any) -> str | None:
    if isinstance(item, dict):
        for k in _LIST_KEYS:
            if k in item:
                return f"{k}={item[k]}"
    return None


def project(live: Any, desired: Any) -> Any:
    """The part of ``live`` that has the shape of ``desired`` (keyed lists matched by key)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return None
        return {k: project(live.get(k), v) for k, v in desired.items()}
    if isinstance(desired, list) and desired and all(_item_key(x) for x in desired):
        if not isinstance(live, list):
            return None
        by_key = {_item_key(x): x for x in live}
        return [project(by_key.get(_item_key(d)), d) for d in desired]
    return live


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted attribute paths for plan display: ``spec.template.spec.containers[tf-serving].image``."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(obj, list) and obj and all(_item_key(x) for x in obj):
        for x in obj:
            key = str(_item_key(x)).split("=", 1)[1]
            out.update(flatten(x, f"{prefix}[{key}]"))
    else:
        out[prefix] = obj
    return out


# --------------------------------------------------------------------------------------------------
# Kubernetes access


@dataclass(frozen=True)
class Kind:
    api: str  # kubernetes.client class name
    plural: str  # method suffix, e.g. "namespaced_deployment"
    namespaced: bool = True


KINDS = {
    "Namespace": Kind("CoreV1Api", "namespace", namespaced=False),
    "ConfigMap": Kind("CoreV1Api", "namespaced_config_map"),
    "Service": Kind("CoreV1Api", "namespaced_service"),
    "Deployment": Kind("AppsV1Api", "namespaced_deployment"),
    "HorizontalPodAutoscaler": Kind("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
}


def _api(client: Any, kind: str) -> Any:
    from kubernetes import client as k8s

    return getattr(k8s, KINDS[kind].api)(client)


def _raw(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response.read()
    return json.loads(data) if data else {}


def _call(ctx: GcpContext, fn: Callable[[], Any]) -> Any:
    return retry.call(fn, project=ctx.project)


class KubeObject(Resource):
    """One Kubernetes object, applied server-side with field manager ``sdcluster``."""

    def __init__(self, cfg: Config, manifest: dict[str, Any], deps: tuple[str, ...]) -> None:
        self.kind = manifest["kind"]
        self.obj_name = manifest["metadata"]["name"]
        self.namespace = manifest["metadata"].get("namespace", "")
        self.type = f"k8s.{self.kind.lower()}"  # type: ignore[misc]
        where = f"{self.namespace}/" if self.namespace else ""
        super().__init__(f"{self.type}.{where}{self.obj_name}", flatten(manifest), deps)
        self.cfg = cfg
        self.manifest = manifest

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.obj_name}"

    def _args(self) -> list[str]:
        return [self.obj_name, self.namespace] if KINDS[self.kind].namespaced else [self.obj_name]

    def get(self, ctx: GcpContext, admin: bool = False) -> dict[str, Any] | None:
        client = ctx.kube(admin=admin)
        if client is None:
            return None
        api = _api(client, self.kind)
        fn = getattr(api, f"read_{KINDS[self.kind].plural}")
        try:
            return _raw(_call(ctx, lambda: fn(*self._args(), _preload_content=False)))
        except NotFound:
            return None

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        live = self.get(ctx)
        if live is None or live.get("metadata", {}).get("deletionTimestamp"):
            return None
        return {**flatten(project(live, self.manifest)), **self.extra(live)}

    def extra(self, live: Mapping[str, Any]) -> dict[str, Any]:
        """Informative attributes recorded in state (never diffed): e.g. the load balancer address."""
        return {}

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"{self.kind} {self.obj_name} matches (fields managed by {FIELD_MANAGER})"

    def apply(self, ctx: GcpContext) -> dict[str, Any]:
        client = ctx.kube(admin=True)
        if client is None:
            raise NotFound(f"cannot apply {self.kind} {self.obj_name}: the cluster does not exist")
        api = _api(client, self.kind)
        fn = getattr(api, f"patch_{KINDS[self.kind].plural}")
        live = _raw(
            _call(
                ctx,
                lambda: fn(
                    *self._args(),
                    self.manifest,
                    field_manager=FIELD_MANAGER,
                    force=True,  # take back fields another manager changed out of band (the plan showed them)
                    _content_type="application/apply-patch+yaml",
                    _preload_content=False,
                ),
            )
        )
        self.after_apply(ctx, live)
        final = self.get(ctx, admin=True) or live
        return {**flatten(project(final, self.manifest)), **self.extra(final)}

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> None:
        """Wait for whatever makes the object useful (rollout, load balancer)."""

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        return self.apply(ctx)

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        return self.apply(ctx)

    def delete(self, ctx: GcpContext, change: Change) -> None:
        client = ctx.kube(admin=True)
        if client is None:
            return
        api = _api(client, self.kind)
        fn = getattr(api, f"delete_{KINDS[self.kind].plural}")
        try:
            _call(ctx, lambda: fn(*self._args(), _preload_content=False))
        except NotFound:
            return
        self.after_delete(ctx)

    def after_delete(self, ctx: GcpContext) -> None:
        """Wait until the object is really gone (Services keep a finalizer until the LB is released)."""
        retry.until(
            lambda: True if self.get(ctx, admin=True) is None else None,
            timeout_s=self.cfg.serving.lb_timeout_s,
            what=f"{self.kind} {self.obj_name} to be deleted",
            on_wait=lambda s: ctx.report(self.address, f"waiting for {self.kind} {self.obj_name} to go"),
        )


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
    from .config import quantity_value
    from .gke import machine_vcpus

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
    pods = _raw(
        _call(
            ctx,
            lambda: core.list_namespaced_pod(namespace, label_selector=f"app={APP}", _preload_content=False),
        )
    )
    events = _raw(_call(ctx, lambda: core.list_namespaced_event(namespace, _preload_content=False)))
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
) -> list[Resource]:
    ns = cfg.serving.namespace
    out: list[Resource] = []
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
        "endpoint": f"http://{service_ip}:{HTTP_PORT}/v1/models/{cfg.serving.model_name}",
        "grpc_address": f"{service_ip}:{GRPC_PORT}",
    }


def kubeconfig(cfg: Config, endpoint: str, ca_b64: str) -> str:
    """A kubeconfig for kubectl users, authenticating with the gke-gcloud-auth-plugin (no token)."""
    name = f"gke_{cfg.project}_{cfg.cluster.zone}_{cfg.cluster.name}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca_b64}}
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "gke-gcloud-auth-plugin",
                        "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
                        "provideClusterInfo": True,
                        "interactiveMode": "IfAvailable",
                    }
                },
            }
        ],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": cfg.serving.namespace}}
        ],
        "current-context": name,
    }
    return json.dumps(doc, indent=2) + "\n"
