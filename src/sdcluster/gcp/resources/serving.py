"""TensorFlow Serving on the cluster: ConfigMap, ServiceAccount, Deployment, LoadBalancer Service (+
optional HPA), their manifests, and the waits that make them useful (rollout, load balancer, a model
version served). Each object is a ``kube.KubeObject`` resource, applied server-side.

TF Serving runs as the Kubernetes service account ``tf-serving``: on the GKE_METADATA nodes of a
Workload Identity cluster a pod acts as its KSA's principal, which alone is granted
storage.objectViewer on the model bucket (``storage.KsaBucketMember``).

TF Serving 2.11 opens no port until the first model version has loaded (``model_servers/server.cc``
builds ServerCore, which waits for it, before starting the gRPC and REST servers). So apply on a
model path without a version waits for the pods to start, records the Deployment as waiting for a
model and says to run ``sdcluster upload-model``; a startup probe gives a multi-GB load its time.

Destroy deletes the Service and waits until it is gone **before** the cluster goes: GKE does not
delete the load balancer of a Service when the cluster is deleted, and it keeps costing money.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ... import retry
from ...config.quantity import canonical_cpu, quantity_value
from ...engine import Action, AttrDiff, Change, Resource
from ...errors import InvalidRequest, NotFound, PermissionDenied, RolloutStuck, SdclusterError, WaitTimeout
from ...state import ResourceState
from ...tfserving import GRPC_PORT, HTTP_PORT, model_url
from ..context import GcpContext
from ..labels import APP, K8S_MANAGED_BY, POOL_LABEL, SERVING_TAINT
from ..preflight import machine_vcpus
from .gke import pool_taints
from .kube import KubeObject, kube_call, raw_json
from .rollout import (
    Watches,
    ingress_ip,
    pod_ready,
    pods_and_events,
    rollout_progress,
    stuck_hint,
    stuck_reason,
    wait_for_rollout,
    watching,
    with_load_balancer,
)

if TYPE_CHECKING:
    from ...config import Config
    from .model import ModelVersion

CONFIGMAP = "tfserving-configs"
BATCHING_DIR = "/etc/tfserving"
BATCHING_FILE = "batching_parameters.txt"
BATCHING_PARAMETERS = """max_batch_size { value: 4 }
batch_timeout_micros { value: 1000000 }
max_enqueued_batches { value: 16 }
num_batch_threads { value: 2 }
"""
PAUSED = "sdcluster.dev/paused"  # Deployment annotation: paused since when, by what (gcp/lifecycle.py)
AUTOSTOP = "sdcluster.dev/autostop"  # Deployment annotation of earlier versions: autostop's clock
# The autostop's own ConfigMap: its idle clock ("count", "since") and, once it paused the cluster,
# "paused" (the note). Its Role can patch this ConfigMap and the Deployment's scale, not the
# Deployment itself (which would let it change the pod template, and run anything as tf-serving).
AUTOSTOP_STATE = "sdcluster-autostop-state"
# TF Serving's Prometheus metrics, for autostop: a MonitoringConfig text proto (tensorflow/serving
# tensorflow_serving/config/monitoring_config.proto) read from --monitoring_config_file
# (model_servers/server.cc) and served on the REST port at its path (util/prometheus_exporter.cc's
# kPrometheusPath is this default).
METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING_FILE = "monitoring_config.txt"
MONITORING_CONFIG = f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n'
KSA = "tf-serving"  # the Kubernetes service account TF Serving runs as: its principal reads the model
# On Spot (and preemptible) preemption GKE gives pods 30 s: the first 15 s to ordinary pods, the rest
# to system pods (cloud.google.com/kubernetes-engine/docs/concepts/spot-vms, graceful shutdown). A
# longer grace period is cut at 15 s anyway; stay within what is honoured.
TERMINATION_GRACE_S = 15
# TF Serving's ports open only once the model has loaded; a multi-GB SavedModel read from Cloud
# Storage and restored takes minutes. The startup probe allows 30 minutes (1 s x 1800) before the
# kubelet restarts the container; the liveness probe takes over once it has passed. The shortest
# period Kubernetes allows (1 s) with a high failureThreshold, as KEP-950 (startupProbe) intends: the
# pod is ready within a second of the load (the kubelet runs the readiness probe as soon as the
# startup probe passes), not up to 10 s after it. A TCP connect a second costs TF Serving nothing.
STARTUP_PERIOD_S = 1
LOAD_RETRY_S, LOAD_RETRIES = 1, 300  # TF Serving's defaults: 60 s, 5 times (see deployment_manifest)
STARTUP_FAILURES = 1800
# What GKE runs on every node, by CPU request (observed on GKE 1.29 nodes, kubectl describe node:
# kube-proxy 100m, fluentbit-gke 105m, ip-masq-agent 10m, gke-metadata-server 100m on GKE_METADATA
# nodes; sdcluster's pool runs the metadata server).
SYSTEM_PODS_CPU = Decimal("0.315")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


# --------------------------------------------------------------------------------------------------
# Desired objects (pure)


def labels() -> dict[str, str]:
    return {"app": APP, **K8S_MANAGED_BY}


def configmap_manifest(cfg: Config) -> dict[str, Any]:
    data = {"MODEL_NAME": cfg.serving.model_name, "MODEL_PATH": cfg.model_path}
    if cfg.serving.batching:
        data[BATCHING_FILE] = BATCHING_PARAMETERS
    if cfg.serving.idle_stop_minutes:
        data[MONITORING_FILE] = MONITORING_CONFIG
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
        # A version's directory appears with its first object: TF Serving may try it while it is
        # being published (saved_model.pb last) and then waits a retry interval, 60 s by default.
        # Retry every second instead, 300 times: the same 5 minutes before it gives up on a
        # version, and the version loads within a second of its saved_model.pb (a failed attempt
        # is one missing-file read).
        f"--load_retry_interval_micros={LOAD_RETRY_S * 1_000_000}",
        f"--max_num_load_retries={LOAD_RETRIES}",
    ]
    files = []
    if s.batching:
        args += ["--enable_batching", f"--batching_parameters_file={BATCHING_DIR}/{BATCHING_FILE}"]
        files.append(BATCHING_FILE)
    if s.idle_stop_minutes:
        args.append(f"--monitoring_config_file={BATCHING_DIR}/{MONITORING_FILE}")
        files.append(MONITORING_FILE)
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
        # Nothing listens before the model has loaded: liveness starts once the startup probe passed.
        "startupProbe": {
            "tcpSocket": {"port": GRPC_PORT},
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": STARTUP_FAILURES,
        },
        "livenessProbe": {"tcpSocket": {"port": GRPC_PORT}, "periodSeconds": 20, "failureThreshold": 3},
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": KSA,
        "containers": [container],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        # Our pool carries this node label whatever its GKE name (a replaced pool gets a suffix).
        "nodeSelector": {POOL_LABEL: cfg.cluster.node_pool},
    }
    if files:
        container["volumeMounts"] = [
            {"name": "tfserving-configs", "mountPath": BATCHING_DIR, "readOnly": True}
        ]
        pod_spec["volumes"] = [
            {
                "name": "tfserving-configs",
                "configMap": {"name": CONFIGMAP, "items": [{"key": f, "path": f} for f in files]},
            }
        ]
    tolerations = [GPU_TOLERATION] if gpus else []
    if pool_taints(cfg):
        tolerations.append({"key": SERVING_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod_spec["tolerations"] = tolerations
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


def service_account_manifest(cfg: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": KSA, "namespace": cfg.serving.namespace, "labels": labels()},
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
    """TF Serving's Deployment. Besides our fields, its ``rollout`` is managed: a template the cluster
    has but has not rolled out (a failed update) is a change the next plan shows and apply retries.
    ``model`` says which version the bucket offers; with ``serving.model_dir`` (``model``, the plan's
    ModelVersion) a new version to publish is a change too: apply waits until TF Serving serves it,
    as ``upload-model`` does, also when the Deployment itself is unchanged."""

    waits = True
    _model = "unknown"
    _versions: Future[list[int] | None] | None = None  # the bucket's listing, under way during apply

    def __init__(
        self, cfg: Config, manifest: dict[str, Any], deps: tuple[str, ...], model: ModelVersion | None = None
    ) -> None:
        super().__init__(cfg, manifest, deps)
        self.model = model
        self._paused = False

    def get(self, ctx: GcpContext, admin: bool = False) -> dict[str, Any] | None:
        """The live Deployment; one the autostop scaled to zero carries the autostop's note as its
        paused annotation (the autostop records it in its own ConfigMap, as it may not annotate the
        Deployment), so every reader sees one kind of pause."""
        live = super().get(ctx, admin)
        if live is None or not self.cfg.serving.idle_stop_minutes or paused_note(live):
            return live
        if int((live.get("spec") or {}).get("replicas", 0) or 0) != 0:
            return live
        note = str(autostop_state(ctx, self.cfg, admin).get("paused") or "")
        if note:
            live.setdefault("metadata", {}).setdefault("annotations", {})[PAUSED] = note
        return live

    def diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        change = self._template_diff(desired, observed)
        served = str((observed or {}).get("model") or "")
        planned = self.model.planned_version() if self.model is not None else None
        want = f"version {planned}"
        if observed is None or planned is None or served in (want, "unknown"):
            return change
        model = AttrDiff("model", served, want)
        if change.action is not Action.NOOP:
            change.diffs.append(model)
            return change
        return self.change(
            Action.UPDATE,
            f"TF Serving is to serve model {want} (the bucket's newest is {served})",
            before=dict(observed),
            after={**observed, "model": want},
            diffs=[model],
        )

    def _template_diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        if observed is not None and "rollout" in observed:  # read() saw the live status
            desired = {**desired, "rollout": "complete"}
        paused = str((observed or {}).get("paused") or "")
        if not paused or observed is None:
            return super().diff(desired, observed)
        # Paused (sdcluster pause, or autostop): zero replicas is the pause, not drift; an apply
        # of other changes keeps it paused.
        change = super().diff({**desired, "spec.replicas": observed.get("spec.replicas")}, observed)
        note = f"paused since {paused}; sdcluster resume brings back {self.cfg.serving.replicas} replica(s)"
        if change.action is Action.NOOP:
            change.reason = f"Deployment {self.obj_name} is {note}"
        else:
            change.warnings.append(f"the cluster stays paused (since {paused}); resume: sdcluster resume")
        return change

    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        paused = str((observed or {}).get("paused") or "")
        if paused:
            return [
                f"the cluster is paused since {paused}: no serving pods, its serving nodes are "
                "scaled to zero; sdcluster resume (or sdcluster generate) brings them back"
            ]
        return capacity_warnings(self.cfg)

    def extra(self, live: Mapping[str, Any]) -> dict[str, Any]:
        status = live.get("status", {}) or {}
        return {
            "ready": f"{status.get('readyReplicas', 0) or 0}/{live.get('spec', {}).get('replicas', 0)}",
            "paused": paused_note(live),
        }

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        # The bucket is listed while the cluster is asked: neither waits for the other's answer.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-versions") as pool:
            versions = pool.submit(model_versions, ctx, self.cfg)
            live = self.get(ctx)
            if live is None or live.get("metadata", {}).get("deletionTimestamp"):
                return None
            model = model_word(versions.result())
        return {**self.view(live), "model": model, "rollout": rollout_word(live, model)}

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        return self._apply(ctx, {})  # the plan saw no Deployment: none is paused

    def apply(self, ctx: GcpContext) -> dict[str, Any]:
        return self._apply(ctx, self.get(ctx, admin=True) or {})

    def _apply(self, ctx: GcpContext, live: Mapping[str, Any]) -> dict[str, Any]:
        self._paused = bool(paused_note(live))
        if self._paused:  # apply keeps a paused cluster paused
            spec = {**self.manifest["spec"], "replicas": 0}
            self.manifest = {**self.manifest, "spec": spec}
            ctx.report(self.address, f"the cluster is paused since {paused_note(live)}: kept paused")
        # The bucket is listed while the Deployment is applied (after_apply needs its versions).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-versions") as pool:
            self._versions = pool.submit(model_versions, ctx, self.cfg)
            try:
                attrs = super().apply(ctx)
            finally:
                self._versions = None
        return {**attrs, "model": self._model, "rollout": "complete"}

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        attrs = self.apply(ctx)
        if any(d.path == "model" for d in change.diffs) and not self._paused:
            self._wait_for_newest(ctx)
        return attrs

    def _wait_for_newest(self, ctx: GcpContext) -> None:
        """Until TF Serving serves the newest version (the one this apply published): the rollout,
        if any, was satisfied by whichever version the pods loaded first."""
        versions = model_versions(ctx, self.cfg)
        service = Service(self.cfg, service_manifest(self.cfg), ())
        ip = ingress_ip(service.get(ctx, admin=True) or {})
        if versions and ip:
            url = model_url(ip, self.cfg.serving.model_name)
            wait_for_version(ctx, url, max(versions), lambda m: ctx.report(self.address, m))

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> dict[str, Any]:
        listing = self._versions
        versions = listing.result() if listing is not None else model_versions(ctx, self.cfg)
        self._model = model_word(versions)
        generation = int(live.get("metadata", {}).get("generation", 0))
        if versions == []:
            # TF Serving will open no port until a version exists: wait for the pods to start only.
            live = wait_for_rollout(ctx, self, generation, until="started")
            ctx.report(self.address, f"waiting for a model: {waiting_note(self.cfg)}")
            return live
        return wait_for_rollout(ctx, self, generation)


def autostop_state(ctx: GcpContext, cfg: Config, admin: bool = False) -> dict[str, Any]:
    """The data of the autostop's ConfigMap ({} while it does not exist)."""
    from kubernetes import client as k8s

    api = ctx.kube(admin=admin)
    if api is None:
        return {}
    core = k8s.CoreV1Api(api)
    try:
        cm = raw_json(
            kube_call(
                ctx,
                lambda: core.read_namespaced_config_map(
                    AUTOSTOP_STATE, cfg.serving.namespace, _preload_content=False
                ),
            )
        )
    except NotFound:
        return {}
    return dict(cm.get("data") or {})


def paused_note(live: Mapping[str, Any]) -> str:
    """The Deployment's paused annotation ("" while it serves)."""
    return str(((live.get("metadata") or {}).get("annotations") or {}).get(PAUSED) or "")


def model_versions(ctx: GcpContext, cfg: Config) -> list[int] | None:
    """The numeric version directories under the model path (what TF Serving would aspire), or None
    when the bucket cannot be read with the user's credentials."""
    from ..upload import split_model_path, versions_under

    bucket, base = split_model_path(cfg.model_path)
    try:
        return versions_under(ctx.factory.storage(cfg.project), bucket, base, cfg.project)
    except (NotFound, PermissionDenied):
        return None


def rollout_word(live: Mapping[str, Any], model: str) -> str:
    """``complete``, or what the rollout still waits for (``failed: ...`` when it cannot finish).

    Without a model version TF Serving cannot become ready: the rollout is complete once the new
    pods exist (apply waits for them to start).
    """
    try:
        waiting = rollout_progress(live)
    except RolloutStuck as e:
        return f"failed: {e}"
    if waiting is None:
        return "complete"
    status = live.get("status") or {}
    if model == "none" and int(status.get("updatedReplicas", 0) or 0) >= int(
        (live.get("spec") or {}).get("replicas", 1)
    ):
        return "complete"
    return waiting


def model_word(versions: list[int] | None) -> str:
    """The Deployment's ``model`` attribute: ``version 3``, ``none`` or ``unknown``."""
    if versions is None:
        return "unknown"
    return f"version {max(versions)}" if versions else "none"


def waiting_note(cfg: Config) -> str:
    return (
        f"no model version under {cfg.model_path}/ yet, so TF Serving does not listen; "
        "upload one: sdcluster upload-model ./stable_diffusion_model"
    )


class Service(KubeObject):
    waits = True

    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        if self.cfg.serving.allowed_source_ranges:
            return []
        return [
            f"the endpoint (Service {self.obj_name}, type LoadBalancer) will be open to the whole internet; "
            'restrict it with serving.allowed_source_ranges = ["203.0.113.0/24"]'
        ]

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> dict[str, Any]:
        return with_load_balancer(ctx, self)

    def extra(self, live: Mapping[str, Any]) -> dict[str, Any]:
        return {"lb_ip": ingress_ip(live) or ""}


def node_cpu_for_pods(vcpus: int) -> Decimal:
    """CPU a GKE node leaves to our pods: capacity minus GKE's reservation (6% of the first core, 1%
    of the second, 0.5% of the next two, 0.25% above: cloud.google.com/kubernetes-engine/docs/
    concepts/plan-node-sizes) minus the system pods GKE runs on every node (SYSTEM_PODS_CPU).

    Example: ``node_cpu_for_pods(4) == Decimal("3.605")`` (3920m allocatable - 315m).
    """
    reserved, rest = Decimal(0), Decimal(vcpus)
    for size, share in ((1, "0.06"), (1, "0.01"), (2, "0.005"), (10**6, "0.0025")):
        part = min(rest, Decimal(size))
        reserved += part * Decimal(share)
        rest -= part
    return Decimal(vcpus) - reserved - SYSTEM_PODS_CPU


def capacity_warnings(cfg: Config) -> list[str]:
    """Can the pods fit on the pool at the configured requests, next to GKE's own pods?"""
    vcpus = machine_vcpus(cfg.cluster.machine_type)
    if not vcpus:
        return []
    room = node_cpu_for_pods(vcpus)
    request = quantity_value(cfg.serving.cpu)
    if request > room:
        return [
            f"serving.cpu = {cfg.serving.cpu} exceeds what a {cfg.cluster.machine_type} node leaves to pods "
            f"(~{room} CPU after GKE's reservation and the system pods on every node): the pods will never "
            "be scheduled"
        ]
    per_node = int(room // request) if request else 0
    wanted = cfg.serving.max_replicas if cfg.serving.autoscaling else cfg.serving.replicas
    fit = per_node * cfg.cluster.max_nodes
    if wanted > fit:
        return [
            f"{wanted} replicas x {cfg.serving.cpu} CPU cannot fit on {cfg.cluster.max_nodes} x "
            f"{cfg.cluster.machine_type} ({per_node} per node next to GKE's system pods): at most {fit} will run"
        ]
    return []


# --------------------------------------------------------------------------------------------------
# Assembly


def serving_resources(
    cfg: Config,
    cluster: str,
    pool: str,
    model_deps: tuple[str, ...],
    model: ModelVersion | None = None,
) -> list[Resource[GcpContext]]:
    """The Kubernetes objects. Each needs the cluster's API only; the Deployment also the node pool
    its pods run on, the objects it refers to, and the model (deps)."""
    ns = cfg.serving.namespace
    out: list[Resource[GcpContext]] = []
    base: tuple[str, ...] = (cluster,)
    if ns != "default":
        namespace = KubeObject(cfg, namespace_manifest(cfg), base)
        out.append(namespace)
        base = (*base, namespace.address)
    configmap = KubeObject(cfg, configmap_manifest(cfg), base)
    account = KubeObject(cfg, service_account_manifest(cfg), base)
    deps = (*base, pool, *model_deps, configmap.address, account.address)
    deployment = Deployment(cfg, deployment_manifest(cfg), deps, model)
    # The Service does not wait for the rollout: its load balancer is provisioned meanwhile.
    service = Service(cfg, service_manifest(cfg), base)
    out += [configmap, account, deployment, service]
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


# --------------------------------------------------------------------------------------------------
# A model version, served


def wait_for_version(
    ctx: GcpContext, url: str, version: int, say: Callable[[str], None], timeout_s: float | None = None
) -> str:
    """Until TF Serving behind ``url`` (the ``endpoint`` output) reports ``version`` AVAILABLE;
    returns what it serves ("version 2 of stable-diffusion at http://...").

    Progress goes to ``say``: the version's state while TF Serving loads it, and while nothing
    answers (no pod is ready: TF Serving opens its ports only after its first load) the serving pod's
    last log line, which says why (e.g. a 403 reading the bucket). A version that ends in END with an
    error raises InvalidRequest with TF Serving's error; pods that cannot run raise RolloutStuck.
    """
    import requests

    cfg = ctx.config
    deployment = Deployment(cfg, deployment_manifest(cfg), ())
    last: list[str] = [""]
    first_stuck: dict[str, float] = {}
    grace = min(60.0, cfg.serving.rollout_timeout_s / 10)

    def tell(message: str) -> None:
        if message != last[0]:
            last[0] = message
            say(message)

    def probe(pods_changed: Watches) -> str | None:
        try:
            r = requests.get(url, timeout=5)
            states = r.json().get("model_version_status", []) if r.status_code == 200 else []
        except (requests.RequestException, ValueError):
            states = None
        if states is not None:
            mine = next((s for s in states if str(s.get("version")) == str(version)), None)
            if mine is not None and mine.get("state") == "AVAILABLE":
                return f"version {version} of {cfg.serving.model_name} at {url}"
            if mine is not None and mine.get("state") == "END":
                status = mine.get("status") or {}
                raise InvalidRequest(
                    f"TF Serving could not load version {version}: {status.get('error_code', '')}: "
                    f"{status.get('error_message', '')}",
                    hint="check the SavedModel (saved_model.pb, variables/) and publish it again as a new version",
                )
            pods_changed.relied = False  # TF Serving answers: a version's state is no pod's change
            state = mine.get("state", "") if mine else ""
            tell(
                f"TF Serving: version {version} {state or 'not seen yet (it polls the bucket every second)'}"
            )
            return None
        pods, events = pods_and_events(ctx, deployment, deployment.get(ctx) or {})
        # Nothing answers while no pod is ready (the Service routes to ready pods only): the pod
        # watch sees one become ready. A ready pod that does not answer yet is polled for.
        pods_changed.relied = not any(pod_ready(p) for p in pods)
        reason = stuck_reason(pods, events)
        if reason:
            since = first_stuck.setdefault(reason, time.monotonic())
            if time.monotonic() - since >= grace:
                raise RolloutStuck(f"TF Serving cannot run: {reason}", hint=stuck_hint(reason))
        tell(f"no TF Serving pod is ready yet{_last_log_line(ctx, pods)}")
        return None

    try:
        with watching(ctx, deployment, "pods") as pods_changed:
            return retry.until(
                lambda: probe(pods_changed),
                timeout_s=timeout_s if timeout_s is not None else cfg.serving.rollout_timeout_s,
                what=f"TF Serving to serve version {version}",
                max_interval_s=5.0,
                wake=pods_changed,
            )
    except WaitTimeout as e:
        raise WaitTimeout(
            f"{e} (last seen: {last[0]})",
            hint=f"see the pods' logs: kubectl logs deploy/{APP} (sdcluster kubeconfig)",
        ) from e


def _last_log_line(ctx: GcpContext, pods: list[dict[str, Any]]) -> str:
    """``: <pod>: <its last log line>`` of the first pod that is not ready ("" if none or unreadable)."""
    from kubernetes import client as k8s

    pod = next((p for p in pods if not pod_ready(p)), None)
    if pod is None:
        return ""
    name = pod["metadata"]["name"]
    core = k8s.CoreV1Api(ctx.kube())
    try:
        text = kube_call(
            ctx, lambda: core.read_namespaced_pod_log(name, pod["metadata"]["namespace"], tail_lines=1)
        )
    except SdclusterError:
        return ""
    line = str(text or "").strip().split("] ", 1)[-1]  # without glog's time and source prefix
    return f": {name}: {line}" if line else ""
