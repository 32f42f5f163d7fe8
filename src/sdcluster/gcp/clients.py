"""The ONE place that builds Google and Kubernetes clients and credentials.

Default path: Application Default Credentials (``google.auth.default()``) and each client library's
default gRPC transport to Google. Emulator path, selected only by ``SDCLUSTER_EMULATOR=HOST:PORT``
(or ``--emulator``): every client is routed to the local emulator, the identity is the configured
member (``emulator:<member>`` bearer tokens), and no Application Default Credentials are needed.

Heavy imports happen inside the functions, so importing this module is cheap.

Example::

    factory = ClientFactory.for_user("user:me@example.com")
    iam = factory.iam_admin()              # google.cloud.iam_admin_v1.IAMClient
    admin = factory.impersonated("gke-admin@p.iam.gserviceaccount.com")
    gke = factory.cluster_manager(admin)   # created with the impersonated credentials
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, translate
from ..protocol import CONTROL_SERVICE, ENV_EMULATOR, token_for

if TYPE_CHECKING:
    import grpc
    from google.auth.credentials import Credentials
    from google.cloud import (
        billing_v1,
        container_v1,
        iam_admin_v1,
        iam_credentials_v1,
        resourcemanager_v3,
        service_usage_v1,
    )
    from google.cloud import storage as storage  # type: ignore[attr-defined,unused-ignore]
    from kubernetes import client as k8s_client

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# A local emulator answers in milliseconds; a dead or mistyped address must not cost 20 s of retries.
EMULATOR_CONNECT_TIMEOUT_S = 3.0
# With this scope GKE knows an impersonated service account by its email (RBAC subjects, audit
# logs); without it, by its numeric unique ID (cloud.google.com/kubernetes-engine/docs/how-to/
# role-based-access-control, "Forbidden error for service accounts on VM instances").
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
# Impersonated tokens are short-lived and refreshed as needed (google-auth refreshes before expiry).
IMPERSONATION_LIFETIME_S = 1800


def emulator_address(explicit: str | None = None) -> str | None:
    """The emulator address to route to, or None for the real Google path."""
    addr = explicit or os.environ.get(ENV_EMULATOR) or None
    return addr.strip() if addr else None


def emulator_credentials(member: str) -> Credentials:
    """Credentials that identify ``member`` to the emulator (never valid against Google)."""
    from google.auth import credentials as ga_credentials

    class EmulatorCredentials(ga_credentials.Credentials):
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.member = member
            self.token = token_for(member)

        def refresh(self, request: Any) -> None:
            self.token = token_for(member)

        @property
        def expired(self) -> bool:
            return False

        @property
        def valid(self) -> bool:
            return True

    return EmulatorCredentials()


def _emulator_channel(address: str, credentials: Credentials) -> grpc.Channel:
    """A gRPC channel to the emulator that sends ``authorization: Bearer <token>`` over loopback."""
    import grpc
    from google.auth.transport import grpc as ga_grpc
    from google.auth.transport import requests as ga_requests

    local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    plugin = ga_grpc.AuthMetadataPlugin(credentials, ga_requests.Request())  # type: ignore[no-untyped-call]
    creds = grpc.composite_channel_credentials(local, grpc.metadata_call_credentials(plugin))
    return grpc.secure_channel(address, creds)


def control_call(
    address: str, method: str, payload: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Call the emulator's control service (JSON in, JSON out): Info, Log, ClearLog, SetKnobs, Snapshot."""
    import grpc

    channel = grpc.secure_channel(address, grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP))
    try:
        fn = channel.unary_unary(
            f"/{CONTROL_SERVICE}/{method}",
            request_serializer=lambda d: json.dumps(d).encode(),
            response_deserializer=lambda b: json.loads(b.decode()),
        )
        return fn(payload or {}, timeout=timeout)
    finally:
        channel.close()


@dataclass
class ClientFactory:
    """Builds every client sdcluster uses, for one user identity, on the Google or emulator path."""

    user: str | None = None  # member, e.g. "user:me@example.com" (identity on the emulator)
    emulator: str | None = None  # "HOST:PORT" or None for Google
    _user_credentials: Credentials | None = field(default=None, repr=False)
    _info: dict[str, Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def for_user(cls, user: str | None, emulator: str | None = None) -> ClientFactory:
        return cls(user=user, emulator=emulator_address(emulator))

    # ---- credentials ----------------------------------------------------------------------------
    def user_credentials(self) -> Credentials:
        """The user's own credentials: ADC on Google, the configured member on the emulator."""
        with self._lock:
            if self._user_credentials is None:
                if self.emulator:
                    if not self.user:
                        raise ConfigError(
                            "the emulator needs a user member", hint="set `user` in sdcluster.toml"
                        )
                    self._user_credentials = emulator_credentials(self.user)
                else:
                    self._user_credentials = _application_default_credentials()
            return self._user_credentials

    def impersonated(self, target_email: str) -> Credentials:
        """Short-lived credentials of ``target_email`` minted with the user's credentials.

        Uses google.auth's impersonated_credentials (IAM Credentials generateAccessToken); on the
        emulator its REST endpoint is the emulator's. Tokens live in memory only.
        """
        from google.auth import impersonated_credentials

        override = None
        if self.emulator:
            http = self.emulator_info()["http"]
            override = f"http://{http}/iamcredentials/v1/projects/-/serviceAccounts/{target_email}:generateAccessToken"
        return impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=self.user_credentials(),
            target_principal=target_email,
            target_scopes=[CLOUD_PLATFORM, USERINFO_EMAIL],
            lifetime=IMPERSONATION_LIFETIME_S,
            iam_endpoint_override=override,
        )

    def emulator_info(self) -> dict[str, Any]:
        """The emulator's Info; a ConfigError within seconds when nothing answers at its address."""
        import grpc

        if not self.emulator:
            raise RuntimeError("not on the emulator")
        if self._info is None:
            try:
                self._info = control_call(self.emulator, "Info", timeout=EMULATOR_CONNECT_TIMEOUT_S)
            except grpc.RpcError as e:
                raise ConfigError(
                    f"no sdcluster emulator answers at {self.emulator} ({ENV_EMULATOR} / --emulator): "
                    f"{e.code().name}",
                    hint=(
                        "start one (sdcluster emulator serve) and export the line it prints; "
                        f"to use Google Cloud, unset {ENV_EMULATOR}"
                    ),
                ) from None
        return self._info

    def check_emulated_project(self, project: str) -> None:
        """On the emulator, refuse a project it does not emulate (instead of a permission error later)."""
        info = self.emulator_info()
        emulated = info.get("projects") or [info.get("project")]
        if project not in emulated:
            raise ConfigError(
                f"the emulator at {self.emulator} emulates {', '.join(map(str, emulated))}, not project {project}",
                hint=f"serve that project too: sdcluster emulator serve --project {project} (or fix `project`)",
            )

    # ---- Google clients -------------------------------------------------------------------------
    def _grpc_client(
        self, key: str, credentials: Credentials | None, build: Callable[..., Any], transport_cls: Any
    ) -> Any:
        creds = credentials or self.user_credentials()
        cache_key = (key, id(creds))
        with self._lock:
            if cache_key in self._cache:
                return self._cache[cache_key]
        if self.emulator:
            self.emulator_info()  # fail fast, naming the address, when nothing listens there
            channel = _emulator_channel(self.emulator, creds)
            client = build(transport=transport_cls(channel=channel))
        else:
            client = build(credentials=creds)
        with self._lock:
            self._cache[cache_key] = client
        return client

    def iam_admin(self, credentials: Credentials | None = None) -> iam_admin_v1.IAMClient:
        from google.cloud import iam_admin_v1
        from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

        return self._grpc_client("iam", credentials, iam_admin_v1.IAMClient, IAMGrpcTransport)  # type: ignore[no-any-return]

    def iam_credentials(
        self, credentials: Credentials | None = None
    ) -> iam_credentials_v1.IAMCredentialsClient:
        from google.cloud import iam_credentials_v1
        from google.cloud.iam_credentials_v1.services.iam_credentials.transports import (
            IAMCredentialsGrpcTransport,
        )

        return self._grpc_client(  # type: ignore[no-any-return]
            "iamcredentials",
            credentials,
            iam_credentials_v1.IAMCredentialsClient,
            IAMCredentialsGrpcTransport,
        )

    def projects(self, credentials: Credentials | None = None) -> resourcemanager_v3.ProjectsClient:
        from google.cloud import resourcemanager_v3
        from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport

        return self._grpc_client(  # type: ignore[no-any-return]
            "projects", credentials, resourcemanager_v3.ProjectsClient, ProjectsGrpcTransport
        )

    def service_usage(self, credentials: Credentials | None = None) -> service_usage_v1.ServiceUsageClient:
        from google.cloud import service_usage_v1
        from google.cloud.service_usage_v1.services.service_usage.transports import ServiceUsageGrpcTransport

        return self._grpc_client(  # type: ignore[no-any-return]
            "serviceusage", credentials, service_usage_v1.ServiceUsageClient, ServiceUsageGrpcTransport
        )

    def cluster_manager(self, credentials: Credentials | None = None) -> container_v1.ClusterManagerClient:
        from google.cloud import container_v1
        from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport

        return self._grpc_client(  # type: ignore[no-any-return]
            "container", credentials, container_v1.ClusterManagerClient, ClusterManagerGrpcTransport
        )

    def compute(self, kind: str, credentials: Credentials | None = None) -> Any:
        """A google-cloud-compute client (REST, Compute's only transport) for ``kind``: ``regions``,
        ``projects``, ``machine_types``, ``accelerator_types``, ``networks``, ``subnetworks``,
        ``forwarding_rules``. On the emulator: its HTTP address, the caller's emulator token."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1

        classes = {
            "regions": compute_v1.RegionsClient,
            "projects": compute_v1.ProjectsClient,
            "machine_types": compute_v1.MachineTypesClient,
            "accelerator_types": compute_v1.AcceleratorTypesClient,
            "networks": compute_v1.NetworksClient,
            "subnetworks": compute_v1.SubnetworksClient,
            "forwarding_rules": compute_v1.ForwardingRulesClient,
        }
        creds = credentials or self.user_credentials()
        key = ("compute:" + kind, id(creds))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        options = (
            ClientOptions(api_endpoint=f"http://{self.emulator_info()['http']}/compute")
            if self.emulator
            else None
        )
        client = classes[kind](credentials=creds, client_options=options, transport="rest")
        with self._lock:
            self._cache[key] = client
        return client

    def billing_catalog(self, credentials: Credentials | None = None) -> billing_v1.CloudCatalogClient:
        """The Cloud Billing Catalog (public prices; any authenticated caller may read them)."""
        from google.cloud import billing_v1
        from google.cloud.billing_v1.services.cloud_catalog.transports import CloudCatalogGrpcTransport

        return self._grpc_client(  # type: ignore[no-any-return]
            "cloudbilling", credentials, billing_v1.CloudCatalogClient, CloudCatalogGrpcTransport
        )

    def storage(self, project: str, credentials: Credentials | None = None) -> storage.Client:
        """Cloud Storage (JSON API). On the emulator: its Cloud Storage endpoint."""
        from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

        key = ("storage:" + project, id(credentials))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        if self.emulator:
            # Plain HTTP to the emulator's storage endpoint, with the caller's emulator token: the
            # emulator checks storage permissions like GCS does.
            client = storage.Client(
                project=project,
                credentials=credentials or self.user_credentials(),
                client_options={"api_endpoint": f"http://{self.emulator_info()['storage']}"},
            )
        else:
            client = storage.Client(project=project, credentials=credentials or self.user_credentials())
        with self._lock:
            self._cache[key] = client
        return client

    # ---- Kubernetes -----------------------------------------------------------------------------
    def kubernetes(
        self, endpoint: str, ca_certificate_b64: str, credentials: Credentials
    ) -> k8s_client.ApiClient:
        """An ApiClient for a GKE cluster: TLS verified against the cluster CA, bearer token from
        ``credentials`` (refreshed before expiry on every request). No kubeconfig is written."""
        import base64

        from google.auth.transport import requests as ga_requests
        from kubernetes import client as k8s

        conf = k8s.Configuration()
        conf.host = f"https://{endpoint}"
        # The CA stays in memory (urllib3's ca_cert_data): no file is left behind per client.
        conf.ca_cert_data = base64.b64decode(ca_certificate_b64).decode("ascii")
        conf.verify_ssl = True
        request = ga_requests.Request()
        lock = threading.Lock()

        def refresh_token(c: Any) -> None:
            with lock:
                if not credentials.valid:
                    credentials.refresh(request)  # type: ignore[no-untyped-call]
                c.api_key["authorization"] = str(credentials.token)

        conf.api_key_prefix["authorization"] = "Bearer"
        conf.refresh_api_key_hook = refresh_token  # type: ignore[assignment]
        refresh_token(conf)
        return k8s.ApiClient(conf)


def _application_default_credentials() -> Credentials:
    import google.auth

    try:
        creds, _project = google.auth.default(scopes=[CLOUD_PLATFORM])
    except Exception as e:  # DefaultCredentialsError and friends
        raise translate(e) from e
    return creds
