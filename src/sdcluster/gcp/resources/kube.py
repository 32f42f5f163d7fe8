"""Kubernetes objects as resources: one object each, applied with **server-side apply**.

Field manager ``sdcluster``, ``application/apply-patch+yaml``. Plan compares only the fields sdcluster
sets: the live object is projected onto the shape of the desired manifest, so fields set by the
cluster or by other managers elsewhere are not drift, while one of ours changed out of band is (and
apply restores it, taking the field back with ``force``).

The cluster is reached with the endpoint and CA from GetCluster and a bearer token from the
impersonated gke-admin credentials (reads use the user's); TLS is verified against the cluster CA
and no kubeconfig is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ... import retry
from ...config.names import ClusterKey
from ...engine import Change, Resource
from ...errors import NotFound
from ...state import ResourceState, State
from ..context import GcpContext
from ..labels import K8S_MANAGED_BY

if TYPE_CHECKING:
    from ...config import Config

FIELD_MANAGER = "sdcluster"

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
    "ServiceAccount": Kind("CoreV1Api", "namespaced_service_account"),
    "Service": Kind("CoreV1Api", "namespaced_service"),
    "Deployment": Kind("AppsV1Api", "namespaced_deployment"),
    "HorizontalPodAutoscaler": Kind("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
    "Role": Kind("RbacAuthorizationV1Api", "namespaced_role"),
    "RoleBinding": Kind("RbacAuthorizationV1Api", "namespaced_role_binding"),
    "CronJob": Kind("BatchV1Api", "namespaced_cron_job"),
}


def _api(client: Any, kind: str) -> Any:
    from kubernetes import client as k8s

    return getattr(k8s, KINDS[kind].api)(client)


def raw_json(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response.read()
    return json.loads(data) if data else {}


def kube_call(ctx: GcpContext, fn: Callable[[], Any]) -> Any:
    return retry.call(fn, project=ctx.project)


def split_object_id(resource_id: str) -> tuple[str, str]:
    """(cluster key or "", ``Kind/[namespace/]name``) of a Kubernetes object's state id."""
    try:
        key, _ = ClusterKey.parse(resource_id)
    except ValueError:
        return "", resource_id
    return key.path, resource_id[len(key.path) + 1 :] if resource_id.startswith(key.path) else resource_id


class KubeObject(Resource[GcpContext]):
    """One Kubernetes object, applied server-side with field manager ``sdcluster``."""

    # One class rebuilds every kind from its state record (only to delete it: kind, namespace, name).
    state_types = tuple(f"k8s.{kind.lower()}" for kind in KINDS)
    waits: ClassVar[bool] = False  # after_apply waits (rollout, load balancer): checkpoint first

    def __init__(self, cfg: Config, manifest: dict[str, Any], deps: tuple[str, ...]) -> None:
        self.kind = manifest["kind"]
        self.obj_name = manifest["metadata"]["name"]
        self.namespace = manifest["metadata"].get("namespace", "")
        self.type = f"k8s.{self.kind.lower()}"  # type: ignore[misc]
        where = f"{self.namespace}/" if self.namespace else ""
        super().__init__(f"{self.type}.{where}{self.obj_name}", flatten(manifest), deps)
        self.cfg = cfg
        self.manifest = manifest

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> KubeObject:
        _, local = split_object_id(record.id)
        kind, _, rest = local.partition("/")
        namespace, _, name = rest.rpartition("/")
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        return cls(provider.config, {"kind": kind, "metadata": meta}, tuple(record.dependencies))

    @classmethod
    def upgrade_record(cls, record: ResourceState, state: State) -> None:
        """Ids before 0.2 were ``Kind/ns/name``: prefix the cluster the state records."""
        if record.id.startswith("projects/"):
            return
        clusters = [r.id for r in state.resources.values() if r.type == "gke.cluster"]
        if len(clusters) == 1:
            record.id = f"{clusters[0]}/{record.id}"

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        """``projects/P/locations/Z/clusters/C/Kind/[namespace/]name``: the object on its cluster."""
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.cfg.cluster_key}/{self.kind}/{where}{self.obj_name}"

    def owned(self, observed: Mapping[str, Any]) -> bool:
        (key, value), *_ = K8S_MANAGED_BY.items()
        return observed.get(f"metadata.labels.{key}") == value

    def _args(self) -> list[str]:
        return [self.obj_name, self.namespace] if KINDS[self.kind].namespaced else [self.obj_name]

    def get(self, ctx: GcpContext, admin: bool = False) -> dict[str, Any] | None:
        client = ctx.kube(admin=admin)
        if client is None:
            return None
        api = _api(client, self.kind)
        fn = getattr(api, f"read_{KINDS[self.kind].plural}")
        try:
            return raw_json(kube_call(ctx, lambda: fn(*self._args(), _preload_content=False)))
        except NotFound:
            return None

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        live = self.get(ctx)
        if live is None or live.get("metadata", {}).get("deletionTimestamp"):
            return None
        return self.view(live)

    def view(self, live: Mapping[str, Any]) -> dict[str, Any]:
        """Pure: what plan compares of a live object (our fields, flattened) plus ``extra``."""
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
        live = raw_json(
            kube_call(
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
        if self.waits:
            # The object exists from here on: recorded before waiting for it (rollout, load
            # balancer), so a wait that times out or a run that dies leaves it in the state.
            ctx.checkpoint(self.address, self.view(live))
        return self.view(self.after_apply(ctx, live))

    def after_apply(self, ctx: GcpContext, live: dict[str, Any]) -> dict[str, Any]:
        """Wait for whatever makes the object useful (rollout, load balancer); the object as last
        seen (``live``, the apply's answer, when there is nothing to wait for)."""
        return live

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
            kube_call(ctx, lambda: fn(*self._args(), _preload_content=False))
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
