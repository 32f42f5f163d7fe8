"""Google resource names derived from configuration values: one home for each format.

Example::

    service_account_email("gke-admin", "demo-proj")   # 'gke-admin@demo-proj.iam.gserviceaccount.com'
    key = ClusterKey("demo-proj", "us-central1-c", "sd-cluster")
    key.path                                          # 'projects/demo-proj/locations/us-central1-c/clusters/sd-cluster'
    ClusterKey.parse(key.pool_path("sd-node-pool"))   # (key, 'sd-node-pool')
    project_of("projects/demo-proj/services/iam.googleapis.com")  # 'demo-proj'
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


_PROJECT_RE = re.compile(r"(?:^|[\s/])projects/(?P<project>[^/\s]+)")


def project_of(resource_id: str) -> str | None:
    """The project a resource id names: ``projects/P/...`` anywhere in it, or a user-managed service
    account's email; None when it names none (a bucket: ``gs://B``)."""
    m = _PROJECT_RE.search(resource_id)
    if m is not None:
        return m["project"]
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
