"""Kubernetes service accounts as callers of an emulated cluster, authorized by RBAC.

A pod the emulator runs (a CronJob's, ``kubecron``) gets a token for its ``serviceAccountName``
(kept in the cluster's record under ``sa_tokens``, never printed). A request with it is the user
``system:serviceaccount:<namespace>:<name>`` and is decided by the namespace's RoleBindings and
Roles, as the RBAC authorizer decides (``plugin/pkg/auth/authorizer/rbac/rbac.go``, rule matching
in ``pkg/apis/rbac/v1/evaluation_helpers.go``: verbs, apiGroups, resources as ``plural`` or
``plural/subresource``, ``resourceNames`` (empty: any; a request without a name matches only an
empty list), ``*`` matching all). Not modelled: ClusterRoles, ClusterRoleBindings, aggregated and
default roles (``system:discovery`` and the like): a service account may do what its Roles say and
nothing else. A denial is 403 Forbidden in the apiserver's words
(``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go``).

Example::

    token = mint(rec, "default", "sdcluster-autostop")
    who = service_account_of(rec, f"Bearer {token}")   # ("default", "sdcluster-autostop")
    allows(rec, who, kind, "patch", "default", "stable-diffusion", "scale")
"""

from __future__ import annotations

import secrets
from typing import Any

from .kubekinds import Kind

PREFIX = "system:serviceaccount:"


def mint(rec: dict[str, Any], namespace: str, name: str) -> str:
    """A bearer token for the service account ``namespace/name`` of this cluster."""
    token = f"ksa.{secrets.token_urlsafe(24)}"
    rec.setdefault("sa_tokens", {})[token] = {"namespace": namespace, "name": name}
    return token


def revoke(rec: dict[str, Any], token: str) -> None:
    rec.get("sa_tokens", {}).pop(token, None)


def service_account_of(rec: dict[str, Any], authorization: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the service account a bearer token names on this cluster, else None."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    found = rec.get("sa_tokens", {}).get(authorization.removeprefix("Bearer ").strip())
    return (str(found["namespace"]), str(found["name"])) if found else None


def user_name(account: tuple[str, str]) -> str:
    return f"{PREFIX}{account[0]}:{account[1]}"


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _rule_allows(rule: dict[str, Any], kind: Kind, verb: str, name: str, sub: str) -> bool:
    resource = f"{kind.plural}/{sub}" if sub else kind.plural
    names = list(rule.get("resourceNames") or [])
    return (
        _matches(list(rule.get("verbs") or []), verb)
        and _matches(list(rule.get("apiGroups") or []), kind.group)
        and _matches(list(rule.get("resources") or []), resource)
        and (not names or (bool(name) and name in names))
    )


def allows(
    rec: dict[str, Any], account: tuple[str, str], kind: Kind, verb: str, ns: str, name: str, sub: str
) -> bool:
    """Whether a RoleBinding of ``ns`` gives ``account`` a Role rule allowing the request."""
    if not kind.namespaced or not ns:
        return False  # cluster-scoped access needs a ClusterRole: none is modelled
    objects = rec.get("objects", {})
    roles = objects.get("roles", {})
    for binding in objects.get("rolebindings", {}).values():
        if (binding.get("metadata") or {}).get("namespace") != ns:
            continue
        subjects = binding.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == account[1]
            and (s.get("namespace") or ns) == account[0]
            for s in subjects
        ):
            continue
        ref = binding.get("roleRef") or {}
        role = roles.get(f"{ns}/{ref.get('name')}") if ref.get("kind") == "Role" else None
        if role and any(_rule_allows(r, kind, verb, name, sub) for r in role.get("rules") or []):
            return True
    return False


def forbidden_message(account: tuple[str, str], kind: Kind, verb: str, ns: str, name: str, sub: str) -> str:
    subject = f'{kind.resource} "{name}"' if name else kind.resource
    scope = f'in the namespace "{ns}"' if kind.namespaced and ns else "at the cluster scope"
    resource = f"{kind.plural}/{sub}" if sub else kind.plural
    return (
        f'{subject} is forbidden: User "{user_name(account)}" cannot {verb} resource "{resource}" '
        f'in API group "{kind.group}" {scope}'
    )
