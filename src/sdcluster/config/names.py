"""Google resource names derived from configuration values: one home for each format.

Example::

    service_account_email("gke-admin", "demo-proj")   # 'gke-admin@demo-proj.iam.gserviceaccount.com'
    key = ClusterKey("demo-proj", "us-central1-c", "sd-cluster")
    key.path                                          # 'projects/demo-proj/locations/us-central1-c/clusters/sd-cluster'
    ClusterKey.parse(key.pool_path("sd-node-pool"))   # (key, 'sd-node-pool')
    project_of("projects/demo-proj/services/iam.googleapis.com")  # 'demo-proj'
    project_of("gs://b roles/r principal://iam.googleapis.com/projects/1/locations/global/"
               "workloadIdentityPools/demo-proj.svc.id.goog/subject/ns/default/sa/tf-serving")  # 'demo-proj'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SA_DOMAIN = "iam.gserviceaccount.com"


def service_account_email(account_id: str, project: str) -> str:
    return f"{account_id}@{project}.{SA_DOMAIN}"


def service_account_parts(email: str) -> tuple[str, str] | None:
    """(account id, project) of a user-managed service account email; None for other emails."""
    account, _, domain = email.partition("@")
    project, dot, rest = domain.partition(".")
    return (account, project) if dot and rest == SA_DOMAIN and account else None


def short_role(role: str) -> str:
    """``roles/container.admin`` -> ``container.admin`` (the form addresses use)."""
    return role.removeprefix("roles/")


def short_member(member: str, project: str) -> str:
    """A member as addresses name it: a service account of ``project`` by its id, a user or another
    account by its email, anything else as it is."""
    kind, _, who = member.partition(":")
    parts = service_account_parts(who) if kind == "serviceAccount" else None
    if parts is not None and parts[1] == project:
        return parts[0]
    return who if kind in ("user", "serviceAccount", "group") and who else member


_PROJECT_RE = re.compile(r"(?:^|[\s/])projects/(?P<project>[^/\s]+)")
# A Workload Identity principal names its project twice: by number in the path, by id in the pool
# ``PROJECT_ID.svc.id.goog`` (https://cloud.google.com/kubernetes-engine/docs/concepts/workload-identity).
_PRINCIPAL_RE = re.compile(
    r"principal(?:Set)?://iam\.googleapis\.com/projects/[^/\s]+/locations/global/"
    r"workloadIdentityPools/(?P<project>[^/\s]+)\.svc\.id\.goog\S*"
)


def project_of(resource_id: str) -> str | None:
    """The project a resource id names: ``projects/P/...`` anywhere in it, or a user-managed service
    account's email; None when it names none (a bucket: ``gs://B``)."""
    pool = _PRINCIPAL_RE.search(resource_id)
    m = _PROJECT_RE.search(_PRINCIPAL_RE.sub(" ", resource_id))
    if m is not None:
        return m["project"]
    if pool is not None:
        return pool["project"]
    parts = service_account_parts(resource_id)
    return parts[1] if parts else None


_CLUSTER_RE = re.compile(
    r"projects/(?P<project>[^/]+)/(?:locations|zones)/(?P<location>[^/]+)/clusters/(?P<name>[^/]+)"
    r"(?:/nodePools/(?P<pool>[^/]+))?"
)


@dataclass(frozen=True)
class ClusterKey:
    """A GKE cluster's resource name ``projects/P/locations/L/clusters/C``, as data."""

    project: str
    location: str
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.name}"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def pool_path(self, pool: str) -> str:
        return f"{self.path}/nodePools/{pool}"

    @classmethod
    def parse(cls, text: str) -> tuple[ClusterKey, str | None]:
        """The cluster (and node pool, if named) in a resource name or self link; ValueError otherwise."""
        m = _CLUSTER_RE.search(text)
        if m is None:
            raise ValueError(f"not a GKE cluster name: {text!r}")
        return cls(m["project"], m["location"], m["name"]), m["pool"]

    def __str__(self) -> str:
        return self.path
