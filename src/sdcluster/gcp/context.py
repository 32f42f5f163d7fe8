"""The run context GCP resources receive: the config, the client factory, impersonated admin
credentials (minted once IAM has propagated), and Kubernetes clients for the cluster."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .. import retry
from ..engine import Context, Listener
from ..errors import NotFound, PermissionDenied, TransientError
from .clients import ClientFactory

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from ..config import Config

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


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
