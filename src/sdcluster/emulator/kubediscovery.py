"""Discovery: ``/version``, ``/api``, ``/apis`` and the per-group-version resource lists, in the
legacy form (``APIVersions``, ``APIGroupList``, ``APIResourceList``) and the aggregated one
(``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``) that kubectl asks for first.

Each resource names its short names (``deploy``), categories (``all``), verbs (``watch`` included)
and subresources (``deployments/scale``, ``pods/log``), which kubectl resolves its arguments with.

Example::

    body, content_type = discovery("/apis", endpoint, accept=request_headers.get("Accept", ""))
"""

from __future__ import annotations

from typing import Any

from .kubekinds import GIT_VERSION, KINDS, KUBERNETES_VERSION, Kind

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def version() -> dict[str, Any]:
    major, minor = KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _groups() -> dict[tuple[str, str], list[Kind]]:
    groups: dict[tuple[str, str], list[Kind]] = {}
    for k in KINDS:
        groups.setdefault((k.group, k.version), []).append(k)
    return groups


def wants_aggregated(accept: str) -> bool:
    """Whether the client asked for aggregated discovery (it lists it before plain JSON)."""
    return any(part.split(";profile=")[0].replace(" ", "") == AGGREGATED for part in accept.split(","))


def discovery(path: str, endpoint: str, accept: str = "") -> tuple[dict[str, Any], str] | None:
    """(body, content type) of a discovery path, or None when ``path`` is not one."""
    if path in ("/api", "/apis") and wants_aggregated(accept):
        return _aggregated(core=path == "/api"), AGGREGATED
    if path == "/api":
        body: dict[str, Any] = {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": endpoint}],
        }
        return body, "application/json"
    if path == "/apis":
        body = {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for (g, v) in _groups()
                if g
            ],
        }
        return body, "application/json"
    for (g, v), kinds in _groups().items():
        gv = f"{g}/{v}" if g else v
        if path == (f"/apis/{gv}" if g else f"/api/{v}"):
            return _resource_list(gv, kinds), "application/json"
    return None


def _resource_list(gv: str, kinds: list[Kind]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for k in kinds:
        entry: dict[str, Any] = {
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": list(k.verbs),
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        resources.append(entry)
        for sub in k.subresources:
            item: dict[str, Any] = {
                "name": f"{k.plural}/{sub.name}",
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": sub.kind or k.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group:
                item.update(group=sub.group, version=sub.version)
            resources.append(item)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _aggregated(core: bool) -> dict[str, Any]:
    items = []
    for (g, v), kinds in _groups().items():
        if bool(g) == core:
            continue
        items.append(
            {
                "metadata": {"name": g, "creationTimestamp": None},
                "versions": [
                    {
                        "version": v,
                        "resources": [_aggregated_resource(k) for k in kinds],
                        "freshness": "Current",
                    }
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _aggregated_resource(k: Kind) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": "Namespaced" if k.namespaced else "Cluster",
        "singularResource": k.singular,
        "verbs": list(k.verbs),
    }
    if k.short_names:
        out["shortNames"] = list(k.short_names)
    if k.categories:
        out["categories"] = list(k.categories)
    if k.subresources:
        out["subresources"] = [
            {
                "subresource": s.name,
                "responseKind": {
                    "group": s.group or k.group,
                    "version": s.version or k.version,
                    "kind": s.kind or k.kind,
                },
                "verbs": list(s.verbs),
            }
            for s in k.subresources
        ]
    return out
