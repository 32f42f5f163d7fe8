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


# Verbs as discovery lists them: what the emulator serves for a kind.
STORED_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_VERBS = ("get", "list", "watch")


@dataclass(frozen=True)
class Subresource:
    """``deployments/scale`` and the like, as discovery lists them."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""  # the subresource's own group/version when it differs (Scale is autoscaling/v1)
    version: str = ""


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    group: str
    version: str
    iam: str  # the GKE IAM resource name: container.<iam>.<verb>
    namespaced: bool = True
    writable: bool = True  # stored: created, replaced, patched and deleted through the API
    generation: bool = False  # whether metadata.generation tracks spec changes
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STORED_VERBS
    subresources: tuple[Subresource, ...] = ()
    # Field selector labels beyond metadata.name and metadata.namespace (upstream's per-kind
    # field label conversion functions).
    fields: tuple[str, ...] = ()

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

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def listed(self) -> bool:
        """Whether the kind has objects to list and watch (a review is only created)."""
        return "list" in self.verbs

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


_STATUS = Subresource("status", "", ("get",))
_ALL = ("all",)

KINDS = [
    Kind(
        "Namespace",
        "namespaces",
        "",
        "v1",
        "namespaces",
        namespaced=False,
        short_names=("ns",),
        subresources=(_STATUS,),
        fields=("status.phase",),
    ),
    Kind("ConfigMap", "configmaps", "", "v1", "configMaps", short_names=("cm",)),
    Kind("Secret", "secrets", "", "v1", "secrets", fields=("type",)),
    Kind("ServiceAccount", "serviceaccounts", "", "v1", "serviceAccounts", short_names=("sa",)),
    Kind(
        "Service",
        "services",
        "",
        "v1",
        "services",
        short_names=("svc",),
        categories=_ALL,
        subresources=(_STATUS,),
        fields=("spec.clusterIP", "spec.type"),
    ),
    Kind(
        "Pod",
        "pods",
        "",
        "v1",
        "pods",
        writable=False,
        short_names=("po",),
        categories=_ALL,
        verbs=("delete", "get", "list", "watch"),
        subresources=(
            _STATUS,
            Subresource("log", "Pod", ("get",)),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
        ),
        fields=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ),
    ),
    Kind(
        "Event",
        "events",
        "",
        "v1",
        "events",
        writable=False,
        short_names=("ev",),
        verbs=READ_VERBS,
        fields=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ),
    ),
    Kind(
        "Node",
        "nodes",
        "",
        "v1",
        "nodes",
        namespaced=False,
        writable=False,
        short_names=("no",),
        verbs=READ_VERBS,
        subresources=(_STATUS,),
        fields=("spec.unschedulable",),
    ),
    Kind(
        "Deployment",
        "deployments",
        "apps",
        "v1",
        "deployments",
        generation=True,
        short_names=("deploy",),
        categories=_ALL,
        subresources=(
            _STATUS,
            Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"),
        ),
    ),
    Kind(
        "ReplicaSet",
        "replicasets",
        "apps",
        "v1",
        "replicaSets",
        writable=False,
        short_names=("rs",),
        categories=_ALL,
        verbs=READ_VERBS,
        subresources=(_STATUS,),
        fields=("status.replicas",),
    ),
    Kind(
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "autoscaling",
        "v2",
        "horizontalPodAutoscalers",
        generation=True,
        short_names=("hpa",),
        categories=_ALL,
        subresources=(_STATUS,),
    ),
    Kind("Role", "roles", "rbac.authorization.k8s.io", "v1", "roles"),
    Kind("RoleBinding", "rolebindings", "rbac.authorization.k8s.io", "v1", "roleBindings"),
    Kind(
        "CronJob",
        "cronjobs",
        "batch",
        "v1",
        "cronJobs",
        generation=True,
        short_names=("cj",),
        categories=_ALL,
        subresources=(_STATUS,),
    ),
    Kind(
        "EndpointSlice",
        "endpointslices",
        "discovery.k8s.io",
        "v1",
        "endpointSlices",
        writable=False,
        verbs=READ_VERBS,
    ),
    Kind(
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "authorization.k8s.io",
        "v1",
        "selfSubjectAccessReviews",
        namespaced=False,
        writable=False,
        verbs=("create",),
    ),
]
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
STORED = [k.plural for k in KINDS if k.writable]
BY_PLURAL = {k.plural: k for k in KINDS}
BY_KIND = {k.kind: k for k in KINDS}

PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
