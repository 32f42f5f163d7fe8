"""What sdcluster manages for a configuration: the resources, in dependency order, and the outputs.

This is where the provider's resources meet the engine: the engine never imports a resource module.
A resource only the state still knows is rebuilt by its own class (``Stack.orphan`` finds the class
by the record's type).

Roles (least privilege; README explains each deviation from the tutorial):

- gke-admin: roles/container.admin and roles/compute.viewer on the project; roles/iam.serviceAccountUser
  on the gke-node service account only (the tutorial grants it project-wide);
- gke-node: roles/container.defaultNodeServiceAccount (logs and metrics of the nodes, nothing else);
- the Kubernetes service account TF Serving runs as (``tf-serving``): roles/storage.objectViewer on the
  model bucket, granted to its Workload Identity principal (on GKE_METADATA nodes a pod is its KSA,
  not the node's service account);
- the user: roles/iam.serviceAccountTokenCreator on gke-admin (impersonation).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from .. import retry
from ..config.names import project_of
from ..engine import Listener, Plan, Resource, Stack
from ..errors import NotFound, SdclusterError
from ..state import State
from .clients import ClientFactory
from .context import TOKEN_CREATOR, GcpContext
from .labels import APP
from .resources.gke import Cluster, NodePool, system_config
from .resources.iam import (
    REQUIRED_SERVICES,
    ProjectMember,
    ProjectService,
    ServiceAccount,
    ServiceAccountMember,
)
from .resources.model import ModelVersion
from .resources.serving import KSA, Deployment, endpoint_outputs, serving_resources, waiting_note
from .resources.storage import Bucket, KsaBucketMember

if TYPE_CHECKING:
    from ..config import Config
    from .prices import PriceBook

T = TypeVar("T")
ADMIN_PROJECT_ROLES = ("roles/container.admin", "roles/compute.viewer")
NODE_PROJECT_ROLES = ("roles/container.defaultNodeServiceAccount",)
ACT_AS = "roles/iam.serviceAccountUser"
BUCKET_READER = "roles/storage.objectViewer"


class GcpStack(Stack[GcpContext]):
    """The real thing: APIs, IAM, cluster, node pool, bucket (and serving objects) for ``config``."""

    def __init__(
        self,
        config: Config,
        *,
        factory: ClientFactory | None = None,
        delete_bucket: bool = False,
        force_bucket: bool = False,
    ) -> None:
        self.config = config
        self.factory = factory or ClientFactory.for_user(config.user)
        # Never delete the bucket that holds sdcluster's own state, whatever the flags say.
        holds_state = config.state.path.startswith(f"gs://{config.bucket_name}/")
        self.delete_bucket = (delete_bucket or not config.bucket.keep_on_destroy) and not holds_state
        self.force_bucket = force_bucket
        self._prices: Future[PriceBook] | None = None
        self._stored: Future[int | None] | None = None

    def context(self, listener: Listener | None) -> GcpContext:
        return GcpContext(self.config, self.factory, listener)

    def scope(self) -> str:
        return self.config.project

    def upgrade(self, state: State) -> None:
        """States written before the project was recorded: take it from the records' ids (when they
        name exactly one), then let each record's class migrate its id."""
        if not state.project:
            named = _projects_named(state)
            if len(named) == 1:
                state.project = next(iter(named))
        super().upgrade(state)

    def identity_errors(self, state: State) -> list[str]:
        project = state.project or self.config.project
        return [
            f"{address} is {record.id} (project {named})"
            for address, record in sorted(state.resources.items())
            if (named := project_of(record.id)) is not None and named != project
        ]

    def resources(self) -> list[Resource[GcpContext]]:
        cfg = self.config
        p = cfg.project
        admin_id, node_id = cfg.iam.admin_account, cfg.iam.node_account
        admin_member, node_member = f"serviceAccount:{cfg.admin_email}", f"serviceAccount:{cfg.node_email}"

        def svc(name: str) -> str:
            return f"project.service.{name}"

        out: list[Resource[GcpContext]] = [ProjectService(p, s, cfg.manage_apis) for s in REQUIRED_SERVICES]
        iam_deps = (svc("iam.googleapis.com"), svc("cloudresourcemanager.googleapis.com"))
        sa_admin = ServiceAccount(p, admin_id, "GKE admin (sdcluster: creates the cluster)", iam_deps)
        sa_node = ServiceAccount(p, node_id, "GKE nodes (sdcluster: runs the node pool)", iam_deps)
        out += [sa_admin, sa_node]
        members: list[Resource[GcpContext]] = [
            *(
                ProjectMember(p, r, admin_member, admin_id, (sa_admin.address, *iam_deps))
                for r in ADMIN_PROJECT_ROLES
            ),
            *(
                ProjectMember(p, r, node_member, node_id, (sa_node.address, *iam_deps))
                for r in NODE_PROJECT_ROLES
            ),
            ServiceAccountMember(p, node_id, ACT_AS, admin_member, (sa_node.address, sa_admin.address)),
            ServiceAccountMember(
                p, admin_id, TOKEN_CREATOR, cfg.user, (sa_admin.address, svc("iamcredentials.googleapis.com"))
            ),
        ]
        out += members
        cluster = Cluster(
            cfg,
            (
                *(m.address for m in members),
                svc("container.googleapis.com"),
                svc("compute.googleapis.com"),
            ),
        )
        pool = NodePool(cfg, (cluster.address,))
        out += [cluster, pool]
        if cfg.cluster.system_pool:
            out.append(NodePool(system_config(cfg), (cluster.address,)))
        model_deps: tuple[str, ...] = ()
        model: ModelVersion | None = None
        if cfg.bucket.enabled:
            bucket = Bucket(
                cfg, (svc("storage.googleapis.com"),), delete=self.delete_bucket, force=self.force_bucket
            )
            # After the cluster: GKE creates the project's Workload Identity pool with its first
            # cluster that uses it, and IAM refuses a principal of a pool that does not exist yet
            # (400 "Identity Pool does not exist (PROJECT.svc.id.goog)", e.g.
            # terraform-google-modules/terraform-google-kubernetes-engine#916).
            reader = KsaBucketMember(
                cfg, BUCKET_READER, cfg.serving.namespace, KSA, (bucket.address, cluster.address, *iam_deps)
            )
            out += [bucket, reader]
            model_deps = (reader.address,)
        if cfg.serving.model_dir:
            # After the bucket and the bindings the cluster waits for (a few requests): it uploads
            # while IAM propagates and the cluster is created, without its start taking the CPU
            # from those requests, which IAM's propagation then waits on. The Deployment's rollout
            # waits for it.
            storage_deps = (bucket.address,) if cfg.bucket.enabled else (svc("storage.googleapis.com"),)
            model = ModelVersion(cfg, (*storage_deps, *(m.address for m in members)))
            out.append(model)
            model_deps = (*model_deps, model.address)
        out += serving_resources(cfg, cluster.address, pool.address, model_deps, model)
        if cfg.serving.idle_stop_minutes:
            from .resources.autostop import manifests
            from .resources.kube import KubeObject

            deps = (cluster.address, pool.address, *(r.address for r in out if r.type == "k8s.namespace"))
            *parts, cron = [KubeObject(cfg, m, deps) for m in manifests(cfg)]
            # The CronJob last: its first run needs its service account, Role and script.
            out += [*parts, KubeObject(cfg, cron.manifest, (*deps, *(p.address for p in parts)))]
        return out

    def details(self, plan: Plan) -> dict[str, Any]:
        """The cluster and the Deployment, as observed by the plan (empty while they do not exist)."""
        out: dict[str, Any] = {}
        for c in plan.changes:
            r, observed = plan.resources.get(c.address), c.before or {}
            if not observed:
                continue
            if isinstance(r, Cluster):
                out["cluster"] = {
                    "status": observed.get("status"),
                    "location": observed.get("location"),
                    "nodes": observed.get("current_node_count"),
                    "endpoint": observed.get("endpoint"),
                }
            elif isinstance(r, Deployment):
                out["deployment"] = {
                    "ready": observed.get("ready", ""),
                    "replicas": observed.get("spec.replicas"),
                    "model": observed.get("model", ""),
                    "paused": observed.get("paused", ""),
                }
        return out

    def prefetch(self) -> None:
        """Start what the plan's cost needs, to arrive while the resources refresh: the prices
        (Catalog API, else the snapshot; once) and the bytes under the model path (every plan: an
        upload changes them)."""
        from .prices import price_book

        if self._prices is None:
            self._prices = _background("sdcluster-prices", lambda: price_book(self.factory))
        self._stored = _background("sdcluster-model-bytes", self._list_model_bytes)

    def cost(self, plan: Plan, state: State | None, *, now: bool = False) -> dict[str, Any] | None:
        """The plan's cost while running (initial and maximum node count), or (``now``) the rate of
        what runs now: the nodes GKE reports, the Service the state records, the model's bytes."""
        from .cost import Running, estimate, plan_estimate, split_nodes

        if plan.destroy:
            return None
        if self._prices is None or self._stored is None:
            self.prefetch()
        assert self._prices is not None and self._stored is not None
        book = self._prices.result()
        observed = self._observed(plan)
        stored, self._stored = self._stored, None  # this plan's: the next one lists again
        model_bytes = 0 if observed.get(Bucket) is None else stored.result()
        if not now:
            return plan_estimate(self.config, book, model_bytes)
        cluster = observed.get(Cluster)
        count = int(cluster.get("current_node_count") or 0) if cluster else 0
        nodes = split_nodes(self.config, count)
        service = state.resources.get(self._service_address) if state else None
        running = Running(
            nodes, forwarding_rule=service is not None, model_bytes=model_bytes, cluster=bool(cluster)
        )
        return estimate(self.config, running, book)

    @property
    def _service_address(self) -> str:
        return f"k8s.service.{self.config.serving.namespace}/{APP}"

    @staticmethod
    def _observed(plan: Plan) -> dict[type, dict[str, Any]]:
        out: dict[type, dict[str, Any]] = {}
        for c in plan.changes:
            r = plan.resources.get(c.address)
            if r is not None and c.before:
                out.setdefault(type(r), c.before)
        return out

    def _list_model_bytes(self) -> int | None:
        """Bytes stored under the model path (0 while the bucket does not exist; None: unreadable,
        or the model path is in another bucket)."""
        cfg = self.config
        name, _, prefix = cfg.model_path.removeprefix("gs://").partition("/")
        if name != cfg.bucket_name:
            return None
        client = self.factory.storage(cfg.project)
        try:
            blobs = retry.call(
                lambda: list(client.list_blobs(name, prefix=prefix.rstrip("/") + "/")), project=cfg.project
            )
        except NotFound:
            return 0
        except SdclusterError:
            return None
        return sum(int(b.size or 0) for b in blobs)

    def notes(self, state: State) -> list[str]:
        """What to do next after an apply: upload a model when the model path has none."""
        deployment = state.resources.get(f"k8s.deployment.{self.config.serving.namespace}/{APP}")
        if deployment is not None and deployment.attributes.get("model") == "none":
            return [f"Deployment {APP} is waiting for a model: {waiting_note(self.config)}"]
        return []

    def outputs(self, state: State) -> dict[str, Any]:
        """Outputs of what the state records now: nothing is described that does not exist."""
        cfg = self.config
        has = state.resources.get

        out: dict[str, Any] = {}
        if has(f"iam.service_account.{cfg.iam.admin_account}"):
            out["admin_service_account"] = cfg.admin_email
        if has(f"iam.service_account.{cfg.iam.node_account}"):
            out["node_service_account"] = cfg.node_email
        cluster = has(f"gke.cluster.{cfg.cluster.name}")
        if cluster is not None:
            out.update(
                cluster_name=cfg.cluster.name,
                cluster_zone=cluster.attributes.get("location", cfg.cluster.zone),
                cluster_endpoint=cluster.attributes.get("endpoint", ""),
            )
        bucket = has(f"storage.bucket.{cfg.bucket_name}")
        if bucket is not None:
            out["bucket_url"] = f"gs://{cfg.bucket_name}"
        if bucket is not None or not cfg.bucket.enabled:
            out["model_path"] = cfg.model_path
        service = has(f"k8s.service.{cfg.serving.namespace}/{APP}")
        out.update(endpoint_outputs(cfg, str(service.attributes.get("lb_ip", "")) if service else None))
        return out


def _projects_named(state: State) -> set[str]:
    return {p for r in state.resources.values() if (p := project_of(r.id)) is not None}


def _background(name: str, fn: Callable[[], T]) -> Future[T]:
    """``fn()`` in a daemon thread, its result (or exception) in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as e:  # carried over to whoever reads the result
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
