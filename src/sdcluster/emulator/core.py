"""The emulator's world: its whole state, its rules of identity and permission, and its knobs.

Every emulated service (IAM, IAM Credentials, Resource Manager, Service Usage, GKE, the Kubernetes
API of each cluster, TF Serving) keeps its data in ``World.data`` (JSON-serializable, namespaced by
service) and asks the world who the caller is and whether the caller may do what it asks. Transports
(gRPC, HTTP) translate ``EmulatorError`` into their wire form: gRPC status, or a JSON error body.

Identity: a bearer token ``emulator:<member>`` (e.g. ``emulator:user:demo@example.com``) names the
caller; tokens minted by GenerateAccessToken are ``emulator:serviceAccount:<email>#<expiry>`` and are
checked for expiry. Permissions come from the emulated IAM policies (project level and
service-account level), using ``ROLE_PERMISSIONS``. A binding takes effect for permission checks only
``iam_propagation_s`` after it was written, like IAM's eventual consistency.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import grpc

from ..protocol import parse_token, token_for

# --------------------------------------------------------------------------------------------------
# Knobs


def _default_quotas() -> dict[str, float]:
    # Compute Engine quotas of a new project: regional ones apply in every region, the
    # *_ALL_REGIONS ones and NETWORKS/FIREWALLS to the whole project. N1 and E2 vCPUs count under
    # CPUS; other machine families have their own metric (compute.cpu_metric).
    return {
        "CPUS": 24.0,
        "N2_CPUS": 8.0,
        "N2D_CPUS": 8.0,
        "C2_CPUS": 8.0,
        "G2_CPUS": 8.0,
        "A2_CPUS": 12.0,
        "CPUS_ALL_REGIONS": 32.0,
        "GPUS_ALL_REGIONS": 0.0,
        "NVIDIA_T4_GPUS": 4.0,
        "NVIDIA_V100_GPUS": 4.0,
        "NVIDIA_P4_GPUS": 4.0,
        "NVIDIA_L4_GPUS": 4.0,
        "NVIDIA_A100_GPUS": 4.0,
        "SSD_TOTAL_GB": 500.0,
        "DISKS_TOTAL_GB": 4096.0,
        "IN_USE_ADDRESSES": 8.0,
        "STATIC_ADDRESSES": 8.0,
        "NETWORKS": 15.0,
        "FIREWALLS": 200.0,
    }


@dataclass
class Knobs:
    """Tunables of the emulator. Durations are in seconds of wall time."""

    project: str = "demo-proj"
    owner: str = "user:demo@example.com"
    # More projects, owned by ``owner`` too (``emulator serve --project A --project B``).
    extra_projects: list[str] = field(default_factory=list)
    latency_ms: float = 0.0  # added to every request of every service
    fault_rate: float = 0.0  # share of requests failed before they take effect (503s, some 429s)
    fault_after_rate: float = 0.0  # share of mutating requests whose response is lost after they took effect
    storage_mib_s: float = 0.0  # Cloud Storage: each connection's throughput cap (0 = loopback speed)
    upload_session_s: float = 7 * 24 * 3600.0  # a resumable upload session's lifetime (GCS: one week)
    iam_propagation_s: float = 0.0
    sa_propagation_s: float = 0.0
    # IAM Credentials learns of a new service account later than IAM does: generateAccessToken
    # answers 404 "Gaia id not found" for this long after the account's creation.
    token_propagation_s: float = 0.0
    operation_s: float = 0.5
    rollout_s: float = 0.5  # a scheduled pod's image pull and container start
    lb_s: float = 0.5
    # Kubelet timings (probe initialDelaySeconds/periodSeconds, restart back-off) are multiplied
    # by this: 0.05 turns a 10 s probe period into 0.5 s of wall time.
    kubelet_scale: float = 0.05
    # TF Serving's own intervals (file-system poll 1 s, load retry 60 s) are multiplied by this.
    tfserving_scale: float = 0.05
    model_load_s: float = 0.3  # how long the TF Serving stand-in takes to load one version
    predict_s_per_step: float = 0.0  # synthetic compute time per diffusion step and image
    autoscale_s: float = 1.0  # cluster autoscaler: unschedulable pod -> a new Ready node
    scale_down_s: float = 60.0  # a node without workload pods for this long is removed
    event_ttl_s: float = 3600.0  # kube-apiserver --event-ttl (1 h by default)
    cron_minute_s: float = 60.0  # how long one minute of a CronJob schedule lasts (kubecron)
    tick_s: float = 0.05  # how often operations and the clusters' controllers advance
    seed: int = 0
    quotas: dict[str, float] = field(default_factory=_default_quotas)
    # The Cloud Billing Catalog answers (False: unreachable, every call UNAVAILABLE).
    billing_catalog: bool = True
    # A new project has a "default" network, unless its organisation sets the policy
    # compute.skipDefaultNetworkCreation (off: the project has no network at all).
    default_network: bool = True
    # Services enabled on the emulated project (Service Usage). Default: what Google enables on a
    # new project (NEW_PROJECT_SERVICES), so none of container, compute, iam, iamcredentials or
    # cloudresourcemanager.
    enabled_services: list[str] = field(default_factory=lambda: list(NEW_PROJECT_SERVICES))
    # After EnableService, the API keeps answering SERVICE_DISABLED for this long: enabling is
    # eventually consistent, "wait a few minutes for the action to propagate" (Google's message).
    service_enable_s: float = 0.0
    # Zones out of capacity: a GKE operation creating nodes there ends in error
    # (GCE_STOCKOUT / ZONE_RESOURCE_POOL_EXHAUSTED), leaving the cluster in ERROR.
    stockout_zones: list[str] = field(default_factory=list)


# The APIs and services Google enables by default on a project created with the console or gcloud:
# https://cloud.google.com/service-usage/docs/enabled-service#default (service name -> title).
NEW_PROJECT_SERVICES: dict[str, str] = {
    "analyticshub.googleapis.com": "Analytics Hub API",
    "bigquery.googleapis.com": "BigQuery API",
    "bigqueryconnection.googleapis.com": "BigQuery Connection API",
    "bigquerydatapolicy.googleapis.com": "BigQuery Data Policy API",
    "bigquerymigration.googleapis.com": "BigQuery Migration API",
    "bigqueryreservation.googleapis.com": "BigQuery Reservation API",
    "bigquerystorage.googleapis.com": "BigQuery Storage API",
    "datastore.googleapis.com": "Cloud Datastore API",
    "dataform.googleapis.com": "Dataform API",
    "dataplex.googleapis.com": "Cloud Dataplex API",
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "sql-component.googleapis.com": "Cloud SQL",
    "storage-component.googleapis.com": "Cloud Storage",
    "storage.googleapis.com": "Cloud Storage API",
    "cloudtrace.googleapis.com": "Cloud Trace API",
    "cloudapis.googleapis.com": "Google Cloud APIs",
    "storage-api.googleapis.com": "Google Cloud Storage JSON API",
    "servicemanagement.googleapis.com": "Service Management API",
    "serviceusage.googleapis.com": "Service Usage API",
}


# --------------------------------------------------------------------------------------------------
# Errors


@dataclass
class EmulatorError(Exception):
    """A GCP-like error. Transports map it: gRPC status code, or HTTP status + JSON body.

    ``rpc_details``: protobuf messages (``google.rpc.ErrorInfo``, ``Help``...) sent along as Google
    sends them: in the gRPC status details, in the REST body's ``error.details``.
    """

    code: grpc.StatusCode
    message: str
    rpc_details: tuple[Any, ...] = field(default=(), kw_only=True)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def http_status(self) -> int:
        return GRPC_TO_HTTP.get(self.code, 500)


GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def not_found(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.ALREADY_EXISTS, message)


def invalid(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def precondition(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.FAILED_PRECONDITION, message)


def service_disabled(service: str, title: str, number: str) -> EmulatorError:
    """Google's answer for a call to an API the project has not enabled (HTTP 403)."""
    from google.rpc import error_details_pb2

    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={number}"
    return EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{title} has not been used in project {number} before or it is disabled. Enable it by visiting "
        f"{url} then retry. If you enabled this API recently, wait a few minutes for the action to "
        "propagate to our systems and retry.",
        rpc_details=(
            error_details_pb2.ErrorInfo(
                reason="SERVICE_DISABLED",
                domain="googleapis.com",
                metadata={
                    "service": service,
                    "consumer": f"projects/{number}",
                    "serviceTitle": title,
                    "containerInfo": number,
                    "activationUrl": url,
                },
            ),
            error_details_pb2.Help(
                links=[
                    error_details_pb2.Help.Link(
                        description="Google developers console API activation", url=url
                    )
                ]
            ),
        ),
    )


def denied(permission: str, resource: str) -> EmulatorError:
    return EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
    )


# --------------------------------------------------------------------------------------------------
# Roles -> permissions (the subset that the calls sdcluster makes need, as GCP defines them)

_CONTAINER_ADMIN = [
    "container.clusters.create",
    "container.clusters.delete",
    "container.clusters.get",
    "container.clusters.list",
    "container.clusters.update",
    "container.clusters.getCredentials",
    "container.operations.get",
    "container.operations.list",
    "container.nodePools.create",  # not a real GCP permission name; kept for readability of logs
    # Kubernetes API (cluster-admin through IAM)
    "container.*",
]

# Compute Engine reads (roles/compute.viewer; basic roles include them).
_COMPUTE_READ = {
    f"compute.{kind}.{verb}"
    for kind in (
        "projects",
        "regions",
        "zones",
        "machineTypes",
        "acceleratorTypes",
        "networks",
        "subnetworks",
        "forwardingRules",
        "addresses",
    )
    for verb in ("get", "list")
} | {"compute.regionOperations.get"}

ROLE_PERMISSIONS: dict[str, set[str]] = {
    "roles/owner": {
        "resourcemanager.projects.get",
        "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy",
        "iam.serviceAccounts.create",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "iam.serviceAccounts.delete",
        "iam.serviceAccounts.update",
        "iam.serviceAccounts.getIamPolicy",
        "iam.serviceAccounts.setIamPolicy",
        "iam.serviceAccounts.actAs",
        "serviceusage.services.get",
        "serviceusage.services.list",
        "serviceusage.services.enable",
        "storage.buckets.create",
        "storage.buckets.delete",
        "storage.buckets.get",
        "storage.buckets.list",
        "storage.buckets.update",
        "storage.buckets.getIamPolicy",
        "storage.buckets.setIamPolicy",
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.update",
        "storage.multipartUploads.create",
        "storage.multipartUploads.abort",
        "storage.multipartUploads.listParts",
        *_CONTAINER_ADMIN,
        "compute.*",
        # NOTE: deliberately no iam.serviceAccounts.getAccessToken: owner alone cannot mint tokens.
    },
    "roles/editor": {
        "resourcemanager.projects.get",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "iam.serviceAccounts.actAs",
        "serviceusage.services.get",
        "serviceusage.services.list",
        *_CONTAINER_ADMIN,
        "compute.*",
    },
    "roles/viewer": {
        "resourcemanager.projects.get",
        "resourcemanager.projects.getIamPolicy",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "container.clusters.get",
        "container.clusters.list",
        "container.operations.get",
        "container.operations.list",
        *_COMPUTE_READ,
    },
    "roles/container.admin": {*_CONTAINER_ADMIN, "resourcemanager.projects.get"},
    "roles/compute.viewer": {*_COMPUTE_READ, "resourcemanager.projects.get"},
    "roles/iam.serviceAccountUser": {
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
    },
    "roles/iam.serviceAccountTokenCreator": {
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.implicitDelegation",
    },
    "roles/iam.serviceAccountAdmin": {
        "iam.serviceAccounts.create",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "iam.serviceAccounts.delete",
        "iam.serviceAccounts.update",
        "iam.serviceAccounts.getIamPolicy",
        "iam.serviceAccounts.setIamPolicy",
    },
    "roles/resourcemanager.projectIamAdmin": {
        "resourcemanager.projects.get",
        "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy",
    },
    "roles/container.defaultNodeServiceAccount": {
        "logging.logEntries.create",
        "monitoring.timeSeries.create",
    },
    "roles/container.nodeServiceAccount": {"logging.logEntries.create", "monitoring.timeSeries.create"},
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectAdmin": {
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.update",
        "storage.multipartUploads.create",
        "storage.multipartUploads.abort",
        "storage.multipartUploads.listParts",
    },
    "roles/storage.admin": {
        "storage.buckets.create",
        "storage.buckets.delete",
        "storage.buckets.get",
        "storage.buckets.list",
        "storage.buckets.update",
        "storage.buckets.getIamPolicy",
        "storage.buckets.setIamPolicy",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.update",
        "storage.multipartUploads.create",
        "storage.multipartUploads.abort",
        "storage.multipartUploads.listParts",
    },
}


def role_grants(role: str, permission: str) -> bool:
    perms = ROLE_PERMISSIONS.get(role, set())
    if permission in perms:
        return True
    service = permission.split(".", 1)[0]
    return f"{service}.*" in perms


# --------------------------------------------------------------------------------------------------
# Request log


@dataclass
class LogEntry:
    time: float
    service: str  # "iam", "iamcredentials", "resourcemanager", "serviceusage", "container", "k8s", "storage", "serving"
    method: str  # e.g. "CreateServiceAccount", "PATCH"
    resource: str  # resource name or path
    caller: str  # member, or "" when unauthenticated
    code: str  # "OK" or a gRPC status name / HTTP status as str
    mutating: bool
    bytes_in: int = 0  # request body bytes the emulator received (Cloud Storage uploads)
    response_lost: bool = False  # the request took effect, then its response was lost (injected)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Identity:
    """Who a token names, and the OAuth scopes it was minted with (None: a user's token, any scope)."""

    member: str
    scopes: tuple[str, ...] | None = None


@dataclass
class CallInfo:
    caller: str = ""
    bytes_in: int = 0  # set by transports that count request bodies


@dataclass
class FaultRule:
    """Fail the next ``count`` requests whose log labels match (``re.search``; "" matches anything).

    ``after=False``: the request fails before it takes effect, with ``code`` (a gRPC status name) or,
    on HTTP services, ``http_status`` when given (e.g. 410 for a resumable upload session).
    ``after=True``: the request takes effect, then its response is lost: gRPC callers get
    UNAVAILABLE, Cloud Storage cuts the response off (``lose="cut"``: half the body, then the
    connection closes) or closes the connection before answering (``lose="reset"``).

    Example: ``world.add_fault(FaultRule(method="^PUT /upload/", after=True))``.
    """

    service: str = ""
    method: str = ""
    resource: str = ""
    count: int = 1
    after: bool = False
    code: str = "UNAVAILABLE"
    http_status: int = 0
    lose: str = "cut"

    def matches(self, service: str, method: str, resource: str) -> bool:
        return bool(
            re.search(self.service, service)
            and re.search(self.method, method)
            and re.search(self.resource, resource)
        )


@dataclass
class InjectedFault(EmulatorError):
    """A fault injected before the request took effect; ``http_status`` overrides the code's status."""

    status: int = 0

    @property
    def http_status(self) -> int:
        return self.status or GRPC_TO_HTTP.get(self.code, 500)


@dataclass
class ResponseLost(EmulatorError):
    """The request took effect and its response is to be lost (``lose``: "cut" or "reset")."""

    lose: str = "cut"


class RequestLog:
    """Every request the emulator answered, in order. Tests assert on it ("zero mutating calls")."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()

    def add(self, entry: LogEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def mutating(self) -> list[LogEntry]:
        return [e for e in self.entries() if e.mutating and e.code == "OK"]


# --------------------------------------------------------------------------------------------------
# Hooks between services (the GKE service starts a Kubernetes API when a cluster becomes RUNNING)


class KubeHub(Protocol):
    def start_cluster(self, key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        """Start the Kubernetes API of cluster ``key`` (``projects/P/locations/Z/clusters/N``).

        ``nodes``: one dict per node pool: {"name", "machine_type", "node_count", "cpus",
        "memory_mib", "accelerators": int}, optionally "zones", "labels", "spot", "preemptible",
        "accelerator_type", "workload_metadata" ("GKE_METADATA": pods get their KSA's identity),
        "service_account", "oauth_scopes" (the node's identity otherwise), "autoscaling" ({"enabled",
        "min_node_count", "max_node_count"} per zone), "instance_group".
        Returns (endpoint "127.0.0.1:PORT", CA certificate PEM).
        """
        ...

    def update_nodes(self, key: str, nodes: list[dict[str, Any]]) -> None: ...

    def stop_cluster(self, key: str) -> None: ...

    def prepare(self) -> None:
        """A cluster is being created: load what its API needs while the operation runs, so that
        its API answers at full speed once the operation is DONE, as a real apiserver does."""
        ...


# --------------------------------------------------------------------------------------------------
# The world


class World:
    """State + rules shared by every emulated service. Thread-safe through ``self.lock``."""

    def __init__(self, knobs: Knobs | None = None, state_file: str | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.lock = threading.RLock()
        self.rng = random.Random(self.knobs.seed)
        self.log = RequestLog()
        self.fault_rules: list[FaultRule] = []
        self.state_file = state_file
        self.kube: KubeHub | None = None
        # Observers called after each successful mutation (persistence uses one).
        self._on_change: list[Callable[[], None]] = []
        self.data: dict[str, Any] = {}
        if state_file and os.path.exists(state_file):
            with open(state_file, encoding="utf-8") as f:
                self.data = json.load(f)
        for project in (self.knobs.project, *self.knobs.extra_projects):
            self._ensure_project(project, self.knobs.owner)

    # ---- time ---------------------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        return time.time()

    # ---- projects -------------------------------------------------------------------------------
    def _ensure_project(self, project_id: str, owner: str) -> None:
        projects = self.data.setdefault("projects", {})
        if project_id not in projects:
            number = str(100000000000 + len(projects) + 1 + self.rng.randrange(10**9))
            projects[project_id] = {
                "project_id": project_id,
                "number": number,
                "create_time": self.now(),
                "enabled_services": list(self.knobs.enabled_services),
                "quotas": dict(self.knobs.quotas),
            }
            # The owner binding predates everything: it is already propagated.
            self.data.setdefault("policies", {})[f"projects/{project_id}"] = {
                "version": 1,
                "etag_n": 1,
                "bindings": [{"role": "roles/owner", "members": [owner]}],
                "added": {},
            }

    def project(self, project_id_or_number: str) -> dict[str, Any]:
        """The project by id or number; NOT_FOUND-like PERMISSION_DENIED as GCP answers otherwise."""
        for p in self.data.get("projects", {}).values():
            if project_id_or_number in (p["project_id"], p["number"]):
                return p  # type: ignore[no-any-return]
        raise EmulatorError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"Permission denied on resource project {project_id_or_number} (or it may not exist).",
        )

    # ---- Workload Identity pools -------------------------------------------------------------------
    def add_workload_pool(self, pool: str) -> None:
        """Record GKE's pool ``PROJECT.svc.id.goog``: it comes into being with the project's first
        cluster that has Workload Identity, and stays."""
        with self.lock:
            p = self.project(pool.removesuffix(".svc.id.goog"))
            if pool not in p.setdefault("workload_pools", []):
                p["workload_pools"].append(pool)
                self.changed()

    def has_workload_pool(self, number: str, pool: str) -> bool:
        """Whether ``projects/NUMBER/locations/global/workloadIdentityPools/POOL`` exists."""
        with self.lock:
            try:
                p = self.project(number)
            except EmulatorError:
                return False
            return p["number"] == number and pool in p.get("workload_pools", [])

    _SERVICE_TITLES = {
        "container.googleapis.com": "Kubernetes Engine API",
        "iam.googleapis.com": "Identity and Access Management (IAM) API",
        "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
        "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
        "storage.googleapis.com": "Cloud Storage API",
        "compute.googleapis.com": "Compute Engine API",
        "serviceusage.googleapis.com": "Service Usage API",
    }

    def require_service(self, project_id: str, service: str) -> None:
        """PERMISSION_DENIED as Google words it unless ``service`` is enabled (and its enabling has
        propagated: ``service_enable_s``), with the ``SERVICE_DISABLED`` ErrorInfo (reason, domain,
        metadata) and the activation link."""
        p = self.project(project_id)
        enabled_at = p.get("enabled_at", {}).get(service, 0.0)
        if service not in p["enabled_services"] or self.now() < enabled_at + self.knobs.service_enable_s:
            raise service_disabled(service, self.service_titles().get(service, service), p["number"])

    def enable_services(self, project: dict[str, Any], services: list[str]) -> None:
        """Turn ``services`` on (Service Usage): they answer once ``service_enable_s`` has passed."""
        with self.lock:
            for s in services:
                if s not in project["enabled_services"]:
                    project["enabled_services"].append(s)
                    project.setdefault("enabled_at", {})[s] = self.now()
            self.changed()

    @classmethod
    def service_titles(cls) -> dict[str, str]:
        return {**NEW_PROJECT_SERVICES, **cls._SERVICE_TITLES}

    # ---- IAM policies (project and service-account level) ----------------------------------------
    # A policy is stored as {"version", "etag_n", "bindings": [{"role", "members"}], "added": {
    # "role|member": time_written}} under data["policies"][resource], where resource is
    # "projects/P" or "projects/P/serviceAccounts/EMAIL".

    def policy(self, resource: str) -> dict[str, Any]:
        return self.data.setdefault("policies", {}).setdefault(  # type: ignore[no-any-return]
            resource, {"version": 1, "etag_n": 0, "bindings": [], "added": {}}
        )

    @staticmethod
    def etag_of(policy: dict[str, Any]) -> bytes:
        return f"BwY{policy['etag_n']:08d}".encode()

    def set_policy(
        self, resource: str, bindings: list[dict[str, Any]], etag: bytes, version: int = 1
    ) -> dict[str, Any]:
        """Replace the policy's bindings, compare-and-swap on ``etag`` (empty etag = blind write).

        A stale etag -> ABORTED (what GCP returns for a concurrent policy change).
        """
        with self.lock:
            pol = self.policy(resource)
            if etag and etag != self.etag_of(pol):
                raise EmulatorError(
                    grpc.StatusCode.ABORTED,
                    "There were concurrent policy changes. Please retry the whole read-modify-write "
                    "with exponential backoff.",
                )
            old = {(b["role"], m) for b in pol["bindings"] for m in b["members"]}
            now = self.now()
            added = {k: v for k, v in pol["added"].items() if tuple(k.split("|", 1)) in old}
            clean: list[dict[str, Any]] = []
            for b in bindings:
                members = sorted(set(b.get("members", [])))
                if not members:
                    continue
                clean.append({"role": b["role"], "members": members})
                for m in members:
                    if (b["role"], m) not in old:
                        added[f"{b['role']}|{m}"] = now
            # Merge duplicate roles as GCP does on write.
            merged: dict[str, set[str]] = {}
            for b in clean:
                merged.setdefault(b["role"], set()).update(b["members"])
            pol["bindings"] = [{"role": r, "members": sorted(ms)} for r, ms in merged.items()]
            pol["added"] = {
                k: v for k, v in added.items() if k.split("|", 1)[1] in merged.get(k.split("|", 1)[0], set())
            }
            pol["version"] = version
            pol["etag_n"] += 1
            self.changed()
            return pol

    def _has_permission_in(self, resource: str, member: str, permission: str) -> bool:
        pol = self.data.get("policies", {}).get(resource)
        if not pol:
            return False
        deadline = self.now() - self.knobs.iam_propagation_s
        for b in pol["bindings"]:
            if member in b["members"] and role_grants(b["role"], permission):
                t = pol["added"].get(f"{b['role']}|{member}")
                if t is None or t <= deadline:
                    return True
        return False

    def has_permission(
        self, member: str, permission: str, project: str, service_account: str | None = None
    ) -> bool:
        """Project-level bindings, plus the service account's own policy when the target is one."""
        with self.lock:
            if self._has_permission_in(f"projects/{project}", member, permission):
                return True
            return bool(service_account) and self._has_permission_in(
                f"projects/{project}/serviceAccounts/{service_account}", member, permission
            )

    def check(
        self, member: str, permission: str, project: str, resource: str, service_account: str | None = None
    ) -> None:
        """Raise PERMISSION_DENIED with GCP's message unless ``member`` holds ``permission``."""
        if not self.has_permission(member, permission, project, service_account):
            raise denied(permission, resource)

    # ---- identity -------------------------------------------------------------------------------
    def mint_token(
        self, member: str, lifetime_s: float, scopes: list[str] | None = None
    ) -> tuple[str, float]:
        """A token ``emulator:<member>#<expiry>[#<scope>,<scope>...]`` and its expiry.

        The scopes travel in the token (Google keeps them server-side) so that services can check
        them: Cloud Storage wants a storage or cloud-platform scope, GKE names a service account by
        its email only when the token has the userinfo.email scope.
        """
        expiry = self.now() + lifetime_s
        return token_for(member, expiry, scopes), expiry

    def authenticate(self, authorization: str | None) -> str:
        """Return the member a bearer token names; UNAUTHENTICATED otherwise."""
        return self.identify(authorization).member

    def identify(self, authorization: str | None) -> Identity:
        """The member and OAuth scopes of a bearer token (scopes None: not recorded, i.e. any)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise EmulatorError(
                grpc.StatusCode.UNAUTHENTICATED,
                "Request is missing required authentication credential. Expected OAuth 2 access token.",
            )
        parsed = parse_token(authorization.split(" ", 1)[1].strip())
        if parsed is None:
            raise EmulatorError(
                grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials."
            )
        member, expiry, scopes = parsed
        if expiry is not None and expiry < self.now():
            raise EmulatorError(
                grpc.StatusCode.UNAUTHENTICATED,
                "Request had invalid authentication credentials (token expired).",
            )
        return Identity(member, scopes)

    # ---- faults and latency -----------------------------------------------------------------------
    def add_fault(self, rule: FaultRule) -> None:
        """Target the next ``rule.count`` matching requests (see FaultRule)."""
        with self.lock:
            self.fault_rules.append(rule)

    def _take_rule(self, after: bool, service: str, method: str, resource: str) -> FaultRule | None:
        with self.lock:
            for rule in self.fault_rules:
                if rule.after == after and rule.count > 0 and rule.matches(service, method, resource):
                    rule.count -= 1
                    if rule.count == 0:
                        self.fault_rules.remove(rule)
                    return rule
        return None

    def before_call(self, service: str = "", method: str = "", resource: str = "") -> None:
        """Apply latency, then maybe inject a transient fault: a targeted rule (``add_fault``) first,
        else at ``fault_rate`` like a real service under load: mostly UNAVAILABLE (HTTP 503),
        sometimes rate limited (RESOURCE_EXHAUSTED, HTTP 429)."""
        if self.knobs.latency_ms:
            time.sleep(self.knobs.latency_ms / 1000.0)
        rule = self._take_rule(False, service, method, resource)
        if rule is not None:
            raise InjectedFault(
                grpc.StatusCode[rule.code], f"{rule.code} (injected for {method})", rule.http_status
            )
        if self.knobs.fault_rate:
            with self.lock:
                roll = self.rng.random()
            if roll < self.knobs.fault_rate / 4:
                raise EmulatorError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "Rate limit exceeded: too many requests (injected)."
                )
            if roll < self.knobs.fault_rate:
                raise EmulatorError(
                    grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable (injected)."
                )

    def _lost_after(self, service: str, method: str, resource: str, mutating: bool) -> str:
        """ "cut"/"reset" when this request's response is to be lost after it took effect, else ""."""
        rule = self._take_rule(True, service, method, resource)
        if rule is not None:
            return rule.lose
        if mutating and self.knobs.fault_after_rate:
            with self.lock:
                roll, kind = self.rng.random(), self.rng.choice(("cut", "reset"))
            if roll < self.knobs.fault_after_rate:
                return kind
        return ""

    def record(
        self,
        service: str,
        method: str,
        resource: str,
        caller: str,
        code: str,
        mutating: bool,
        bytes_in: int = 0,
        response_lost: bool = False,
    ) -> None:
        self.log.add(
            LogEntry(self.now(), service, method, resource, caller, code, mutating, bytes_in, response_lost)
        )

    @contextmanager
    def call(self, service: str, method: str, resource: str, mutating: bool) -> Iterator[CallInfo]:
        """Wrap one request: latency, fault injection, and logging of the outcome with its caller.

        A fault "after" the request (``fault_after_rate``, ``FaultRule(after=True)``) lets the block
        finish (the request takes effect), logs it as OK with ``response_lost``, then raises
        ``ResponseLost``: the transport answers as if the connection had dropped.

        Example::

            with world.call("iam", "GetServiceAccount", name, mutating=False) as info:
                info.caller = world.authenticate(authorization)
                ...
        """
        info = CallInfo()
        try:
            self.before_call(service, method, resource)
            yield info
        except EmulatorError as e:
            self.record(service, method, resource, info.caller, e.code.name, mutating, info.bytes_in)
            raise
        except Exception:
            self.record(service, method, resource, info.caller, "INTERNAL", mutating, info.bytes_in)
            raise
        lose = self._lost_after(service, method, resource, mutating)
        self.record(service, method, resource, info.caller, "OK", mutating, info.bytes_in, bool(lose))
        if lose:
            raise ResponseLost(
                grpc.StatusCode.UNAVAILABLE, "The connection was lost before the response (injected).", lose
            )

    # ---- persistence --------------------------------------------------------------------------------
    def on_change(self, fn: Callable[[], None]) -> None:
        self._on_change.append(fn)

    def changed(self) -> None:
        for fn in self._on_change:
            fn()
        self.save()

    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            text = json.dumps(self.data, indent=1, sort_keys=True, default=str)
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_file)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.data)
