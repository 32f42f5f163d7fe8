"""The resource kinds the emulated apiserver serves (see ``kube``), and how request paths name them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The newest Kubernetes minor the installed kubernetes-validate ships schemas for; writes are
# validated against exactly this version, and /version reports it.
KUBERNETES_VERSION = "1.37"
GIT_VERSION = f"v{KUBERNETES_VERSION}.0-gke.1000"

LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

# --------------------------------------------------------------------------------------------------
# Resource kinds


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    group: str
    version: str
    iam: str  # the GKE IAM resource name: container.<iam>.<verb>
    namespaced: bool = True
    writable: bool = True
    generation: bool = False  # whether metadata.generation tracks spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``deployments.apps`` / ``configmaps``: how errors name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


KINDS = [
    Kind("Namespace", "namespaces", "", "v1", "namespaces", namespaced=False),
    Kind("ConfigMap", "configmaps", "", "v1", "configMaps"),
    Kind("ServiceAccount", "serviceaccounts", "", "v1", "serviceAccounts"),
    Kind("Service", "services", "", "v1", "services"),
    Kind("Pod", "pods", "", "v1", "pods", writable=False),
    Kind("Event", "events", "", "v1", "events", writable=False),
    Kind("Node", "nodes", "", "v1", "nodes", namespaced=False, writable=False),
    Kind("Deployment", "deployments", "apps", "v1", "deployments", generation=True),
    Kind("ReplicaSet", "replicasets", "apps", "v1", "replicaSets", writable=False),
    Kind(
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "autoscaling",
        "v2",
        "horizontalPodAutoscalers",
        generation=True,
    ),
]
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
STORED = [k.plural for k in KINDS if k.writable]
BY_PLURAL = {k.plural: k for k in KINDS}

PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|log))?$"
)
