"""What sdcluster manages for a configuration: the list of resources, how to rebuild one that only
the state still knows (to delete it), the outputs, and the run context resources receive.

The engine (plan.py) never imports a resource module; this module is where they meet.

Roles (least privilege; README explains each deviation from the tutorial):

- gke-admin: roles/container.admin and roles/compute.viewer on the project; roles/iam.serviceAccountUser
  on the gke-node service account only (the tutorial grants it project-wide);
- gke-node: roles/container.defaultNodeServiceAccount; roles/storage.objectViewer on the model bucket;
- the user: roles/iam.serviceAccountTokenCreator on gke-admin (impersonation).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from . import retry
from .clients import ClientFactory
from .errors import PermissionDenied, TransientError
from .plan import Context, Listener, Resource
from .state import ResourceState, State

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from .config import Config

ADMIN_PROJECT_ROLES = ("roles/container.admin", "roles/compute.viewer")
NODE_PROJECT_ROLES = ("roles/container.defaultNodeServiceAccount",)
ACT_AS = "roles/iam.serviceAccountUser"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
BUCKET_READER = "roles/storage.objectViewer"


class Stack:
    """A set of resources for one configuration. Tests subclass it with in-memory resources."""

    def resources(self) -> list[Resource]:
        raise NotImplementedError

    def orphan(self, address: str, rstate: ResourceState) -> Resource | None:
        """Rebuild a resource recorded in state but no longer wanted, so it can be deleted."""
        return None

    def outputs(self, state: State) -> dict[str, Any]:
        return {}

    def context(self, listener: Listener | None) -> Context:
        return Context(listener)


class GcpContext(Context):
    """The run context of GCP resources: config, client factory, impersonated admin credentials."""

    def __init__(self, config: Config, factory: ClientFactory, listener: Listener | None = None) -> None:
        super().__init__(listener)
        self.config = config
        self.factory = factory
        self.project = config.project
        self._admin: Credentials | None = None
        self._admin_lock = threading.Lock()
        self._kube: dict[bool, Any] = {}
        self._iam_changed_at: float | None = None

    def iam_changed(self) -> None:
        """A binding was just added in this run (later denials may be IAM propagation)."""
        self._iam_changed_at = time.monotonic()

    def iam_propagating(self) -> bool:
        changed = self._iam_changed_at
        return changed is not None and time.monotonic() - changed < self.config.iam.propagation_timeout_s

    def admin_credentials(self, address: str = "") -> Credentials:
        """Impersonated gke-admin credentials, once the token-creator binding has propagated.

        Polls (mint a token, retry PERMISSION_DENIED with jittered backoff) up to
        ``iam.propagation_timeout_s`` instead of sleeping a fixed time. Tokens stay in memory.
        """
        with self._admin_lock:
            if self._admin is not None:
                return self._admin
            from google.auth.transport import requests as ga_requests

            creds = self.factory.impersonated(self.config.admin_email)
            request = ga_requests.Request()

            def mint() -> Credentials:
                if address:
                    self.report(
                        address, f"waiting for IAM propagation (impersonating {self.config.admin_email})"
                    )
                retry.call(lambda: creds.refresh(request), project=self.project)  # type: ignore[no-untyped-call]
                return creds

            self._admin = retry.until(
                mint,
                timeout_s=self.config.iam.propagation_timeout_s,
                what=f"permission to impersonate {self.config.admin_email} (IAM propagation)",
                retry_on=(PermissionDenied, TransientError),
                hint=(
                    f"{self.config.user} needs {TOKEN_CREATOR} on {self.config.admin_email}; IAM can take up to "
                    "7 minutes to propagate. Check: gcloud iam service-accounts get-iam-policy "
                    f"{self.config.admin_email}"
                ),
            )
            return self._admin

    def kube(self, admin: bool = False) -> Any:
        """A Kubernetes ApiClient for the cluster, or None while the cluster does not run.

        Reads use the user's credentials, writes the impersonated gke-admin's.
        """
        with self._admin_lock:
            if admin in self._kube:
                return self._kube[admin]
        from .errors import NotFound

        client = self.factory.cluster_manager()
        try:
            cluster = retry.call(
                lambda: client.get_cluster(name=self.config.cluster_key), project=self.project
            )
        except NotFound:
            return None
        if cluster.status.name not in ("RUNNING", "RECONCILING") or not cluster.endpoint:
            return None
        creds = self.admin_credentials() if admin else self.factory.user_credentials()
        api = self.factory.kubernetes(cluster.endpoint, cluster.master_auth.cluster_ca_certificate, creds)
        with self._admin_lock:
            self._kube[admin] = api
        return api


class GcpStack(Stack):
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

    def context(self, listener: Listener | None) -> Context:
        return GcpContext(self.config, self.factory, listener)

    def resources(self) -> list[Resource]:
        from .gke import Cluster, NodePool
        from .iam import (
            REQUIRED_SERVICES,
            ProjectMember,
            ProjectService,
            ServiceAccount,
            ServiceAccountMember,
        )
        from .serving import serving_resources
        from .storage import Bucket, BucketMember

        cfg = self.config
        p = cfg.project
        admin_id, node_id = cfg.iam.admin_account, cfg.iam.node_account
        admin_member, node_member = f"serviceAccount:{cfg.admin_email}", f"serviceAccount:{cfg.node_email}"

        def svc(name: str) -> str:
            return f"project.service.{name}"

        out: list[Resource] = [ProjectService(p, s, cfg.manage_apis) for s in REQUIRED_SERVICES]
        iam_deps = (svc("iam.googleapis.com"), svc("cloudresourcemanager.googleapis.com"))
        sa_admin = ServiceAccount(p, admin_id, "GKE admin (sdcluster: creates the cluster)", iam_deps)
        sa_node = ServiceAccount(p, node_id, "GKE nodes (sdcluster: runs the node pool)", iam_deps)
        out += [sa_admin, sa_node]
        members: list[Resource] = [
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
        model_deps: tuple[str, ...] = ()
        if cfg.bucket.enabled:
            bucket = Bucket(
                cfg, (svc("storage.googleapis.com"),), delete=self.delete_bucket, force=self.force_bucket
            )
            reader = BucketMember(cfg, BUCKET_READER, node_member, node_id, (bucket.address, sa_node.address))
            out += [bucket, reader]
            model_deps = (reader.address,)
        out += serving_resources(cfg, (cluster.address, pool.address), model_deps)
        return out

    def orphan(self, address: str, rstate: ResourceState) -> Resource | None:
        """Resources whose name changed in the config: rebuilt from state so they can be deleted."""
        from .gke import Cluster, NodePool
        from .iam import ProjectMember, ProjectService, ServiceAccount, ServiceAccountMember
        from .storage import Bucket, BucketMember

        cfg = self.config
        p = cfg.project
        t, name = rstate.type, address[len(rstate.type) + 1 :]
        a = rstate.attributes
        deps = tuple(rstate.dependencies)
        if t == ProjectService.type:
            return ProjectService(p, name, cfg.manage_apis)
        if t == ServiceAccount.type:
            return ServiceAccount(p, name, str(a.get("display_name", "")), deps)
        if t == ProjectMember.type:
            who, _, role = name.partition("/")
            return ProjectMember(p, role, str(a["member"]), who, deps)
        if t == ServiceAccountMember.type:
            account, _, rest = name.partition("/")
            role = "/".join(rest.split("/")[:2])
            return ServiceAccountMember(p, account, role, str(a["member"]), deps)
        if t == Cluster.type:
            moved = cfg.model_copy(
                update={
                    "cluster": cfg.cluster.model_copy(
                        update={"name": name, "zone": a.get("location", cfg.cluster.zone)}
                    )
                }
            )
            return Cluster(moved, deps)
        if t == NodePool.type:
            cluster_key = rstate.id.split("/nodePools/")[0]
            parts = cluster_key.split("/")
            moved = cfg.model_copy(
                update={
                    "cluster": cfg.cluster.model_copy(
                        update={"node_pool": name, "zone": parts[3], "name": parts[5]}
                    )
                }
            )
            return NodePool(moved, deps)
        if t == Bucket.type:
            moved = cfg.model_copy(update={"bucket": cfg.bucket.model_copy(update={"name": name})})
            return Bucket(moved, deps, delete=self.delete_bucket, force=self.force_bucket)
        if t.startswith("k8s."):
            from .serving import KubeObject

            kind, _, rest = rstate.id.partition("/")
            namespace, _, obj = rest.rpartition("/")
            meta = {"name": obj, **({"namespace": namespace} if namespace else {})}
            return KubeObject(cfg, {"kind": kind, "metadata": meta}, deps)
        if t == BucketMember.type:
            bucket, _, rest = name.partition("/")
            who = rest.rsplit("/", 1)[-1]
            role = rest[: -len(who) - 1]
            moved = cfg.model_copy(update={"bucket": cfg.bucket.model_copy(update={"name": bucket})})
            return BucketMember(moved, role, str(a["member"]), who, deps)
        return None

    def outputs(self, state: State) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {
            "admin_service_account": cfg.admin_email,
            "node_service_account": cfg.node_email,
        }
        cluster = state.resources.get(f"gke.cluster.{cfg.cluster.name}")
        if cluster is not None:
            out.update(
                cluster_name=cfg.cluster.name,
                cluster_zone=cluster.attributes.get("location", cfg.cluster.zone),
                cluster_endpoint=cluster.attributes.get("endpoint", ""),
            )
        if cfg.bucket.enabled and f"storage.bucket.{cfg.bucket_name}" in state.resources:
            out["bucket_url"] = f"gs://{cfg.bucket_name}"
        out["model_path"] = cfg.model_path
        from .serving import APP, endpoint_outputs

        service = state.resources.get(f"k8s.service.{cfg.serving.namespace}/{APP}")
        out.update(endpoint_outputs(cfg, str(service.attributes.get("lb_ip", "")) if service else None))
        return out
