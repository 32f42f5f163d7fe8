"""A Kubernetes API server per emulated GKE cluster, spoken to by the official ``kubernetes`` client.

The GKE service calls ``Hub.start_cluster(key, nodes)`` when a cluster becomes RUNNING and gets back
``(endpoint, ca_pem)``: an HTTPS endpoint on 127.0.0.1 whose certificate (for IP 127.0.0.1) is issued
by a per-cluster CA made with trustme. What the API does:

- **identity and permission** like GKE: bearer tokens name the caller (``World.authenticate``); IAM
  permissions on the project (``container.deployments.create``...) decide (401 / 403 ``Status``);
- **resources**: namespaces, configmaps, serviceaccounts, services, apps/v1 deployments,
  autoscaling/v2 horizontalpodautoscalers; read-only replicasets, pods (deletable: a restart by
  hand), ``pods/log``, events and nodes kept by the controllers (``kubecontrol``); verbs get, list
  (``labelSelector``, ``fieldSelector``), create, replace, delete, and patch: server-side apply
  (``application/apply-patch+yaml``, ``fieldManager``, ``force``), merge, strategic merge and JSON
  patch, with ``metadata.managedFields`` kept as upstream does (``kubemerge``);
- **identity** of service accounts as GKE sees them: by email only with the ``userinfo.email`` scope
  on the token, else by their numeric unique ID;
- **validation** of every write against the upstream OpenAPI schemas (kubernetes-validate, strict,
  Kubernetes ``KUBERNETES_VERSION``) plus the semantic checks users hit (selector vs labels,
  quantities, immutable fields) -> 422 ``Invalid``;
- **controllers** (``Hub.tick`` -> ``kubecontrol.ClusterSim``): the Deployment and ReplicaSet
  controllers, the scheduler, the kubelet (``kubelet``: image pulls, probes, restarts, logs), GKE's
  cluster autoscaler and event aggregation with a TTL; LoadBalancer Services get a loopback IP
  (127.0.X.Y, X >= 1) after ``lb_s`` and, when deleted, linger with the
  ``service.kubernetes.io/load-balancer-cleanup`` finalizer for ``lb_s``;
- **TF Serving**: a ``tensorflow/serving`` container runs a TF Serving 2.11 process (``tfprocess``)
  that reads its model from the emulated Cloud Storage as the pod's identity (polls run outside
  ``world.lock``); a LoadBalancer Service with a ready TF Serving pod behind it gets a stand-in
  (``tfserving.ModelServer``) on its IP and port, answering from that pod's process.

State lives in ``world.data["kube"][key]``: ``endpoint`` (current ``127.0.0.1:PORT``; the port may
change after a restart from a state file, so read it from there or from ``Hub.endpoint_of(key)``),
``ca_cert``/``ca_key`` (PEM; the CA survives a restart), ``nodes`` (the pools, from GKE), ``objects``,
``rv`` and the controllers' records (``node_records``, ``replicasets``, ``pods``, ``events``,
``scale_ups``, ``lbs``).

Example::

    hub = Hub(world)
    endpoint, ca_pem = hub.start_cluster("projects/p/locations/us-central1-c/clusters/c", [
        {"name": "pool", "machine_type": "n2-standard-4", "node_count": 1, "cpus": 4,
         "memory_mib": 16384, "accelerators": 0}])
"""

from __future__ import annotations

import copy
import json
import re
import socket
import ssl
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from . import kubecontrol, kubelet, kubemerge, kubesim, tfprocess, tfserving
from .core import EmulatorError, Identity, World

# The newest Kubernetes minor the installed kubernetes-validate ships schemas for; writes are
# validated against exactly this version, and /version reports it.
KUBERNETES_VERSION = "1.37"
GIT_VERSION = f"v{KUBERNETES_VERSION}.0-gke.1000"

LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
TF_SERVING_REST_PORT = 8501
MODEL_RETRY_S = 2.0  # a TF Serving stand-in that failed to start (address busy) is retried after this
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Load balancer IPs are loopback addresses shared by every emulator on the machine (each serves its
# TF Serving stand-in on <ip>:8501): an IP is claimed process-wide by the Hub that allocated it, and
# one whose port 8501 is already bound (another process's emulator) is skipped.
_CLAIMED_LB_IPS: dict[str, int] = {}  # ip -> id() of the Hub holding it
_CLAIMED_LOCK = threading.Lock()


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
_BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
_STORED = [k.plural for k in KINDS if k.writable]
_BY_PLURAL = {k.plural: k for k in KINDS}

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|log))?$"
)


# --------------------------------------------------------------------------------------------------
# Errors as the apiserver words them (``Status`` bodies)


@dataclass
class KubeError(EmulatorError):
    """An apiserver failure: HTTP ``status``, ``reason`` (NotFound, Conflict...) and ``details``."""

    status: int = 500
    reason: str = "InternalError"
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status,
        }
        if self.details:
            out["details"] = self.details
        return out


_GRPC_OF = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def kube_error(status: int, reason: str, message: str, details: dict[str, Any] | None = None) -> KubeError:
    code = _GRPC_OF.get(status, grpc.StatusCode.INTERNAL)
    if reason == "AlreadyExists":
        code = grpc.StatusCode.ALREADY_EXISTS
    return KubeError(code, message, status, reason, details or {})


def _details(kind: Kind, name: str) -> dict[str, Any]:
    return (
        {"name": name, "group": kind.group, "kind": kind.plural}
        if name
        else {"group": kind.group, "kind": kind.plural}
    )


def not_found(kind: Kind, name: str) -> KubeError:
    return kube_error(404, "NotFound", f'{kind.resource} "{name}" not found', _details(kind, name))


def bad_request(message: str) -> KubeError:
    return kube_error(400, "BadRequest", message)


def conflict_modified(kind: Kind, name: str) -> KubeError:
    return kube_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; please apply '
        "your changes to the latest version and try again",
        _details(kind, name),
    )


@dataclass
class Invalid:
    """One field error: ``spec.replicas: Invalid value: "x": ...``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


def invalid(kind: Kind, name: str, errors: list[Invalid]) -> KubeError:
    text = ", ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    if len(errors) > 1:
        text = f"[{text}]"
    causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    return kube_error(
        422,
        "Invalid",
        f'{kind.qualified_kind} "{name}" is invalid: {text}',
        {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes},
    )


def _value(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


# --------------------------------------------------------------------------------------------------
# Validation: upstream schemas (strict) + the semantic checks the apiserver makes


def validate_schema(kind: Kind, obj: dict[str, Any]) -> None:
    """422 Invalid unless ``obj`` matches the upstream schema of ``KUBERNETES_VERSION`` (strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = _field_path(list(e.path))
        unknown = (
            re.findall(r"'([^']+)' (?:was|were) unexpected", e.message)
            if e.validator == "additionalProperties"
            else []
        )
        name = str((obj.get("metadata") or {}).get("name", ""))
        if unknown:
            errs = [
                Invalid(_join(path, u), f'unknown field "{_join(path, u)}"', "FieldValueNotSupported")
                for u in unknown
            ]
        elif e.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", e.message)
            errs = [Invalid(_join(path, m), "Required value", "FieldValueRequired") for m in missing]
        else:
            errs = [Invalid(path, f"Invalid value: {_value(e.instance)}: {e.message}")]
        raise invalid(kind, name, errs) from None


def _field_path(parts: list[Any]) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _name_errors(kind: Kind, name: str) -> list[Invalid]:
    if kind.kind == "Service":
        if not _DNS1035_LABEL.match(name) or len(name) > 63:
            return [
                Invalid(
                    "metadata.name",
                    f'Invalid value: "{name}": a DNS-1035 label must consist of lower case alphanumeric characters '
                    "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
                    "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                )
            ]
    elif kind.kind == "Namespace":
        if not _DNS1123_LABEL.match(name) or len(name) > 63:
            return [
                Invalid(
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                    "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )
            ]
    elif not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [
            Invalid(
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )
        ]
    return []


def semantic_errors(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Invalid]:
    """The checks beyond the schema that users run into (upstream's ValidateDeployment & co)."""
    errs = _name_errors(kind, str(obj["metadata"]["name"]))
    spec = obj.get("spec") or {}
    if kind.kind == "Deployment":
        errs += _deployment_errors(spec, (old or {}).get("spec"))
    elif kind.kind == "Service":
        errs += _service_errors(spec, (old or {}).get("spec"))
    elif kind.kind == "HorizontalPodAutoscaler":
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if hi < 1:
            errs.append(
                Invalid("spec.maxReplicas", f"Invalid value: {hi}: must be greater than or equal to 1")
            )
        elif lo > hi:
            errs.append(
                Invalid("spec.minReplicas", f"Invalid value: {lo}: must be less than or equal to maxReplicas")
            )
    elif kind.kind == "ConfigMap":
        for section in ("data", "binaryData"):
            for key in obj.get(section) or {}:
                if not _CONFIG_KEY.match(key):
                    errs.append(
                        Invalid(
                            f"{section}[{key}]",
                            f'Invalid value: "{key}": a valid config key must consist of alphanumeric characters, '
                            "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                            "validation is '[-._a-zA-Z0-9]+')",
                        )
                    )
        if len(json.dumps(obj.get("data") or {})) + len(json.dumps(obj.get("binaryData") or {})) > 1048576:
            errs.append(Invalid("", "Too long: must have at most 1048576 bytes", "FieldValueTooLong"))
    return errs


def _deployment_errors(spec: dict[str, Any], old_spec: dict[str, Any] | None) -> list[Invalid]:
    errs = []
    replicas = spec.get("replicas", 1)
    if replicas < 0:
        errs.append(
            Invalid("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    selector = spec.get("selector") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    match = selector.get("matchLabels") or {}
    if not match and not selector.get("matchExpressions"):
        errs.append(
            Invalid(
                "spec.selector",
                f"Invalid value: {_value(selector)}: empty selector is invalid for deployment",
            )
        )
    elif any(labels.get(k) != v for k, v in match.items()):
        errs.append(
            Invalid(
                "spec.template.metadata.labels",
                f"Invalid value: {_value(labels)}: `selector` does not match template `labels`",
            )
        )
    if old_spec is not None and old_spec.get("selector") != spec.get("selector"):
        errs.append(Invalid("spec.selector", f"Invalid value: {_value(selector)}: field is immutable"))
    errs += _pod_spec_errors(template.get("spec") or {}, "spec.template.spec")
    return errs


def _pod_spec_errors(pod: dict[str, Any], at: str) -> list[Invalid]:
    containers = pod.get("containers") or []
    if not containers:
        return [Invalid(f"{at}.containers", "Required value", "FieldValueRequired")]
    errs, seen = [], set()
    for i, c in enumerate(containers):
        where = f"{at}.containers[{i}]"
        if c["name"] in seen:
            errs.append(Invalid(f"{where}.name", f'Duplicate value: "{c["name"]}"', "FieldValueDuplicate"))
        seen.add(c["name"])
        if not _DNS1123_LABEL.match(c["name"]):
            errs.append(
                Invalid(
                    f"{where}.name",
                    f"Invalid value: \"{c['name']}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
                )
            )
        if not c.get("image"):
            errs.append(Invalid(f"{where}.image", "Required value", "FieldValueRequired"))
        errs += _resource_errors(c.get("resources") or {}, f"{where}.resources")
    return errs


def _resource_errors(res: dict[str, Any], at: str) -> list[Invalid]:
    errs, parsed = [], {}
    for section in ("requests", "limits"):
        for rname, q in (res.get(section) or {}).items():
            try:
                parsed[(section, rname)] = kubesim.parse_quantity(q)
            except kubesim.QuantityError:
                errs.append(
                    Invalid(
                        f"{at}.{section}[{rname}]",
                        f"Invalid value: {_value(q)}: quantities must match the regular expression "
                        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )
                )
    for (section, rname), v in parsed.items():
        limit = parsed.get(("limits", rname))
        if section == "requests" and limit is not None and v > limit:
            errs.append(
                Invalid(
                    f"{at}.requests",
                    f"Invalid value: {_value(res['requests'][rname])}: must be less than or equal to {rname} limit "
                    f"of {res['limits'][rname]}",
                )
            )
    return errs


_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _service_errors(spec: dict[str, Any], old_spec: dict[str, Any] | None) -> list[Invalid]:
    errs = []
    stype = spec.get("type", "ClusterIP")
    if stype not in _SERVICE_TYPES:
        supported = ", ".join(f'"{t}"' for t in _SERVICE_TYPES)
        return [
            Invalid(
                "spec.type",
                f'Unsupported value: "{stype}": supported values: {supported}',
                "FieldValueNotSupported",
            )
        ]
    ports = spec.get("ports") or []
    if stype != "ExternalName" and not ports:
        errs.append(Invalid("spec.ports", "Required value", "FieldValueRequired"))
    for i, p in enumerate(ports):
        if not 1 <= int(p.get("port", 0)) <= 65535:
            errs.append(
                Invalid(
                    f"spec.ports[{i}].port",
                    f"Invalid value: {p.get('port')}: must be between 1 and 65535, inclusive",
                )
            )
        if len(ports) > 1 and not p.get("name"):
            errs.append(Invalid(f"spec.ports[{i}].name", "Required value", "FieldValueRequired"))
    wanted, had = spec.get("clusterIP"), (old_spec or {}).get("clusterIP")
    if old_spec is not None and wanted and had and wanted != had:
        errs.append(Invalid("spec.clusterIP", f'Invalid value: "{wanted}": field is immutable'))
    return errs


# --------------------------------------------------------------------------------------------------
# Server-set fields (defaults the apiserver fills in)


def _apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    # What a new object shows until its controller writes a status.
    if kind.kind == "HorizontalPodAutoscaler":
        obj.setdefault("status", {"currentReplicas": 0, "desiredReplicas": 0})
    elif kind.kind == "Deployment":
        obj.setdefault("status", {})
    if kind.kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        )
        _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif kind.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif kind.kind == "HorizontalPodAutoscaler":
        obj["spec"].setdefault("minReplicas", 1)


def _default_pod_spec(pod: dict[str, Any]) -> None:
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("schedulerName", "default-scheduler")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("securityContext", {})
    for c in pod.get("containers") or []:
        image = str(c.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


# --------------------------------------------------------------------------------------------------
# Selectors


def _split_requirements(s: str) -> list[str]:
    return [r for r in re.split(r",(?![^()]*\))", s) if r.strip()]


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate over labels for ``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``."""
    checks = [_label_requirement(req.strip()) for req in _split_requirements(selector)]
    return lambda labels: all(c(labels) for c in checks)


def _label_requirement(req: str) -> Callable[[dict[str, str]], bool]:
    if m := re.fullmatch(r"(!?)\s*([\w./-]+)", req):
        negated, key = bool(m.group(1)), m.group(2)
        return lambda labels: (key in labels) != negated
    if m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", req):
        key, op, value = m.groups()
        return lambda labels: (labels.get(key) == value) != (op == "!=")
    if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", req):
        key, op, values = m.group(1), m.group(2), {x.strip() for x in m.group(3).split(",")}
        return lambda labels: (labels.get(key) in values) != (op == "notin")
    raise bad_request(f"unable to parse requirement: found '{req}', expected: identifier")


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate over objects for ``involvedObject.name=x``, ``status.phase!=Running``..."""
    checks = [_field_requirement(req.strip()) for req in _split_requirements(selector)]
    return lambda obj: all(c(obj) for c in checks)


def _field_requirement(req: str) -> Callable[[dict[str, Any]], bool]:
    m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", req)
    if not m:
        raise bad_request(f"invalid field selector: '{req}'")
    path, op, value = m.groups()
    return lambda obj: (_dotted_get(obj, path) == value.strip()) != (op == "!=")


def _dotted_get(obj: Any, path: str) -> str:
    cur = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _selects(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


# --------------------------------------------------------------------------------------------------
# One cluster's API (operations on world.data["kube"][key], all under world.lock)


def _now_str(world: World) -> str:
    return kubesim.rfc3339(world.now())


class ClusterApi:
    """The apiserver of cluster ``key``: routing, authorization and the object store."""

    def __init__(self, hub: Hub, key: str) -> None:
        self.hub = hub
        self.world = hub.world
        self.key = key
        self.project = key.split("/")[1]

    @property
    def rec(self) -> dict[str, Any]:
        rec = self.world.data.get("kube", {}).get(self.key)
        if rec is None:
            raise kube_error(503, "ServiceUnavailable", "the cluster is being deleted")
        return rec  # type: ignore[no-any-return]

    # ---- entry point ------------------------------------------------------------------------------
    def handle(
        self, verb: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON-able body or text)."""
        mutating = verb in ("POST", "PUT", "PATCH", "DELETE")
        path = path.rstrip("/") or "/"  # the client asks for "/version/"
        with self.world.call("k8s", verb, path, mutating) as info:
            if path in ("/healthz", "/livez", "/readyz"):
                return 200, "ok"
            if path == "/version":
                return 200, _version()
            identity = self.world.identify(headers.get("Authorization"))
            user = self.kube_user(identity)
            info.caller = user if user.startswith(("user:", "serviceAccount:")) else f"serviceAccount:{user}"
            discovery = _discovery(path, self.rec["endpoint"])
            if discovery is not None:
                return 200, discovery
            return self._resource(verb, path, query, headers, body, identity.member, user)

    def kube_user(self, identity: Identity) -> str:
        """The member as GKE names it in Kubernetes: a service account's email only when its token
        carries the userinfo.email scope, else the account's numeric unique ID (IAM still decides)."""
        member = identity.member
        if (
            not member.startswith("serviceAccount:")
            or identity.scopes is None
            or USERINFO_EMAIL in identity.scopes
        ):
            return member
        from .iam import _accounts

        with self.world.lock:
            sa = _accounts(self.world).get(member.split(":", 1)[1])
        return str(sa["unique_id"]) if sa else member

    def _resource(
        self, verb: str, path: str, query: dict[str, str], headers: Any, body: bytes, caller: str, user: str
    ) -> tuple[int, Any]:
        m = _PATH.match(path)
        kind = (
            _BY_PATH.get(
                ("", "v1", m["plural"]) if m and m["core"] else (m["group"], m["version"], m["plural"])
            )
            if m
            else None
        )
        if m is None or kind is None or (m["ns"] and not kind.namespaced):
            raise kube_error(404, "NotFound", "the server could not find the requested resource")
        ns, name = m["ns"] or "", m["name"] or ""
        if query.get("watch") in ("true", "1"):
            raise kube_error(
                405, "MethodNotAllowed", "watch is not supported by the emulator; poll with list"
            )
        k8s_verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[verb]
        if verb == "DELETE" and not name:
            k8s_verb = "deletecollection"
        if m["sub"] == "log":
            if kind.plural != "pods" or verb != "GET":
                raise kube_error(404, "NotFound", "the server could not find the requested resource")
            self._authorize(caller, user, kind, "getLogs", ns, name, "pods/log")
            with self.world.lock:
                return 200, self.pod_log(ns, name, query)
        self._authorize(caller, user, kind, k8s_verb, ns, name)
        if verb == "DELETE" and kind.plural == "pods" and name:
            with self.world.lock:
                return 200, self.delete_pod(ns, name)
        if verb != "GET" and not kind.writable:
            raise kube_error(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({kind.resource})",
            )
        dry = _dry_run(query)
        manager = query.get("fieldManager") or _manager_from_agent(headers.get("User-Agent", ""))
        with self.world.lock:
            if verb == "GET":
                return 200, self.get(kind, ns, name) if name else self.list_objects(kind, ns, query)
            if verb == "POST" and not name:
                return 201, self.create(kind, ns, _parse_json(body), manager, dry)
            if not name:
                raise kube_error(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            if verb == "PUT":
                return 200, self.replace(kind, ns, name, _parse_json(body), manager, dry)
            if verb == "PATCH":
                return self.patch(kind, ns, name, headers.get("Content-Type", ""), body, query, manager, dry)
            if verb == "DELETE":
                return 200, self.delete(kind, ns, name, _parse_json(body) if body.strip() else {}, dry)
        raise kube_error(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _authorize(
        self, caller: str, user: str, kind: Kind, verb: str, ns: str, name: str, resource: str | None = None
    ) -> None:
        """GKE authorizes through IAM: ``container.<resource>.<verb>`` on the project."""
        iam_verb = {"patch": "update", "deletecollection": "delete"}.get(verb, verb)
        permission = f"container.{kind.iam}.{iam_verb}"
        if self.world.has_permission(caller, permission, self.project):
            return
        user = user.split(":", 1)[-1]
        shown_verb = "get" if verb == "getLogs" else verb
        subject = f'{kind.resource} "{name}"' if name else kind.resource
        scope = f'in the namespace "{ns}"' if kind.namespaced and ns else "at the cluster scope"
        raise kube_error(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {shown_verb} resource "{resource or kind.plural}" in API '
            f'group "{kind.group}" {scope}: requires one of ["{permission}"] permission(s).',
            _details(kind, name),
        )

    # ---- store helpers ------------------------------------------------------------------------------
    def _objects(self, kind: Kind) -> dict[str, dict[str, Any]]:
        return self.rec["objects"].setdefault(kind.plural, {})  # type: ignore[no-any-return]

    @staticmethod
    def _id(kind: Kind, ns: str, name: str) -> str:
        return f"{ns}/{name}" if kind.namespaced else name

    def bump_version(self) -> str:
        """The next resourceVersion (one counter per cluster, like etcd's revision)."""
        self.rec["rv"] = int(self.rec.get("rv", 1)) + 1
        return str(self.rec["rv"])

    def _require_namespace(self, kind: Kind, ns: str) -> None:
        if kind.namespaced and ns not in self._objects(_BY_PLURAL["namespaces"]):
            raise not_found(_BY_PLURAL["namespaces"], ns)

    # ---- reads --------------------------------------------------------------------------------------
    def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        if kind.writable:
            obj = self._objects(kind).get(self._id(kind, ns, name))
        else:
            obj = next((o for o in self._synthesized(kind, ns) if o["metadata"]["name"] == name), None)
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def list_objects(self, kind: Kind, ns: str, query: dict[str, str]) -> dict[str, Any]:
        if kind.writable:
            items = [
                o for o in self._objects(kind).values() if not ns or o["metadata"].get("namespace") == ns
            ]
        else:
            items = self._synthesized(kind, ns)
        if query.get("labelSelector"):
            match = label_matcher(query["labelSelector"])
            items = [o for o in items if match(o["metadata"].get("labels") or {})]
        if query.get("fieldSelector"):
            fmatch = field_matcher(query["fieldSelector"])
            items = [o for o in items if fmatch(o)]
        items = sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        out = []
        for o in items:
            o = copy.deepcopy(o)
            o.pop("apiVersion", None)  # list items carry no kind/apiVersion, as upstream
            o.pop("kind", None)
            out.append(o)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.rec.get("rv", 1))},
            "items": out,
        }

    def _synthesized(self, kind: Kind, ns: str) -> list[dict[str, Any]]:
        """Objects the controllers keep (nodes, pods, ReplicaSets, events), as the API shows them."""
        sim = self.hub.sim(self.key, self.rec)
        items = {
            "nodes": sim.node_objects,
            "pods": sim.pod_objects,
            "replicasets": sim.replicaset_objects,
            "events": sim.event_objects,
        }[kind.plural]()
        return [o for o in items if not ns or o["metadata"].get("namespace") == ns]

    def pod_log(self, ns: str, name: str, query: dict[str, str]) -> str:
        """``GET pods/NAME/log``: the container's log as text (``container``, ``previous``, ``tailLines``)."""
        from . import kubelet

        pod = self.rec.get("pods", {}).get(f"{ns}/{name}")
        pods = _BY_PLURAL["pods"]
        if pod is None:
            raise not_found(pods, name)
        names = list(pod["containers"]) or [c.get("name") for c in pod["spec"].get("containers") or []]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(map(str, names))}]"
            )
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        previous = query.get("previous", "").lower() in ("true", "1")
        lines = kubelet.logs(pod, container, previous) if pod["containers"] else None
        if lines is None or (previous and not pod["containers"][container]["restarts"]):
            if previous:
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        if query.get("tailLines", "").isdigit():
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        return "".join(f"{line}\n" for line in lines)

    def delete_pod(self, ns: str, name: str) -> dict[str, Any]:
        """Delete a pod (its ReplicaSet makes a new one): a restart by hand."""
        pod = self.rec.get("pods", {}).get(f"{ns}/{name}")
        if pod is None:
            raise not_found(_BY_PLURAL["pods"], name)
        from . import kubelet

        obj = kubelet.pod_object(pod, self.world.now())
        del self.rec["pods"][f"{ns}/{name}"]
        self.bump_version()
        self.world.changed()
        return obj

    # ---- writes -------------------------------------------------------------------------------------
    def create(self, kind: Kind, ns: str, body: Any, manager: str, dry: bool) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, "", body)
        name = obj["metadata"].get("name")
        if not name:
            raise invalid(
                kind,
                "",
                [
                    Invalid(
                        "metadata.name",
                        "Required value: name or generateName is required",
                        "FieldValueRequired",
                    )
                ],
            )
        if obj["metadata"].get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        self._require_namespace(kind, ns)
        existing = self._objects(kind).get(self._id(kind, ns, name))
        if existing is not None:
            being_deleted = (
                "object is being deleted: " if existing["metadata"].get("deletionTimestamp") else ""
            )
            raise kube_error(
                409,
                "AlreadyExists",
                f'{being_deleted}{kind.resource} "{name}" already exists',
                _details(kind, name),
            )
        now = _now_str(self.world)
        return self._commit(
            kind, ns, name, None, obj, dry, lambda new: kubemerge.update_ownership(None, new, manager, now)
        )

    def replace(self, kind: Kind, ns: str, name: str, body: Any, manager: str, dry: bool) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, name, body)
        old = self._objects(kind).get(self._id(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict_modified(kind, name)
        now = _now_str(self.world)
        return self._commit(
            kind, ns, name, old, obj, dry, lambda new: kubemerge.update_ownership(old, new, manager, now)
        )

    def patch(
        self,
        kind: Kind,
        ns: str,
        name: str,
        content_type: str,
        body: bytes,
        query: dict[str, str],
        manager: str,
        dry: bool,
    ) -> tuple[int, dict[str, Any]]:
        ctype = content_type.split(";")[0].strip().lower()
        force = query.get("force", "").lower() in ("true", "1")
        if ctype == "application/apply-patch+yaml":
            return self.apply(kind, ns, name, body, query.get("fieldManager", ""), force, dry)
        if force:
            raise invalid(
                kind,
                name,
                [
                    Invalid(
                        "force", "Forbidden: may not be specified for non-apply patch", "FieldValueForbidden"
                    )
                ],
            )
        old = self._objects(kind).get(self._id(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        patch = _parse_json(body)
        try:
            if ctype == "application/merge-patch+json":
                merged = kubemerge.merge_patch(old, patch)
            elif ctype == "application/strategic-merge-patch+json":
                merged = kubemerge.strategic_merge(old, patch)
            elif ctype == "application/json-patch+json":
                merged = kubemerge.json_patch(old, patch)
            else:
                raise kube_error(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
        except kubemerge.MergeError as e:
            raise invalid(kind, name, [Invalid(e.field, e.message)]) from None
        obj = self._checked_body(kind, ns, name, merged)
        now = _now_str(self.world)
        return 200, self._commit(
            kind, ns, name, old, obj, dry, lambda new: kubemerge.update_ownership(old, new, manager, now)
        )

    def apply(
        self, kind: Kind, ns: str, name: str, body: bytes, manager: str, force: bool, dry: bool
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply: create when missing, else merge with conflict detection."""
        if not manager:
            raise kube_error(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        raw = _parse_yaml(body)
        if "apiVersion" not in raw or "kind" not in raw:
            raise bad_request(
                "error decoding YAML: Object 'Kind' is missing or 'apiVersion' is missing in the applied configuration"
            )
        applied = self._checked_body(kind, ns, name, raw)
        old = self._objects(kind).get(self._id(kind, ns, name))
        if old is None:
            self._require_namespace(kind, ns)
        rv = applied["metadata"].get("resourceVersion")
        if rv and (old is None or rv != old["metadata"]["resourceVersion"]):
            raise conflict_modified(kind, name)
        try:
            merged = kubemerge.apply(old, applied, manager, _now_str(self.world), force=force)
        except kubemerge.ApplyConflict as e:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{c.manager}" using {c.api_version}',
                    "field": kubemerge.path_str(c.path),
                }
                for c in e.conflicts
            ]
            raise kube_error(409, "Conflict", str(e), {**_details(kind, name), "causes": causes}) from None
        except kubemerge.MergeError as e:
            raise invalid(kind, name, [Invalid(e.field, e.message)]) from None
        result = self._commit(kind, ns, name, old, merged, dry, None)
        return (201 if old is None else 200), result

    def delete(self, kind: Kind, ns: str, name: str, options: Any, dry: bool) -> dict[str, Any]:
        objects = self._objects(kind)
        oid = self._id(kind, ns, name)
        obj = objects.get(oid)
        if obj is None:
            raise not_found(kind, name)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise kube_error(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {obj['metadata']['uid']}",
                _details(kind, name),
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise kube_error(
                409,
                "Conflict",
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in meta: {obj['metadata']['resourceVersion']}",
                _details(kind, name),
            )
        if kind.plural == "namespaces" and name in PROTECTED_NAMESPACES:
            raise kube_error(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                _details(kind, name),
            )
        if dry:
            return copy.deepcopy(obj)
        if LB_FINALIZER in (obj["metadata"].get("finalizers") or []):
            # GKE keeps the Service until its load balancer is released (the finalizer goes then).
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now_str(self.world)
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self.bump_version()
                self.rec["lbs"].setdefault(oid, {"ip": "", "since": self.world.now()})["deleting"] = (
                    self.world.now()
                )
                self.world.changed()
            return copy.deepcopy(obj)
        self.hub.forget(self.rec, kind, oid)
        self.bump_version()
        self.world.changed()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**_details(kind, name), "uid": obj["metadata"]["uid"]},
        }

    # ---- the write pipeline -------------------------------------------------------------------------
    def _checked_body(self, kind: Kind, ns: str, name: str, body: Any) -> dict[str, Any]:
        """The body as an object of ``kind`` at (ns, name): 400 when it names something else."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {kind.kind} object")
        obj = copy.deepcopy(body)
        if obj.get("kind", kind.kind) != kind.kind:
            raise bad_request(
                f'{obj.get("kind")} in version "{obj.get("apiVersion")}" cannot be handled as a {kind.kind}'
            )
        if obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version "
                f"({kind.api_version})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(
                f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: metadata must be an object'
            )
        if name and meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if kind.namespaced and meta.get("namespace", ns) != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name:
            meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        return obj

    def _commit(
        self,
        kind: Kind,
        ns: str,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        dry: bool,
        ownership: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        """Validate, default, record ownership, version and store ``new`` (``old``: the stored one)."""
        meta = new["metadata"]
        for f in (
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(f, None)
            if old and f in old["metadata"]:
                meta[f] = old["metadata"][f]
        if ownership is not None:  # Update operations: the stored managedFields are the starting point
            meta.pop("managedFields", None)
            if old and "managedFields" in old["metadata"]:
                meta["managedFields"] = copy.deepcopy(old["metadata"]["managedFields"])
        # The main resource never writes status (that is the status subresource's job).
        new.pop("status", None)
        if old and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        _drop_nulls(new)  # a JSON null means "not set", as upstream decodes it
        validate_schema(kind, new)
        errs = semantic_errors(kind, new, old)
        if errs:
            raise invalid(kind, name, errs)
        _apply_defaults(kind, new)
        self.hub.server_fields(self.rec, kind, self._id(kind, ns, name), new, old)
        if ownership is not None:
            ownership(new)
        if old is not None and kubemerge.without_times(new) == kubemerge.without_times(old):
            return copy.deepcopy(old)  # nothing changed: same resourceVersion, no write
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_str(self.world)
            if kind.generation:
                meta["generation"] = 1
        elif kind.generation and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if dry:
            return copy.deepcopy(new)
        meta["resourceVersion"] = self.bump_version()
        self._objects(kind)[self._id(kind, ns, name)] = new
        self.hub.after_write(self.key, self.rec, kind, self._id(kind, ns, name), new)
        self.world.changed()
        return copy.deepcopy(new)


def _drop_nulls(value: Any) -> None:
    if isinstance(value, dict):
        for k in [k for k, v in value.items() if v is None]:
            del value[k]
        for v in value.values():
            _drop_nulls(v)
    elif isinstance(value, list):
        for v in value:
            _drop_nulls(v)


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun", "")
    if value and value != "All":
        raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return value == "All"


def _manager_from_agent(agent: str) -> str:
    """Upstream's default field manager: the User-Agent up to its first "/"."""
    return agent.split("/", 1)[0][:128] or "unknown"


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"error decoding JSON: {e}") from None


def _parse_yaml(body: bytes) -> Any:
    import yaml

    try:
        data = yaml.safe_load(body or b"")
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(data, dict):
        raise bad_request("error decoding YAML: the applied configuration must be an object")
    return data


def _version() -> dict[str, Any]:
    major, minor = KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _discovery(path: str, endpoint: str) -> dict[str, Any] | None:
    """/api, /apis and the per-group-version resource lists (minimal, JSON only)."""
    groups: dict[tuple[str, str], list[Kind]] = {}
    for k in KINDS:
        groups.setdefault((k.group, k.version), []).append(k)
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": endpoint}],
        }
    if path == "/apis":
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for (g, v) in groups
                if g
            ],
        }
    for (g, v), kinds in groups.items():
        gv = f"{g}/{v}" if g else v
        if path == (f"/apis/{gv}" if g else f"/api/{v}"):
            verbs_rw = ["create", "delete", "get", "list", "patch", "update"]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": [
                    {
                        "name": k.plural,
                        "singularName": k.kind.lower(),
                        "namespaced": k.namespaced,
                        "kind": k.kind,
                        "verbs": verbs_rw if k.writable else ["get", "list"],
                    }
                    for k in kinds
                ],
            }
    return None


# --------------------------------------------------------------------------------------------------
# The HTTPS server of one cluster


class _ApiHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that rejects our certificate (wrong CA) aborts the handshake: its business, not ours.
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, ssl.SSLError | ConnectionError | TimeoutError | OSError):
            return
        traceback.print_exc()


def _handler(api: ClusterApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the kubernetes client's connection pool expects
        server_version = "kube-apiserver"

        def setup(self) -> None:
            # The TLS handshake runs in the connection's own thread, so one slow or failing client
            # never stalls accept() for the others.
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(300)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, verb: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload = api.handle(verb, url.path, query, self.headers, body)
            except KubeError as e:
                status, payload = e.status, e.body()
            except EmulatorError as e:  # authentication, injected faults
                status, payload = _status_of(e)
            except Exception as e:  # a bug here must still answer like an apiserver would
                traceback.print_exc()
                status, payload = (
                    500,
                    kube_error(500, "InternalError", f"Internal error occurred: {e}").body(),
                )
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Audit-Id", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _status_of(e: EmulatorError) -> tuple[int, dict[str, Any]]:
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return 401, kube_error(401, "Unauthorized", "Unauthorized").body()
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return 503, kube_error(503, "ServiceUnavailable", e.message).body()
    return e.http_status, kube_error(e.http_status, "InternalError", e.message).body()


@dataclass
class _Running:
    server: _ApiHTTPServer
    thread: threading.Thread


# --------------------------------------------------------------------------------------------------
# TF Serving stand-ins behind load balancers


@dataclass(frozen=True)
class _ModelSpec:
    host: str
    port: int
    service: str  # "cluster key|ns/name"


@dataclass(frozen=True)
class _ReadJob:
    """One TF Serving poll of one container, run outside world.lock (it calls Cloud Storage)."""

    key: str
    pod: str  # "ns/name"
    container: str
    incarnation: tuple[float, int]  # (started, restarts): a restarted container drops old results
    base: str
    attempt: frozenset[int] | None
    token: str


# --------------------------------------------------------------------------------------------------
# The hub


class Hub:
    """All clusters' Kubernetes APIs (see the module docstring). Thread-safe."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._running: dict[str, _Running] = {}
        self._models: dict[str, tuple[_ModelSpec, Any]] = {}
        self._failed_models: dict[_ModelSpec, float] = {}  # spec -> when its start failed
        self._models_lock = threading.Lock()
        # What each load balancer's stand-in answers from (replaced whole on every tick).
        self._backends: dict[str, tfserving.Servable] = {}
        # Cloud Storage, where TF Serving processes read their models (the emulator sets it).
        self.storage_address = ""
        self._reads: futures.ThreadPoolExecutor | None = None
        self._reading: set[tuple[str, str, str]] = set()
        # A load balancer's IP keeps port 8501 bound (not listening: connections are refused) while
        # no stand-in serves there, so that emulators in other processes do not take the address.
        self._held: dict[str, socket.socket] = {}
        self._held_lock = threading.Lock()
        self._saved_at = 0.0

    # ---- lifecycle (called by the GKE service and the emulator) -----------------------------------
    def start_cluster(self, key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        """Start (or keep running) the API of cluster ``key``; returns (endpoint, CA certificate PEM)."""
        with self.world.lock:
            clusters = self.world.data.setdefault("kube", {})
            rec = clusters.get(key)
            if rec is None:
                rec = clusters[key] = self._new_cluster(key, nodes)
            elif rec.get("nodes") != nodes:
                rec["nodes"] = nodes
            if key not in self._running:
                self._serve(key, rec)
            self.world.changed()
            return rec["endpoint"], rec["ca_cert"]

    def update_nodes(self, key: str, nodes: list[dict[str, Any]]) -> None:
        with self.world.lock:
            rec = self.world.data.get("kube", {}).get(key)
            if rec is not None and rec.get("nodes") != nodes:
                rec["nodes"] = nodes
                self.sim(key, rec)  # node records follow the pools at once
                self.world.changed()

    def stop_cluster(self, key: str) -> None:
        """Stop the API of cluster ``key`` and forget its objects (the cluster is gone)."""
        with self.world.lock:  # first, so requests still in flight answer 503 and the tick skips it
            if self.world.data.get("kube", {}).pop(key, None) is not None:
                self.world.changed()
        self._shutdown(key)
        self._stop_models(lambda mkey: mkey.startswith(f"{key}|"))

    def resume(self) -> None:
        """Restart the APIs of the clusters in ``world.data`` (after loading a state file), then let
        the GKE service record the (possibly new) endpoints its GetCluster answers with."""
        from . import gke

        with self.world.lock:
            for key, rec in self.world.data.get("kube", {}).items():
                if key not in self._running:
                    self._serve(key, rec)
            self.world.changed()
        gke.resume_clusters(self.world)

    def close(self) -> None:
        """Stop every server; the data stays (it is persisted for a restart)."""
        for key in list(self._running):
            self._shutdown(key)
        self._stop_models(lambda _: True)
        if self._reads is not None:
            self._reads.shutdown(wait=True, cancel_futures=True)
            self._reads = None
        for ip in list(self._held):
            self._unhold(ip)
        with _CLAIMED_LOCK:
            for ip in [ip for ip, hub in _CLAIMED_LB_IPS.items() if hub == id(self)]:
                del _CLAIMED_LB_IPS[ip]

    def endpoint_of(self, key: str) -> str:
        """The current ``127.0.0.1:PORT`` of cluster ``key`` (it may change across restarts)."""
        with self.world.lock:
            return str(self.world.data["kube"][key]["endpoint"])

    # ---- servers ------------------------------------------------------------------------------------
    def _new_cluster(self, key: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
        import trustme

        ca = trustme.CA(organization_name="sdcluster emulator", organization_unit_name=key)
        now = self.world.now()
        stamp = kubesim.rfc3339(now)
        namespaces = {
            ns: {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "uid": kubesim.stable_uid(key, "namespace", ns),
                    "resourceVersion": "1",
                    "creationTimestamp": stamp,
                    "labels": {"kubernetes.io/metadata.name": ns},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for ns in PROTECTED_NAMESPACES
        }
        return {
            "project": key.split("/")[1],
            "endpoint": "",
            "ca_cert": ca.cert_pem.bytes().decode(),
            "ca_key": ca.private_key_pem.bytes().decode(),
            "nodes": nodes,
            "rv": 1,
            "next_ip": 10,
            "next_node_port": 30000,
            "objects": {
                "namespaces": namespaces,
                "serviceaccounts": {
                    f"{ns}/default": _default_service_account(key, ns, stamp) for ns in namespaces
                },
            },
            "lbs": {},
        }

    def _serve(self, key: str, rec: dict[str, Any]) -> None:
        import trustme

        ca = trustme.CA.from_pem(rec["ca_cert"].encode(), rec["ca_key"].encode())
        leaf = ca.issue_cert("127.0.0.1", common_name="kubernetes")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        handler = _handler(ClusterApi(self, key))
        old_port = int(rec["endpoint"].rsplit(":", 1)[1]) if rec.get("endpoint") else 0
        try:  # keep the endpoint a client already has, when the port is still free
            server = _ApiHTTPServer(("127.0.0.1", old_port), handler)
        except OSError:
            server = _ApiHTTPServer(("127.0.0.1", 0), handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        rec["endpoint"] = f"127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._running[key] = _Running(server, thread)

    def _shutdown(self, key: str) -> None:
        running = self._running.pop(key, None)
        if running is not None:
            running.server.shutdown()
            running.server.server_close()

    # ---- write hooks (called by ClusterApi under world.lock) ------------------------------------------
    def server_fields(
        self, rec: dict[str, Any], kind: Kind, oid: str, new: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Fields the apiserver allocates: a Service's clusterIP and nodePorts, the LB finalizer."""
        if kind.kind != "Service":
            return
        spec, old_spec = new["spec"], (old or {}).get("spec") or {}
        stype = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if stype == "ExternalName":
            return
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec.get("clusterIP") or self._next_cluster_ip(rec)
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        old_node_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p["port"])
            if stype not in ("NodePort", "LoadBalancer"):
                p.pop("nodePort", None)  # released when the type no longer needs one
            elif not p.get("nodePort"):
                p["nodePort"] = old_node_ports.get(p["port"]) or self._next_node_port(rec)
        meta = new["metadata"]
        if stype == "LoadBalancer":
            spec.setdefault("externalTrafficPolicy", "Cluster")
            spec.setdefault("allocateLoadBalancerNodePorts", True)
            if LB_FINALIZER not in (meta.get("finalizers") or []):
                meta["finalizers"] = [*(meta.get("finalizers") or []), LB_FINALIZER]
        new.setdefault("status", {"loadBalancer": {}})

    @staticmethod
    def _next_cluster_ip(rec: dict[str, Any]) -> str:
        n = rec["next_ip"] = int(rec.get("next_ip", 10)) + 1
        return f"10.8.{n // 256 % 256}.{n % 256}"

    @staticmethod
    def _next_node_port(rec: dict[str, Any]) -> int:
        n = rec["next_node_port"] = int(rec.get("next_node_port", 30000)) + 1
        return 30000 + (n - 30000) % 2768

    def after_write(self, key: str, rec: dict[str, Any], kind: Kind, oid: str, obj: dict[str, Any]) -> None:
        """Controllers that react at once: a new namespace gets its default ServiceAccount, the service
        controller starts (or releases) a load balancer."""
        now = self.world.now()
        if kind.kind == "Namespace":
            # The ServiceAccount controller gives every namespace its "default" ServiceAccount.
            accounts = rec["objects"].setdefault("serviceaccounts", {})
            accounts.setdefault(
                f"{oid}/default", _default_service_account(str(uuid.uuid4()), oid, kubesim.rfc3339(now))
            )
        elif kind.kind == "Service":
            lbs = rec["lbs"]
            if obj["spec"].get("type") == "LoadBalancer" and oid not in lbs:
                lbs[oid] = {"ip": self._allocate_lb_ip(), "since": now, "deleting": None}
            elif obj["spec"].get("type") != "LoadBalancer" and oid in lbs and not lbs[oid].get("deleting"):
                self._release_forwarding_rule(key, lbs.pop(oid))
                obj.setdefault("status", {})["loadBalancer"] = {}
                meta = obj["metadata"]
                meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != LB_FINALIZER] or None
                if meta["finalizers"] is None:
                    del meta["finalizers"]

    def forget(self, rec: dict[str, Any], kind: Kind, oid: str) -> None:
        """Remove a stored object and what controllers keep about it (a namespace takes its contents).

        A Service's load balancer stays until the service controller releases it (next tick)."""
        rec["objects"].get(kind.plural, {}).pop(oid, None)
        if kind.kind == "Deployment":  # the garbage collector takes its ReplicaSets and their pods
            for rsid in [i for i, rs in rec.get("replicasets", {}).items() if rs["deployment"] == oid]:
                del rec["replicasets"][rsid]
                for pid in [i for i, p in rec.get("pods", {}).items() if p["rs"] == rsid]:
                    del rec["pods"][pid]
        elif kind.kind == "Namespace":
            for plural in _STORED:
                if plural != "namespaces":
                    for child in [i for i in rec["objects"].get(plural, {}) if i.startswith(f"{oid}/")]:
                        self.forget(rec, _BY_PLURAL[plural], child)

    def _allocate_lb_ip(self) -> str:
        """A loopback address no other load balancer uses (127.0.X.Y, X >= 1: never 127.0.0.1)."""
        from . import compute

        used = {
            lb.get("ip")
            for rec in self.world.data.get("kube", {}).values()
            for lb in rec.get("lbs", {}).values()
        } | compute.rule_ips(self.world)  # a rule that outlived its cluster keeps its address
        with _CLAIMED_LOCK:
            for x in range(1, 255):
                for y in range(1, 255):
                    ip = f"127.0.{x}.{y}"
                    if ip in used or _CLAIMED_LB_IPS.get(ip, id(self)) != id(self):
                        continue
                    if not self._hold(ip):
                        continue
                    _CLAIMED_LB_IPS[ip] = id(self)
                    return ip
        raise kube_error(503, "ServiceUnavailable", "no load balancer addresses left")

    # ---- controllers ----------------------------------------------------------------------------------
    def sim(self, key: str, rec: dict[str, Any]) -> kubecontrol.ClusterSim:
        """The controllers of cluster ``key`` now (call under world.lock)."""
        project = key.split("/")[1]
        try:
            number = str(self.world.project(project)["number"])
        except EmulatorError:
            number = "0"
        api = ClusterApi(self, key)

        def resized(pool: str, count: int) -> None:
            from . import gke

            gke.autoscaled(self.world, key, pool, count)

        return kubecontrol.ClusterSim(
            key, rec, self.world.now(), self.world.knobs, number, api.bump_version, resized
        )

    def _kubelet_env(self, sim: kubecontrol.ClusterSim) -> kubelet.Env:
        knobs = self.world.knobs

        def configmap(ns: str, name: str, key: str) -> str | None:
            cm = sim.objects("configmaps").get(f"{ns}/{name}")
            if cm is None:
                return None
            value = (cm.get("data") or {}).get(key)
            return None if value is None else str(value)

        return kubelet.Env(
            rollout_s=knobs.rollout_s,
            kubelet_scale=knobs.kubelet_scale,
            tfserving_scale=knobs.tfserving_scale,
            model_load_s=knobs.model_load_s,
            predict_s_per_step=knobs.predict_s_per_step,
            image_size=0,
            record=sim.record,
            configmap=configmap,
        )

    def tick(self) -> None:
        """Advance every running cluster's controllers; read models; start/stop TF Serving stand-ins."""
        desired: dict[str, _ModelSpec] = {}
        backends: dict[str, tfserving.Servable] = {}
        jobs: list[_ReadJob] = []
        with self.world.lock:
            for key, rec in self.world.data.get("kube", {}).items():
                if key not in self._running:
                    continue
                sim = self.sim(key, rec)
                sim.step(self._kubelet_env(sim))
                api = ClusterApi(self, key)
                self._reconcile_services(key, rec, sim.now, api)
                self._reconcile_hpas(rec, api)
                jobs += self._read_jobs(key, rec, sim.now)
                for mkey, (spec, servable) in self._desired_models(key, rec, sim).items():
                    desired[mkey], backends[mkey] = spec, servable
            # Pods change on every tick (probes, logs): persist at most once a second.
            if self.world.now() - self._saved_at >= 1.0:
                self._saved_at = self.world.now()
                self.world.changed()
        self._backends = backends
        for job in jobs:
            self._submit(job)
        self._sync_models(desired)
        self._release_unused_ips()

    # ---- load balancer addresses ---------------------------------------------------------------------
    def _hold(self, ip: str) -> bool:
        """Bind ``ip:8501`` without listening; False if something else has it."""
        with self._held_lock:
            if ip in self._held:
                return True
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((ip, TF_SERVING_REST_PORT))
            except OSError:
                sock.close()
                return False
            self._held[ip] = sock
            return True

    def _unhold(self, ip: str) -> None:
        with self._held_lock:
            sock = self._held.pop(ip, None)
        if sock is not None:
            sock.close()

    def _release_unused_ips(self) -> None:
        with self.world.lock:
            used = {
                lb.get("ip")
                for rec in self.world.data.get("kube", {}).values()
                for lb in rec.get("lbs", {}).values()
            }
        with self._models_lock:
            serving = {spec.host for spec, _ in self._models.values()}
        for ip in list(self._held):
            if ip not in used:
                self._unhold(ip)
        for ip in used - serving - set(self._held):
            if ip:
                self._hold(ip)  # its stand-in stopped: keep the address

    # ---- TF Serving processes read their models (outside world.lock) --------------------------------
    def _read_jobs(self, key: str, rec: dict[str, Any], now: float) -> list[_ReadJob]:
        jobs = []
        for pid, pod in rec.get("pods", {}).items():
            for cname, c in pod["containers"].items():
                proc = c.get("proc")
                if proc is None or not tfprocess.due(proc, now) or (key, pid, cname) in self._reading:
                    continue
                attempt = tfprocess.wants_attempt(proc, now)
                ident = pod.get("identity") or {}
                token, _ = self.world.mint_token(
                    str(ident.get("member", "")), 3600, ident.get("scopes") or None
                )
                jobs.append(
                    _ReadJob(
                        key,
                        pid,
                        cname,
                        (c["started"], c["restarts"]),
                        proc["base"],
                        None if not proc["versions"] else frozenset(attempt),
                        token,
                    )
                )
        return jobs

    def _submit(self, job: _ReadJob) -> None:
        if self._reads is None:
            self._reads = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tfserving-read")
        self._reading.add((job.key, job.pod, job.container))
        self._reads.submit(self._read, job)

    def _read(self, job: _ReadJob) -> None:
        try:
            reader = tfprocess.GcsReader(self.storage_address, job.token) if self.storage_address else None
            attempt = None if job.attempt is None else set(job.attempt)
            listing = tfprocess.read_model_dir(reader, job.base, attempt)
            if job.attempt is not None and attempt is not None and not attempt:
                listing.pb.clear()  # nothing due: the poll only looks for new versions
            with self.world.lock:
                pod = self.world.data.get("kube", {}).get(job.key, {}).get("pods", {}).get(job.pod)
                c = (pod or {}).get("containers", {}).get(job.container)
                if c is None or c.get("proc") is None or (c["started"], c["restarts"]) != job.incarnation:
                    return
                tfprocess.apply_read(c["proc"], listing, self.world.now())
        except Exception:
            traceback.print_exc()
        finally:
            self._reading.discard((job.key, job.pod, job.container))

    # ---- load balancers -----------------------------------------------------------------------------
    def _reconcile_services(self, key: str, rec: dict[str, Any], now: float, api: ClusterApi) -> bool:
        """The service controller: a LoadBalancer Service gets its load balancer (a forwarding rule
        in the project's Compute Engine, ``compute.allocate_lb``) after ``lb_s``; deleting the Service
        releases it. Deleting the *cluster* does not: the rule outlives it, as on GKE."""
        changed = False
        services = rec["objects"].get("services", {})
        lb_s = self.world.knobs.lb_s
        for oid, lb in list(rec.get("lbs", {}).items()):
            svc = services.get(oid)
            if svc is None:
                self._release_forwarding_rule(key, rec["lbs"].pop(oid))
                changed = True
            elif lb.get("deleting"):
                if (
                    now >= lb["deleting"] + lb_s
                ):  # load balancer released: the finalizer goes, and the Service
                    self._release_forwarding_rule(key, lb)
                    self.forget(rec, _BY_PLURAL["services"], oid)
                    api.bump_version()
                    changed = True
            elif now >= lb["since"] + lb_s and not svc.get("status", {}).get("loadBalancer", {}).get(
                "ingress"
            ):
                self._allocate_forwarding_rule(key, lb, svc)
                svc.setdefault("status", {})["loadBalancer"] = {
                    "ingress": [{"ip": lb["ip"], "ipMode": "VIP"}]
                }
                svc["metadata"]["resourceVersion"] = api.bump_version()
                changed = True
        return changed

    def _allocate_forwarding_rule(self, key: str, lb: dict[str, Any], svc: dict[str, Any]) -> None:
        from . import compute, gke

        project, location = key.split("/")[1], key.split("/")[3]
        meta = svc["metadata"]
        lb["uid"] = meta["uid"]
        compute.allocate_lb(
            self.world,
            project,
            gke.ZONES.get(location, location),
            key,
            meta["uid"],
            service_name=f"{meta.get('namespace', 'default')}/{meta['name']}",
            ip=lb["ip"],
        )

    def _release_forwarding_rule(self, key: str, lb: dict[str, Any]) -> None:
        from . import compute, gke

        if lb.get("uid"):
            project, location = key.split("/")[1], key.split("/")[3]
            compute.release_lb(self.world, project, gke.ZONES.get(location, location), key, lb["uid"])

    def _reconcile_hpas(self, rec: dict[str, Any], api: ClusterApi) -> bool:
        changed = False
        deployments = rec["objects"].get("deployments", {})
        for hpa in rec["objects"].get("horizontalpodautoscalers", {}).values():
            spec, ns = hpa["spec"], hpa["metadata"].get("namespace", "default")
            target = deployments.get(f"{ns}/{(spec.get('scaleTargetRef') or {}).get('name', '')}")
            current = int((target or {}).get("status", {}).get("replicas", 0))
            want = (
                min(max(current, int(spec.get("minReplicas", 1))), int(spec.get("maxReplicas", 1)))
                if target
                else 0
            )
            status = {"currentReplicas": current, "desiredReplicas": want}
            if hpa.get("status") != status:
                hpa["status"] = status
                hpa["metadata"]["resourceVersion"] = api.bump_version()
                changed = True
        return changed

    def _desired_models(
        self, key: str, rec: dict[str, Any], sim: kubecontrol.ClusterSim
    ) -> dict[str, tuple[_ModelSpec, tfserving.Servable]]:
        """A stand-in for each LoadBalancer Service with an IP and a ready TF Serving pod behind it,
        answering from the newest ready pod's process (no ready pod: nothing listens, as kube-proxy
        rejects connections to a Service without endpoints)."""
        out = {}
        for oid, svc in rec["objects"].get("services", {}).items():
            ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
            if (
                svc["spec"].get("type") != "LoadBalancer"
                or not ingress
                or svc["metadata"].get("deletionTimestamp")
            ):
                continue
            ns = svc["metadata"].get("namespace", "default")
            for pod in sim.ready_pods(ns, svc["spec"].get("selector")):
                served = self._served_by(pod, svc)
                if served is not None:
                    port, proc = served
                    spec = _ModelSpec(ingress[0]["ip"], port, f"{key}|{oid}")
                    out[spec.service] = (spec, tfprocess.servable(proc, self.world.knobs.predict_s_per_step))
                    break
        return out

    @staticmethod
    def _served_by(pod: dict[str, Any], svc: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(Service port, TF Serving process) when the Service's port reaches the pod's REST port."""
        for c in pod["spec"].get("containers") or []:
            proc = pod["containers"].get(c.get("name"), {}).get("proc")
            if proc is None or not proc.get("rest_port"):
                continue
            port = _serving_port(svc, c, int(proc["rest_port"]))
            if port is not None and tfprocess.listens(proc, int(proc["rest_port"])):
                return port, proc
        return None

    def _sync_models(self, desired: dict[str, _ModelSpec]) -> None:
        """Start and stop stand-ins outside world.lock (they run their own HTTP servers)."""
        self._stop_models(lambda mkey: mkey not in desired or self._models[mkey][0] != desired[mkey])
        for mkey, spec in desired.items():
            with self._models_lock:
                if (
                    mkey in self._models
                    or self.world.now() - self._failed_models.get(spec, -1e9) < MODEL_RETRY_S
                ):
                    continue
            try:
                if spec.port == TF_SERVING_REST_PORT:
                    self._unhold(spec.host)
                server = tfserving.ModelServer(spec.host, spec.port, self._backend(mkey), world=self.world)
                server.start()
            except Exception:
                traceback.print_exc()
                with self._models_lock:
                    self._failed_models[spec] = self.world.now()  # retry later, not every tick
                continue
            with self._models_lock:
                self._models[mkey] = (spec, server)

    def _backend(self, mkey: str) -> Callable[[], tfserving.Servable | None]:
        # Read without world.lock: called from the stand-in's request threads, it must never wait on
        # a lock a thread stopping that very server may hold; the dict is replaced whole each tick.
        return lambda: self._backends.get(mkey)

    def _stop_models(self, which: Callable[[str], bool]) -> None:
        with self._models_lock:
            doomed = [(k, v[1]) for k, v in self._models.items() if which(k)]
            for k, _ in doomed:
                del self._models[k]
        for _, server in doomed:
            try:
                server.stop()
            except Exception:
                traceback.print_exc()


def _default_service_account(seed: str, ns: str, stamp: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "default",
            "namespace": ns,
            "uid": kubesim.stable_uid(seed, "serviceaccount", ns, "default"),
            "resourceVersion": "1",
            "creationTimestamp": stamp,
        },
    }


def _serving_port(svc: dict[str, Any], container: dict[str, Any], rest_port: int) -> int | None:
    """The Service port whose target is the container's REST port, by number or by port name."""
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    for p in svc["spec"].get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        if target == rest_port or (isinstance(target, str) and named.get(target) == rest_port):
            return int(p["port"])
    return None
