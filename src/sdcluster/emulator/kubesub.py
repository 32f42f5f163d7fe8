"""Subresources and reviews: ``pods/log``, ``deployments/scale``, the connect subresources the emulator
refuses cleanly (``pods/exec``, ``pods/portforward``, ``pods/attach``), and
``SelfSubjectAccessReview`` (``kubectl auth can-i``), all authorized by GKE's IAM permissions.

Example (under ``world.lock``)::

    scale = get_scale(api, "default", "stable-diffusion")
"""

from __future__ import annotations

import copy
from typing import Any

from . import kubelet
from .kubeerrors import bad_request, kube_error, not_found
from .kubekinds import BY_PLURAL, KINDS, Kind
from .kubestore import ClusterApi, WriteOptions
from .kubetables import selector_string

# Kubernetes verbs as GKE's IAM permission names them (container.<resource>.<verb>).
_IAM_VERBS = {"patch": "update", "deletecollection": "delete", "watch": "list"}
_SUB_VERBS = {
    ("log", "get"): "getLogs",
    ("scale", "get"): "getScale",
    ("scale", "update"): "updateScale",
    ("scale", "patch"): "updateScale",
    ("status", "get"): "getStatus",
    ("exec", "create"): "exec",
    ("exec", "get"): "exec",
    ("portforward", "create"): "portForward",
    ("portforward", "get"): "portForward",
    ("attach", "create"): "attach",
    ("attach", "get"): "attach",
}


def permission(kind: Kind, verb: str, subresource: str = "") -> str:
    """The IAM permission GKE checks for ``verb`` on ``kind`` (``container.deployments.updateScale``)."""
    if subresource:
        return f"container.{kind.iam}.{_SUB_VERBS.get((subresource, verb), verb)}"
    return f"container.{kind.iam}.{_IAM_VERBS.get(verb, verb)}"


# ---- pods/log -------------------------------------------------------------------------------------


def pod_log(api: ClusterApi, ns: str, name: str, query: dict[str, str]) -> list[str]:
    """``GET pods/NAME/log``: the container's lines (``container``, ``previous``, ``tailLines``)."""
    pod = api.rec.get("pods", {}).get(f"{ns}/{name}")
    if pod is None:
        raise not_found(BY_PLURAL["pods"], name)
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
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
    if query.get("tailLines", "").isdigit():
        lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
    return lines


def follow_reader(api: ClusterApi, ns: str, name: str, query: dict[str, str]) -> Any:
    """For ``follow=true``: a reader of the same container incarnation's lines (``tailLines`` applies
    to the first read only)."""
    pod = api.rec["pods"][f"{ns}/{name}"]
    container = query.get("container") or next(iter(pod["containers"]))
    incarnation = (pod["uid"], pod["containers"][container]["restarts"])
    skip = (
        max(len(kubelet.logs(pod, container, False) or []) - int(query["tailLines"]), 0)
        if query.get("tailLines", "").isdigit()
        else 0
    )

    def read() -> tuple[list[str], bool]:
        with api.world.lock:
            current = api.world.data.get("kube", {}).get(api.key, {}).get("pods", {}).get(f"{ns}/{name}")
            c = (current or {}).get("containers", {}).get(container)
            if current is None or c is None or (current["uid"], c["restarts"]) != incarnation:
                return [], False
            return list(kubelet.logs(current, container, False) or [])[skip:], c["state"] == "running"

    return read


# ---- deployments/scale --------------------------------------------------------------------------------


def get_scale(api: ClusterApi, ns: str, name: str) -> dict[str, Any]:
    d = api.get(BY_PLURAL["deployments"], ns, name)
    meta = d["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ns),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": int(d["spec"].get("replicas", 1))},
        "status": {
            "replicas": int((d.get("status") or {}).get("replicas", 0)),
            "selector": selector_string(d["spec"].get("selector")),
        },
    }


def update_scale(
    api: ClusterApi, ns: str, name: str, scale: dict[str, Any], opts: WriteOptions
) -> dict[str, Any]:
    """PUT or PATCH of a Scale: the Deployment's replicas change through the store's pipeline."""
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise kube_error(
            422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Required value'
        )
    if replicas < 0:
        raise kube_error(
            422,
            "Invalid",
            f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas}: '
            "must be greater than or equal to 0",
        )
    deployments = BY_PLURAL["deployments"]
    d = copy.deepcopy(api.get(deployments, ns, name))
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    d["metadata"]["resourceVersion"] = rv or d["metadata"]["resourceVersion"]
    d["spec"]["replicas"] = replicas
    api.replace(deployments, ns, name, d, opts)
    return (
        get_scale(api, ns, name)
        if not opts.dry
        else {**get_scale(api, ns, name), "spec": {"replicas": replicas}}
    )


# ---- connect subresources -------------------------------------------------------------------------------


def refuse_connect(kind: Kind, name: str, sub: str) -> None:
    """``pods/exec``, ``pods/attach``, ``pods/portforward``: the emulated containers run no processes to
    reach, so these answer a clean Status naming what does work."""
    what = {"exec": "exec", "attach": "attach", "portforward": "port-forward"}[sub]
    raise kube_error(
        400,
        "BadRequest",
        f"{what} is not supported by the sdcluster emulator: the containers of pod {name} run no processes to "
        "connect to (read them with kubectl logs, describe and get -o yaml; TF Serving answers on its load "
        "balancer's address)",
    )


# ---- SelfSubjectAccessReview ---------------------------------------------------------------------------


def access_review(api: ClusterApi, member: str, review: Any) -> dict[str, Any]:
    """``kubectl auth can-i``: allowed when the caller holds the IAM permission GKE would check."""
    if not isinstance(review, dict) or not isinstance(review.get("spec"), dict):
        raise bad_request("the body of the request must be a SelfSubjectAccessReview object")
    spec = review["spec"]
    attrs = spec.get("resourceAttributes")
    status: dict[str, Any]
    if attrs:
        kind = next(
            (
                k
                for k in KINDS
                if k.plural == attrs.get("resource")
                and k.group == attrs.get("group", "")
                and (not attrs.get("version") or attrs["version"] == k.version)
            ),
            None,
        )
        if kind is None:
            status = {"allowed": False}
        else:
            needed = permission(kind, str(attrs.get("verb", "")), str(attrs.get("subresource", "")))
            allowed = api.world.has_permission(member, needed, api.project)
            # A denial has no reason (an authorizer without an opinion); kubectl prints a bare "no".
            status = (
                {"allowed": True, "reason": f"allowed by IAM: {needed}"} if allowed else {"allowed": False}
            )
    elif spec.get("nonResourceAttributes"):
        path = str(spec["nonResourceAttributes"].get("path", ""))
        allowed = spec["nonResourceAttributes"].get("verb") == "get" and (
            path in ("/healthz", "/livez", "/readyz", "/version", "/api", "/apis")
            or path.startswith("/openapi")
        )
        status = {"allowed": allowed}
    else:
        raise kube_error(
            422,
            "Invalid",
            'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid value: '
            '"null": exactly one of nonResourceAttributes or resourceAttributes must be specified',
        )
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }
