"""Discovery: ``/version``, ``/api``, ``/apis`` and the per-group-version resource lists."""

from __future__ import annotations

from typing import Any

from .kubekinds import GIT_VERSION, KINDS, KUBERNETES_VERSION, Kind


def version() -> dict[str, Any]:
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


def discovery(path: str, endpoint: str) -> dict[str, Any] | None:
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
