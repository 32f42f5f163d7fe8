"""The run context GCP resources receive: the config, the client factory, impersonated admin
credentials (minted once IAM has propagated), and Kubernetes clients for the cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from .. import retry
from ..engine import Context, Listener
from ..errors import ApiDisabled, NotFound, PermissionDenied, TransientError
from .clients import ClientFactory

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from ..config import Config

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
T = TypeVar("T")


class GcpContext(Context):
    """The run context of GCP resources: config, client factory, impersonated admin credentials."""

    def __init__(self, config: Config, factory: ClientFactory, listener: Listener | None = None) -> None:
        super().__init__(listener)
        self.config = config
        self.factory = factory
        self.project = config.project
        self._admin: Credentials | None = None
        self._admin_lock = threading.Lock()
        self._kube: dict[tuple[bool, str], Any] = {}
        self._clusters: dict[str, Any] = {}  # key -> the cluster as this run's operation left it
        self._once: dict[str, Future[Any]] = {}
        self._iam_changed_at: float | None = None
        self._accounts_created_at: float | None = None
        self._number: str | None = None

    def absent_because(self, error: Exception) -> str | None:
        """A read denied because an API is not enabled yet, that apply enables first: absent."""
        from .resources.iam import REQUIRED_SERVICES

        if isinstance(error, ApiDisabled) and self.config.manage_apis and error.service in REQUIRED_SERVICES:
            return f"the {error.service} API is not enabled yet; apply enables it first"
        return None

    def account_created(self) -> None:
        """A service account was just created in this run (IAM Credentials may not know it yet)."""
        self._accounts_created_at = time.monotonic()

    def accounts_propagating(self) -> bool:
        created = self._accounts_created_at
        return created is not None and time.monotonic() - created < self.config.iam.propagation_timeout_s

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
                try:
                    retry.call(lambda: creds.refresh(request), project=self.project)  # type: ignore[no-untyped-call]
                except NotFound as e:
                    # IAM Credentials answers 404 "Gaia id not found" for an account created moments
                    # ago: retried while this run's new accounts propagate, else the account is gone.
                    if self.accounts_propagating():
                        raise _AccountPropagating(str(e)) from e
                    raise
                return creds

            self._admin = retry.until(
                mint,
                timeout_s=self.config.iam.propagation_timeout_s,
                what=f"permission to impersonate {self.config.admin_email} (IAM propagation)",
                retry_on=(PermissionDenied, TransientError, _AccountPropagating),
                hint=(
                    f"{self.config.user} needs {TOKEN_CREATOR} on {self.config.admin_email}; IAM can take up to "
                    "7 minutes to propagate. Check: gcloud iam service-accounts get-iam-policy "
                    f"{self.config.admin_email}"
                ),
            )
            return self._admin

    def project_number(self) -> str:
        """The project's number (Resource Manager's GetProject), looked up once per run.

        Workload Identity principals name the project by number, not by id.
        """
        if self._number is None:
            client = self.factory.projects()
            project = retry.call(
                lambda: client.get_project(name=f"projects/{self.project}"), project=self.project
            )
            self._number = str(project.name).removeprefix("projects/")
        return self._number

    def once(self, key: str, read: Callable[[], T]) -> T:
        """``read()``, made once per run for ``key``: resources asking at once (the quotas both node
        pools check) wait for the first one's answer, or its error."""
        with self._admin_lock:
            answer = self._once.get(key)
            mine = answer is None
            if answer is None:
                answer = self._once[key] = Future()
        if mine:
            try:
                answer.set_result(read())
            except BaseException as e:
                answer.set_exception(e)
        return answer.result()  # type: ignore[no-any-return]

    def cluster_made(self, key: str, cluster: Any) -> None:
        """The cluster as GetCluster returned it when this run's operation on it ended: ``kube``
        reaches its API with that endpoint and CA, and ``made_cluster`` gives its node pools,
        without asking GKE again."""
        with self._admin_lock:
            self._clusters[key] = cluster

    def made_cluster(self, key: str) -> Any | None:
        with self._admin_lock:
            return self._clusters.get(key)

    def kube(self, admin: bool = False, cluster_key: str = "", broken: bool = False) -> Any:
        """A Kubernetes ApiClient for the cluster (default: the configured one), or None while it
        has no API to reach (absent, provisioning, stopping, or no endpoint).

        A DEGRADED cluster is reached: it runs, and so do its Services. An ERROR one only with
        ``broken`` (to delete its load balancers before it goes): for plans its objects count as
        absent, since the cluster is replaced and they are created again on the new one. Reads use
        the user's credentials, writes the impersonated gke-admin's. The endpoint and CA come from
        GetCluster, or from ``cluster_made`` when this run's operation on the cluster just ended.
        """
        key = cluster_key or self.config.cluster_key
        with self._admin_lock:
            if (admin, key) in self._kube:
                return self._kube[(admin, key)]
            cluster = self._clusters.get(key)
        if cluster is None:
            client = self.factory.cluster_manager()
            try:
                cluster = retry.call(lambda: client.get_cluster(name=key), project=self.project)
            except NotFound:
                return None
        reachable = ("RUNNING", "RECONCILING", "DEGRADED", *(("ERROR",) if broken else ()))
        if cluster.status.name not in reachable or not cluster.endpoint:
            return None
        creds = self.admin_credentials() if admin else self.factory.user_credentials()
        api = self.factory.kubernetes(cluster.endpoint, cluster.master_auth.cluster_ca_certificate, creds)
        if cluster.status.name == "ERROR":  # a broken one is reached once, to clean up
            return api
        with self._admin_lock:  # the objects asking at once share the first client made
            return self._kube.setdefault((admin, key), api)

    def forget_kube(self, cluster_key: str) -> None:
        """The cluster was deleted or created again: its endpoint and CA are no longer the same."""
        with self._admin_lock:
            for k in [k for k in self._kube if k[1] == cluster_key]:
                del self._kube[k]
            self._clusters.pop(cluster_key, None)


class _AccountPropagating(NotFound):
    pass
