"""The zonal GKE cluster and its autoscaled Spot/preemptible node pool.

The cluster is created in **one** CreateCluster call that already contains the node pool (no default
pool created and then deleted: the tutorial's ``remove_default_node_pool`` costs a second long
operation and briefly consumes disk quota). Mutations use the impersonated ``gke-admin``
credentials; reads use the user's. Operations are polled with backoff until DONE.

Changes: autoscaling limits are updated in place; immutable node settings replace the **node pool**
(a new pool is created, then the old one deleted), never the cluster; a change of zone replaces the
cluster, and the plan says so loudly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ... import retry
from ...config.names import ClusterKey
from ...config.rules import ZONE_RE
from ...engine import Action, Change, ReplaceOrder, Resource
from ...errors import (
    AlreadyExists,
    ApiDisabled,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SdclusterError,
    WaitTimeout,
    from_rpc_status,
    stockout,
)
from ...state import ResourceState
from .. import preflight
from ..context import GcpContext
from ..labels import MANAGED_BY, POOL_LABEL, SERVING_TAINT, marked

if TYPE_CHECKING:
    from ...config import Config

T = TypeVar("T")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
OPERATION_TIMEOUT_S = 3600.0
# GKE's own cluster-wide pods (kube-dns, metrics-server, konnectivity...) need a node: "at least one
# node must always be available in the cluster to run system Pods" (kubernetes-engine/docs/concepts/
# cluster-autoscaler, minimum and maximum node pool size), and a node running kube-system pods
# without a PodDisruptionBudget is not removed by the autoscaler (kubernetes/autoscaler
# cluster-autoscaler/FAQ.md, "What types of pods can prevent CA from removing a node?"). A 1-node
# pool holds them, so the serving pool can reach zero nodes while paused. GKE schedules them on any
# node whose taints they tolerate ("a node taint tells GKE to avoid scheduling workloads without a
# corresponding toleration (such as GKE-managed workloads)", kubernetes-engine/docs/how-to/
# isolate-workloads-dedicated-nodes): the serving pool carries SERVING_TAINT, the Deployment its toleration.
SYSTEM_POOL = "sd-system-pool"
SYSTEM_DISK_GB = 30
SYSTEM_DISK_TYPE = "pd-standard"

# --------------------------------------------------------------------------------------------------
# Specs


def system_config(cfg: Config) -> Config:
    """``cfg`` as the system pool sees it: one node of ``cluster.system_machine_type`` (Spot when the
    serving pool is), a small standard disk, no GPU, in the same cluster."""
    c = cfg.cluster
    update = {
        "node_pool": SYSTEM_POOL,
        "machine_type": c.system_machine_type,
        "min_nodes": 1,
        "initial_nodes": 1,
        "max_nodes": 1,
        "disk_size_gb": SYSTEM_DISK_GB,
        "disk_type": SYSTEM_DISK_TYPE,
        "accelerator_type": None,
        "accelerator_count": 0,
    }
    return cfg.model_copy(update={"cluster": c.model_copy(update=update)})


# NodeTaint.Effect's names in the GKE API, and the Kubernetes names the nodes show.
_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}


def taint_text(key: str, value: str, effect: str) -> str:
    """``sdcluster.dev/serving=true:NoSchedule``: a taint as ``kubectl taint`` and gcloud write it."""
    return f"{key}={value}:{_EFFECTS.get(effect, effect)}"


def pool_taints(cfg: Config) -> list[str]:
    """The serving pool's taints: SERVING_TAINT while a system pool holds GKE's own pods, else none
    (GKE's pods would have nowhere to run)."""
    c = cfg.cluster
    if not c.system_pool or c.node_pool == SYSTEM_POOL:
        return []
    return [taint_text(**SERVING_TAINT)]


def node_pool_attributes(cfg: Config) -> dict[str, Any]:
    """What sdcluster manages on the node pool, as plain attributes (plan/diff/state)."""
    c = cfg.cluster
    return {
        "machine_type": c.machine_type,
        "spot": c.spot,
        "preemptible": c.preemptible,
        "disk_size_gb": c.disk_size_gb,
        "disk_type": c.disk_type,
        "service_account": cfg.node_email,
        "accelerator_type": c.accelerator_type or "",
        "accelerator_count": c.accelerator_count if c.accelerator_type else 0,
        "autoscaling": True,
        "min_nodes": c.min_nodes,
        "max_nodes": c.max_nodes,
        "taints": pool_taints(cfg),
    }


def taint_protos(taints: list[str]) -> list[Any]:
    """``["k=v:NoSchedule"]`` as the API's NodeTaint messages."""
    from google.cloud import container_v1 as gke

    effects = {v: k for k, v in _EFFECTS.items()}
    out = []
    for t in taints:
        kv, _, effect = t.rpartition(":")
        key, _, value = kv.partition("=")
        out.append(gke.NodeTaint(key=key, value=value, effect=getattr(gke.NodeTaint.Effect, effects[effect])))
    return out


def node_pool_proto(cfg: Config, gke_name: str) -> Any:
    from google.cloud import container_v1 as gke

    a = node_pool_attributes(cfg)
    accelerators = []
    if a["accelerator_type"]:
        accelerators.append(
            gke.AcceleratorConfig(
                accelerator_type=a["accelerator_type"],
                accelerator_count=a["accelerator_count"],
                gpu_driver_installation_config=gke.GPUDriverInstallationConfig(
                    gpu_driver_version=gke.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT
                ),
            )
        )
    return gke.NodePool(
        name=gke_name,
        initial_node_count=cfg.cluster.initial_nodes,
        autoscaling=gke.NodePoolAutoscaling(
            enabled=True, min_node_count=a["min_nodes"], max_node_count=a["max_nodes"]
        ),
        management=gke.NodeManagement(auto_repair=True, auto_upgrade=True),
        config=gke.NodeConfig(
            machine_type=a["machine_type"],
            disk_size_gb=a["disk_size_gb"],
            disk_type=a["disk_type"],
            spot=a["spot"],
            preemptible=a["preemptible"],
            service_account=a["service_account"],
            oauth_scopes=[CLOUD_PLATFORM_SCOPE],
            labels={**MANAGED_BY, POOL_LABEL: cfg.cluster.node_pool},
            resource_labels=dict(MANAGED_BY),
            accelerators=accelerators,
            taints=taint_protos(a["taints"]),
            workload_metadata_config=gke.WorkloadMetadataConfig(
                mode=gke.WorkloadMetadataConfig.Mode.GKE_METADATA
            ),
        ),
    )


def pool_attributes_of(pool: Any) -> dict[str, Any]:
    cfg = pool.config
    acc = cfg.accelerators[0] if cfg.accelerators else None
    return {
        "machine_type": cfg.machine_type,
        "spot": cfg.spot,
        "preemptible": cfg.preemptible,
        "disk_size_gb": cfg.disk_size_gb,
        "disk_type": cfg.disk_type,
        "service_account": cfg.service_account,
        "accelerator_type": acc.accelerator_type if acc else "",
        "accelerator_count": acc.accelerator_count if acc else 0,
        "autoscaling": bool(pool.autoscaling.enabled),
        "min_nodes": pool.autoscaling.min_node_count,
        "max_nodes": pool.autoscaling.max_node_count,
        "taints": [taint_text(t.key, t.value, t.effect.name) for t in cfg.taints],
        "name": pool.name,
        "status": pool.status.name,
        "initial_nodes": pool.initial_node_count,
        "labels": dict(cfg.labels),
    }


# --------------------------------------------------------------------------------------------------
# Operations


def wait_for_operation(ctx: GcpContext, op: Any, location: str, address: str, what: str) -> Any:
    """Poll a GKE Operation until DONE, reporting progress; its error becomes an sdcluster error."""
    from google.cloud import container_v1 as gke

    client = ctx.factory.cluster_manager(ctx.admin_credentials())
    name = f"projects/{ctx.project}/locations/{location}/operations/{op.name}"

    def probe() -> Any:
        current = retry.call(lambda: client.get_operation(name=name), project=ctx.project)
        if current.status == gke.Operation.Status.DONE:
            return current
        ctx.report(address, f"{what} ({current.status.name.lower()})")
        return None

    done = retry.until(
        probe,
        timeout_s=OPERATION_TIMEOUT_S,
        what=f"GKE operation {op.name} ({what})",
        max_interval_s=10.0,
    )
    if done.error.code or done.error.message:
        raise from_rpc_status(done.error.code, done.error.message, project=ctx.project, context=what)
    if done.status_message:
        raise from_rpc_status(2, done.status_message, project=ctx.project, context=what)
    return done


def wait_for_cluster_idle(ctx: GcpContext, location: str, cluster: str, address: str) -> None:
    """GKE allows one operation at a time per cluster: wait for those still running."""
    from google.cloud import container_v1 as gke

    client = ctx.factory.cluster_manager(ctx.admin_credentials())
    parent = f"projects/{ctx.project}/locations/{location}"
    ops = retry.call(lambda: client.list_operations(parent=parent), project=ctx.project).operations
    for op in ops:
        if op.status != gke.Operation.Status.DONE and _target_cluster(op.target_link) == cluster:
            wait_for_operation(ctx, op, location, address, f"waiting for running operation {op.name}")


def _target_cluster(link: str) -> str | None:
    try:
        return ClusterKey.parse(link)[0].name
    except ValueError:
        return None


def mutate(ctx: GcpContext, call: Callable[[], T], *, location: str, cluster: str, address: str) -> T:
    """Run a mutating GKE call; on "another operation is in progress" wait for it and try again.

    Right after the bindings, IAM may not yet honour actAs on the node service account, or the
    node service account may not be visible yet: retried with backoff within the propagation
    deadline, never a fixed sleep.
    """

    def attempt() -> T | None:
        try:
            return retry.call(call, project=ctx.project)
        except Conflict:
            wait_for_cluster_idle(ctx, location, cluster, address)
            return None

    def act_as(e: Exception) -> bool:
        text = str(e)
        return "does not have access to service account" in text or (
            "does not exist" in text and "ervice account" in text
        )

    def probe() -> T | None:
        try:
            return attempt()
        except (PermissionDenied, InvalidRequest) as e:
            # actAs / a new node account: IAM may simply not have caught up. Any other denial is
            # retried only while bindings this run made may still be propagating.
            if not (act_as(e) or (isinstance(e, PermissionDenied) and ctx.iam_propagating())):
                raise
            ctx.report(address, "waiting for IAM propagation")
            raise _Propagating(str(e), hint=e.hint) from e

    cfg = ctx.config
    try:
        return retry.until(
            probe,
            timeout_s=cfg.iam.propagation_timeout_s,
            what="GKE to accept the request",
            retry_on=(_Propagating,),
        )
    except WaitTimeout as e:
        if e.last_error is not None and not act_as(e.last_error):
            raise PermissionDenied(
                f"serviceAccount:{cfg.admin_email} was still denied after waiting "
                f"{cfg.iam.propagation_timeout_s:g}s for IAM propagation: {e.last_error}",
                hint=e.last_error.hint,
            ) from e
        raise PermissionDenied(
            f"serviceAccount:{cfg.admin_email} may not act as the node service account {cfg.node_email} "
            f"(permission iam.serviceAccounts.actAs) after waiting {cfg.iam.propagation_timeout_s:g}s for IAM; "
            f"GKE said: {e.last_error}",
            hint=(
                f"grant roles/iam.serviceAccountUser on {cfg.node_email} to serviceAccount:{cfg.admin_email} "
                "(sdcluster apply does this); a fresh grant can take up to 7 minutes (iam.propagation_timeout_s)"
            ),
        ) from e


class _Propagating(PermissionDenied):
    pass


# --------------------------------------------------------------------------------------------------
# Resources


_TRANSITIONAL = ("PROVISIONING", "RECONCILING", "STOPPING")


class Cluster(Resource[GcpContext]):
    type = "gke.cluster"
    replace_on = frozenset({"location", "network", "subnetwork"})
    # node_pool: the pool created with the cluster, shown in the plan (its settings are the pool's own
    # resource, gke.node_pool).
    informative = frozenset({"status", "endpoint", "current_node_count", "node_pool"})

    def __init__(self, cfg: Config, deps: tuple[str, ...]) -> None:
        desired = {
            "location": cfg.cluster.zone,
            "workload_pool": f"{cfg.project}.svc.id.goog",
            "labels": cluster_labels(cfg),
            "node_pool": cfg.cluster.node_pool,
            "network": cfg.cluster.network,
        }
        if cfg.cluster.subnetwork:
            desired["subnetwork"] = cfg.cluster.subnetwork
        super().__init__(f"{self.type}.{cfg.cluster.name}", desired, deps)
        self.cfg = cfg
        self.cluster_name = cfg.cluster.name

    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        """A cluster to create needs its network: a project without it fails here, not in GKE."""
        if observed is not None:
            return []
        return preflight.plan_warnings(preflight.network_findings(ctx.factory, self.cfg))

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> Cluster | None:
        """The recorded cluster, wherever it is (a zone change leaves the old one to delete)."""
        key, _ = ClusterKey.parse(record.id)
        return cls(_moved(provider.config, key), tuple(record.dependencies))

    def _key(self, location: str) -> str:
        return ClusterKey(self.cfg.project, location, self.cluster_name).path

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return self._key(str(attributes.get("location", self.cfg.cluster.zone)))

    def _get(self, ctx: GcpContext, location: str) -> Any | None:
        client = ctx.factory.cluster_manager()
        try:
            return retry.call(lambda: client.get_cluster(name=self._key(location)), project=self.cfg.project)
        except NotFound:
            return None

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        location = str((prior.attributes.get("location") if prior else None) or self.cfg.cluster.zone)
        cluster = self._get(ctx, location)
        if cluster is None and location != self.cfg.cluster.zone:
            location = self.cfg.cluster.zone
            cluster = self._get(ctx, location)
        if cluster is not None and cluster.status.name in _TRANSITIONAL:
            cluster = self._settle(ctx, location)
        if cluster is None:
            return None
        return cluster_attributes(cluster)

    def _settle(self, ctx: GcpContext, location: str) -> Any | None:
        """Wait out an operation in flight (e.g. one left by an interrupted run): reading a cluster
        that is still provisioning or stopping would plan the wrong change."""

        def probe() -> tuple[Any | None] | None:
            cluster = self._get(ctx, location)
            if cluster is not None and cluster.status.name in _TRANSITIONAL:
                ctx.report(
                    self.address, f"cluster is {cluster.status.name.lower()}; waiting for it to settle"
                )
                return None
            return (cluster,)

        settled = retry.until(
            probe,
            timeout_s=OPERATION_TIMEOUT_S,
            what=f"cluster {self.cluster_name} to settle",
            max_interval_s=10.0,
        )
        return settled[0]

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"cluster {self.cluster_name} in {observed.get('location')} is {str(observed.get('status', '')).lower()}"

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return marked(observed.get("labels"))

    def diff(self, desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> Change:
        if observed is not None and observed.get("status") == "ERROR":
            return self.change(
                Action.REPLACE,
                f"cluster {self.cluster_name} is in ERROR state and must be created again",
                before=dict(observed),
                after={**observed, **desired},
                warnings=[
                    f"the cluster {self.cluster_name} is broken (ERROR) and will be deleted and created again"
                ],
            )
        change = super().diff(desired, observed)
        if change.action is Action.REPLACE:
            change.warnings.append(
                f"the cluster {self.cluster_name} will be DELETED and created again in {desired['location']} "
                "(everything running on it goes away)"
            )
        return change

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        from google.cloud import container_v1 as gke

        cfg = self.cfg
        admin = ctx.admin_credentials(self.address)
        client = ctx.factory.cluster_manager(admin)
        cluster = gke.Cluster(
            name=self.cluster_name,
            description="Stable Diffusion serving cluster (managed by sdcluster)",
            node_pools=[
                node_pool_proto(cfg, cfg.cluster.node_pool),
                *([node_pool_proto(system_config(cfg), SYSTEM_POOL)] if cfg.cluster.system_pool else []),
            ],
            workload_identity_config=gke.WorkloadIdentityConfig(workload_pool=f"{cfg.project}.svc.id.goog"),
            resource_labels=cluster_labels(cfg),
            network=cfg.cluster.network,
            subnetwork=cfg.cluster.subnetwork or "",
        )
        request = gke.CreateClusterRequest(
            parent=f"projects/{cfg.project}/locations/{cfg.cluster.zone}", cluster=cluster
        )
        try:
            op = mutate(
                ctx,
                lambda: client.create_cluster(request=request),
                location=cfg.cluster.zone,
                cluster=self.cluster_name,
                address=self.address,
            )
        except AlreadyExists:
            op = None  # an earlier, interrupted run created it (marked)? adopt it once it is up
            existing = self._get(ctx, cfg.cluster.zone)
            if existing is not None and not marked(existing.resource_labels):
                raise AlreadyExists(
                    f"cluster {self.cluster_name} already exists in {cfg.cluster.zone} and was not made by sdcluster",
                    hint=f"to adopt it: sdcluster import {self.address} {self._key(cfg.cluster.zone)}",
                ) from None
        ctx.forget_kube(self._key(cfg.cluster.zone))
        # The cluster exists from now on, whatever happens to its operation (a zone out of Spot
        # capacity leaves it in ERROR, still billing): the state records it, so destroy deletes it.
        ctx.checkpoint(self.address, {**self.desired(), "status": "PROVISIONING", "endpoint": ""})
        try:
            if op is not None:
                wait_for_operation(ctx, op, cfg.cluster.zone, self.address, "creating the cluster")
            else:
                wait_for_cluster_idle(ctx, cfg.cluster.zone, self.cluster_name, self.address)
        except SdclusterError as e:
            if stockout(str(e)):
                raise _stockout_error(ctx, cfg, e) from e
            raise
        got = self._get(ctx, cfg.cluster.zone)
        if got is None:
            raise NotFound(f"cluster {self.cluster_name} vanished right after its creation")
        ctx.cluster_made(self._key(cfg.cluster.zone), got)
        return cluster_attributes(got)

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        changed = {d.path for d in change.diffs}
        if "workload_pool" in changed:
            raise InvalidRequest(
                f"Workload Identity is off on cluster {self.cluster_name} (changed outside sdcluster); the "
                "model cannot be read without it",
                hint=(
                    f"turn it on again: gcloud container clusters update {self.cluster_name} "
                    f"--zone {self.cfg.cluster.zone} --workload-pool={self.cfg.project}.svc.id.goog"
                ),
            )
        return _set_labels(self, ctx)

    def delete(self, ctx: GcpContext, change: Change) -> None:
        location = str((change.before or {}).get("location") or self.cfg.cluster.zone)
        # GKE does not reliably delete a Service's load balancer with its cluster (it keeps billing):
        # whatever the state says (a replace, an interrupted Service create), delete them first.
        delete_load_balancers(ctx, self._key(location), self.address)
        ctx.forget_kube(self._key(location))
        client = ctx.factory.cluster_manager(ctx.admin_credentials(self.address))
        try:
            op = mutate(
                ctx,
                lambda: client.delete_cluster(name=self._key(location)),
                location=location,
                cluster=self.cluster_name,
                address=self.address,
            )
        except NotFound:
            return
        try:
            wait_for_operation(ctx, op, location, self.address, "deleting the cluster")
        except NotFound:
            return


def _set_labels(cluster: Cluster, ctx: GcpContext) -> dict[str, Any]:
    """SetLabels with the cluster's current label fingerprint (GKE refuses a stale one: re-read and
    try again when someone else changed them in between)."""
    from google.cloud import container_v1 as gke

    client = ctx.factory.cluster_manager(ctx.admin_credentials(cluster.address))
    location = cluster.cfg.cluster.zone
    for attempt in range(3):
        current = cluster._get(ctx, location)
        if current is None:
            raise NotFound(f"cluster {cluster.cluster_name} disappeared")
        request = gke.SetLabelsRequest(
            name=cluster._key(location),
            resource_labels=cluster.desired()["labels"],
            label_fingerprint=current.label_fingerprint,
        )
        try:
            op = mutate(
                ctx,
                lambda request=request: client.set_labels(request=request),  # type: ignore[misc]
                location=location,
                cluster=cluster.cluster_name,
                address=cluster.address,
            )
        except InvalidRequest as e:
            if "fingerprint" in str(e) and attempt < 2:
                continue
            raise
        wait_for_operation(ctx, op, location, cluster.address, "setting the cluster's labels")
        break
    got = cluster._get(ctx, location)
    if got is None:
        raise NotFound(f"cluster {cluster.cluster_name} disappeared")
    return cluster_attributes(got)


def _moved(cfg: Config, key: ClusterKey, pool: str | None = None) -> Config:
    """``cfg`` with the cluster (and pool) of a recorded resource name."""
    update: dict[str, Any] = {"name": key.name, "zone": key.location}
    if pool is not None:
        update["node_pool"] = pool
    return cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update=update)})


def cluster_labels(cfg: Config) -> dict[str, str]:
    return {**cfg.cluster.labels, **MANAGED_BY}


def cluster_attributes(cluster: Any) -> dict[str, Any]:
    return {
        "location": cluster.location,
        "workload_pool": cluster.workload_identity_config.workload_pool,
        "labels": dict(cluster.resource_labels),
        "network": _last(cluster.network) or "default",
        "subnetwork": _last(cluster.subnetwork),
        "status": cluster.status.name,
        "endpoint": cluster.endpoint,
        "current_node_count": cluster.current_node_count,
    }


def _last(name_or_link: str) -> str:
    """``projects/p/global/networks/vpc`` (or a URL) -> ``vpc``."""
    return name_or_link.rsplit("/", 1)[-1]


class NodePool(Resource[GcpContext]):
    type = "gke.node_pool"
    replace_on = frozenset(
        {
            "machine_type",
            "spot",
            "preemptible",
            "disk_size_gb",
            "disk_type",
            "service_account",
            "accelerator_type",
            "accelerator_count",
        }
    )
    informative = frozenset({"name", "status", "initial_nodes", "labels"})
    # A new pool (with a suffixed name) takes the workload before the old one is deleted.
    replace_order = ReplaceOrder.CREATE_FIRST

    def __init__(self, cfg: Config, deps: tuple[str, ...]) -> None:
        super().__init__(f"{self.type}.{cfg.cluster.node_pool}", node_pool_attributes(cfg), deps)
        self.cfg = cfg
        self.pool = cfg.cluster.node_pool

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> NodePool | None:
        key, gke_name = ClusterKey.parse(record.id)
        pool = address.removeprefix(f"{cls.type}.")
        return cls(_moved(provider.config, key, pool), tuple(record.dependencies)) if gke_name else None

    @property
    def cluster_key(self) -> str:
        return self.cfg.cluster_key

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return self.cfg.cluster_ref.pool_path(str(attributes.get("name", self.pool)))

    def _find(self, ctx: GcpContext) -> Any | None:
        """Our pool: the one labelled with our pool name (a replaced pool carries a suffix)."""
        client = ctx.factory.cluster_manager()
        try:
            pools = retry.call(
                lambda: client.list_node_pools(parent=self.cluster_key), project=self.cfg.project
            ).node_pools
        except NotFound:
            return None
        return self._ours(pools)

    def _ours(self, pools: Any) -> Any | None:
        ours = [
            p for p in pools if p.config.labels.get(POOL_LABEL) == self.pool and p.status.name != "STOPPING"
        ]
        ours = ours or [p for p in pools if p.name == self.pool and p.status.name != "STOPPING"]
        return ours[0] if ours else None

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        pool = self._find(ctx)
        return pool_attributes_of(pool) if pool is not None else None

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return marked(observed.get("labels"))

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return (
            f"node pool {observed.get('name')} matches ({observed.get('machine_type')}, "
            f"{observed.get('min_nodes')}..{observed.get('max_nodes')} nodes)"
        )

    def warnings(self, ctx: GcpContext, observed: Mapping[str, Any] | None) -> list[str]:
        """The machine type and GPU type in the zone, and every quota the nodes draw on, read from
        the project (``preflight``); a machine or GPU type the zone lacks stops the plan."""
        # A running pool's nodes are in the usage already; GKE does not say how many run, so the
        # autoscaler's growth is counted from min_nodes.
        nodes_now = None if observed is None else self.cfg.cluster.min_nodes
        cfg = self.cfg

        def quotas() -> dict[tuple[str, str], tuple[float, float]]:  # the pools share one read
            return ctx.once(
                f"quotas {cfg.project} {cfg.region}", lambda: preflight.project_quotas(ctx.factory, cfg)
            )

        return preflight.plan_warnings(preflight.cluster_findings(ctx.factory, cfg, nodes_now, quotas))

    def _op(self, ctx: GcpContext, call: Callable[[Any], Any], what: str) -> None:
        client = ctx.factory.cluster_manager(ctx.admin_credentials(self.address))
        c = self.cfg.cluster
        op = mutate(ctx, lambda: call(client), location=c.zone, cluster=c.name, address=self.address)
        wait_for_operation(ctx, op, c.zone, self.address, what)

    def _create_named(self, ctx: GcpContext, gke_name: str) -> None:
        from google.cloud import container_v1 as gke

        request = gke.CreateNodePoolRequest(
            parent=self.cluster_key, node_pool=node_pool_proto(self.cfg, gke_name)
        )
        try:
            self._op(
                ctx, lambda client: client.create_node_pool(request=request), f"creating node pool {gke_name}"
            )
        except AlreadyExists:
            wait_for_cluster_idle(ctx, self.cfg.cluster.zone, self.cfg.cluster.name, self.address)

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        # Usually created by the cluster's own one-shot CreateCluster, in this run: its pools are
        # in the cluster GKE returned when that operation ended.
        made = ctx.made_cluster(self.cluster_key)
        existing = self._ours(made.node_pools) if made is not None else None
        existing = existing or self._find(ctx)
        if existing is None:
            self._create_named(ctx, self.pool)
            existing = self._find(ctx)
        if existing is None:
            raise NotFound(f"node pool {self.pool} is missing right after its creation")
        attrs = pool_attributes_of(existing)
        if self.diff(self.desired(), attrs).action is Action.UPDATE:
            return self.update(ctx, change)
        return attrs

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        from google.cloud import container_v1 as gke

        current = self._find(ctx)
        if current is None:
            raise NotFound(f"node pool {self.pool} disappeared")
        d = self.desired()
        live = pool_attributes_of(current)
        name = self.cfg.cluster_ref.pool_path(current.name)
        if (live["min_nodes"], live["max_nodes"], live["autoscaling"]) != (
            d["min_nodes"],
            d["max_nodes"],
            True,
        ):
            request = gke.SetNodePoolAutoscalingRequest(
                name=name,
                autoscaling=gke.NodePoolAutoscaling(
                    enabled=True, min_node_count=d["min_nodes"], max_node_count=d["max_nodes"]
                ),
            )
            self._op(
                ctx, lambda client: client.set_node_pool_autoscaling(request=request), "updating autoscaling"
            )
        if sorted(live["taints"]) != sorted(d["taints"]):
            # Taints change in place, by UpdateNodePool (what `gcloud container node-pools update
            # --node-taints` sends), not by replacing the pool. The version and image type are the
            # pool's own, so nothing else changes.
            taints = gke.UpdateNodePoolRequest(
                name=name,
                node_version=current.version,
                image_type=current.config.image_type,
                taints=gke.NodeTaints(taints=taint_protos(d["taints"])),
            )
            self._op(ctx, lambda client: client.update_node_pool(request=taints), "updating node taints")
        found = self._find(ctx)
        return pool_attributes_of(found) if found is not None else dict(d)

    def replace(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        """Create the new pool first (the workload moves over), then delete the old one."""
        old = self._find(ctx)
        new_name = replacement_name(self.pool, old.name if old is not None else None, self.desired())
        self._create_named(ctx, new_name)
        if old is not None and old.name != new_name:
            self._delete_named(ctx, old.name)
        found = self._find(ctx)
        if found is None:
            raise NotFound(f"node pool {new_name} is missing right after its creation")
        return pool_attributes_of(found)

    def _delete_named(self, ctx: GcpContext, gke_name: str) -> None:
        try:
            self._op(
                ctx,
                lambda client: client.delete_node_pool(name=self.cfg.cluster_ref.pool_path(gke_name)),
                f"deleting node pool {gke_name}",
            )
        except NotFound:
            pass

    def delete(self, ctx: GcpContext, change: Change) -> None:
        if ctx.destroying:
            # The cluster goes too, and takes its pools with it: a separate DeleteNodePool would
            # only add a long operation.
            return
        name = str((change.before or {}).get("name") or self.pool)
        self._delete_named(ctx, name)


def replacement_name(pool: str, current: str | None, desired: Mapping[str, Any]) -> str:
    """The GKE name of a replacement pool: it must differ from the running one's (both exist for a
    while). The configured name while none runs, or when the running one carries a suffix; else the
    name plus a short hash of the new settings (the same settings give the same name on a rerun)."""
    if current is None or current != pool:
        return pool
    digest = hashlib.sha256(repr(sorted(desired.items())).encode()).hexdigest()[:6]
    return f"{pool}-{digest}"


def _stockout_error(ctx: GcpContext, cfg: Config, e: SdclusterError) -> SdclusterError:
    """A zone out of capacity: what happened, that the cluster is left in ERROR, and where else."""
    try:
        region = retry.call(
            lambda: ctx.factory.compute("regions").get(project=cfg.project, region=cfg.region),
            project=cfg.project,
        )
        others = [z.rsplit("/", 1)[-1] for z in region.zones if not z.endswith(f"/{cfg.cluster.zone}")]
    except SdclusterError:
        others = []
    elsewhere = " / ".join(others) if others else f"(gcloud compute zones list --filter=region:{cfg.region})"
    kind = "Spot " if cfg.cluster.spot else ("preemptible " if cfg.cluster.preemptible else "")
    return InvalidRequest(
        f"zone {cfg.cluster.zone} has no capacity for {kind}{cfg.cluster.machine_type} nodes right now "
        f"(ZONE_RESOURCE_POOL_EXHAUSTED / GCE_STOCKOUT): {e}. The cluster {cfg.cluster.name} was left in "
        "ERROR; it is recorded in the state, so `sdcluster destroy` deletes it and the next apply replaces it",
        hint=(
            f"try another zone of {cfg.region}: cluster.zone = {elsewhere} (then apply), or try again later"
        ),
    )


def delete_load_balancers(ctx: GcpContext, cluster_key: str, address: str) -> None:
    """Delete every LoadBalancer Service with sdcluster's labels on the cluster, and wait until each
    one's forwarding rule is gone from Compute Engine (GKE names it "a" + the Service's UID)."""
    from kubernetes import client as k8s

    from ..labels import K8S_MANAGED_BY
    from .kube import kube_call, raw_json

    api = ctx.kube(admin=True, cluster_key=cluster_key, broken=True)
    if api is None:
        return
    core = k8s.CoreV1Api(api)
    selector = ",".join(f"{k}={v}" for k, v in K8S_MANAGED_BY.items())
    listed = raw_json(
        kube_call(
            ctx, lambda: core.list_service_for_all_namespaces(label_selector=selector, _preload_content=False)
        )
    )
    services = [s for s in listed.get("items", []) if s.get("spec", {}).get("type") == "LoadBalancer"]
    for svc in services:
        meta = svc["metadata"]
        ctx.report(address, f"deleting Service {meta['namespace']}/{meta['name']} (its load balancer) first")
        try:
            kube_call(
                ctx,
                partial(
                    core.delete_namespaced_service, meta["name"], meta["namespace"], _preload_content=False
                ),
            )
        except NotFound:
            pass
    location = ClusterKey.parse(cluster_key)[0].location
    zone = ZONE_RE.fullmatch(location)
    region = zone.group(1) if zone else location
    rules = ctx.factory.compute("forwarding_rules")

    def gone() -> bool | None:
        for svc in services:
            name = ("a" + svc["metadata"]["uid"].replace("-", ""))[:32]
            try:
                retry.call(
                    partial(rules.get, project=ctx.project, region=region, forwarding_rule=name),
                    project=ctx.project,
                )
            except NotFound:
                continue
            except (ApiDisabled, PermissionDenied):
                # Compute cannot be read: the Service's own deletion (its finalizer) is the signal.
                meta = svc["metadata"]
                try:
                    kube_call(
                        ctx,
                        partial(
                            core.read_namespaced_service,
                            meta["name"],
                            meta["namespace"],
                            _preload_content=False,
                        ),
                    )
                except NotFound:
                    continue
            ctx.report(address, "waiting for the load balancers to be released")
            return None
        return True

    if services:
        retry.until(
            gone,
            timeout_s=ctx.config.serving.lb_timeout_s,
            what="the load balancers of the cluster's Services to be released",
            hint="check: gcloud compute forwarding-rules list; delete what remains before the cluster",
            max_interval_s=5.0,
        )
