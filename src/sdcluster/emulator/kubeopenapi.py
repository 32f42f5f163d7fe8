"""The OpenAPI documents of the emulated apiserver: ``/openapi/v2`` (one Swagger 2.0 document) and
``/openapi/v3`` (an index of one OpenAPI 3.0 document per group-version), built from the same upstream
definitions the writes are validated against (``kubeschema``), with the paths and operations the
emulator serves.

kubectl reads them for ``explain``, for the strategic merge patches of ``apply`` and ``edit``, and to
learn that the server validates fields itself: a PATCH operation of the kind's group/version/kind
with a ``fieldValidation`` query parameter lets it skip client-side validation.

Example::

    index = v3_index()                    # {"paths": {"apis/apps/v1": {"serverRelativeURL": ...}}}
    doc = v3_document("apis/apps/v1")     # None for an unknown group-version
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from . import kubeschema
from .kubekinds import GIT_VERSION, KINDS, Kind, Subresource

V2_PREFIX = "#/definitions/"
V3_PREFIX = "#/components/schemas/"

# Query parameters by operation (the descriptions are ours, shortened).
_PARAMS: dict[str, tuple[str, str, str]] = {
    "dryRun": ("string", "When present, the request is checked but nothing is persisted (All).", "query"),
    "fieldManager": ("string", "The name of the actor making the change (required for apply).", "query"),
    "fieldValidation": (
        "string",
        "What to do with unknown or duplicate fields: Ignore, Warn (the default) or Strict.",
        "query",
    ),
    "force": ("boolean", "Apply: take over fields other managers own.", "query"),
    "pretty": ("string", "Pretty-print the output.", "query"),
    "labelSelector": ("string", "Only objects whose labels match.", "query"),
    "fieldSelector": ("string", "Only objects whose fields match.", "query"),
    "limit": ("integer", "At most this many items; the rest through continue.", "query"),
    "continue": ("string", "The token of the previous page.", "query"),
    "resourceVersion": ("string", "Which version of the data to serve or to watch from.", "query"),
    "resourceVersionMatch": ("string", "How resourceVersion applies to a list.", "query"),
    "watch": ("boolean", "Stream the changes instead of a list.", "query"),
    "allowWatchBookmarks": ("boolean", "Send BOOKMARK events.", "query"),
    "sendInitialEvents": ("boolean", "Start a watch with the current objects, then a bookmark.", "query"),
    "timeoutSeconds": ("integer", "End the list or watch after this many seconds.", "query"),
    "gracePeriodSeconds": ("integer", "Seconds before the object is deleted.", "query"),
    "propagationPolicy": ("string", "Orphan, Background or Foreground deletion of dependents.", "query"),
    "container": ("string", "The container whose log to read.", "query"),
    "follow": ("boolean", "Stream the log as it grows.", "query"),
    "previous": ("boolean", "The log of the previous, terminated container.", "query"),
    "tailLines": ("integer", "Only the last lines of the log.", "query"),
    "timestamps": ("boolean", "Prefix each log line with its time.", "query"),
}
_LIST = [
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "timeoutSeconds",
    "pretty",
]
_WRITE = ["dryRun", "fieldManager", "fieldValidation", "pretty"]
_PATCH = [*_WRITE, "force"]
_DELETE = ["dryRun", "gracePeriodSeconds", "propagationPolicy", "pretty"]
_LOG = ["container", "follow", "previous", "tailLines", "timestamps", "pretty"]
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def _group_name(group: str) -> str:
    """The group as operation ids spell it: "" -> Core, discovery.k8s.io -> Discovery."""
    return group.split(".")[0].capitalize() if group else "Core"


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _definition(kind: Kind) -> str:
    return kubeschema.definition_of(kind.group, kind.version, kind.kind)


def _list_definition(kind: Kind) -> str | None:
    try:
        return kubeschema.definition_of(kind.group, kind.version, f"{kind.kind}List")
    except KeyError:
        return None


def _sub_definition(kind: Kind, sub: Subresource) -> str:
    if sub.kind == "Scale":
        return kubeschema.definition_of("autoscaling", "v1", "Scale")
    return _definition(kind)


# ---- operations (shared by v2 and v3) -------------------------------------------------------------------


def _operations(kind: Kind) -> dict[str, dict[str, dict[str, Any]]]:
    """{path: {method: operation}}, an operation being {action, id, params, body, response, gvk}."""
    gv = "/" + _gv_path(kind.group, kind.version)
    scope = f"{gv}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"{gv}/{kind.plural}"
    name = "Namespaced" if kind.namespaced else ""
    title = f"{_group_name(kind.group)}{kind.version.capitalize()}"
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    obj, listed = _definition(kind), _list_definition(kind)
    paths: dict[str, dict[str, dict[str, Any]]] = {}

    def op(path: str, method: str, action: str, op_id: str, params: list[str], **kw: Any) -> None:
        entry = {"action": action, "id": op_id, "params": params, "gvk": gvk, "response": obj, **kw}
        paths.setdefault(path, {})[method] = entry

    verbs = set(kind.verbs)
    if "list" in verbs and listed:
        op(scope, "get", "list", f"list{title}{name}{kind.kind}", _LIST, response=listed)
        if kind.namespaced:
            op(
                f"{gv}/{kind.plural}",
                "get",
                "list",
                f"list{title}{kind.kind}ForAllNamespaces",
                _LIST,
                response=listed,
            )
    if "create" in verbs:
        op(scope, "post", "post", f"create{title}{name}{kind.kind}", _WRITE, body=obj)
    if "deletecollection" in verbs:
        op(
            scope,
            "delete",
            "deletecollection",
            f"deleteCollection{title}{name}{kind.kind}",
            [*_DELETE, *_LIST[:4]],
            response=f"{_META}Status",
        )
    item = f"{scope}/{{name}}"
    if "get" in verbs:
        op(item, "get", "get", f"read{title}{name}{kind.kind}", ["pretty"])
    if "update" in verbs:
        op(item, "put", "put", f"replace{title}{name}{kind.kind}", _WRITE, body=obj)
    if "patch" in verbs:
        op(item, "patch", "patch", f"patch{title}{name}{kind.kind}", _PATCH, body=f"{_META}Patch")
    if "delete" in verbs:
        op(item, "delete", "delete", f"delete{title}{name}{kind.kind}", _DELETE, response=f"{_META}Status")
    for sub in kind.subresources:
        sub_path, suffix = f"{item}/{sub.name}", sub.name.capitalize()
        target = _sub_definition(kind, sub)
        if sub.name == "log":
            op(sub_path, "get", "get", f"read{title}{name}{kind.kind}Log", _LOG, response="")
            continue
        if sub.name in ("exec", "portforward"):
            op(sub_path, "get", "connect", f"connect{title}Get{name}{kind.kind}{suffix}", [], response="")
            op(sub_path, "post", "connect", f"connect{title}Post{name}{kind.kind}{suffix}", [], response="")
            continue
        op(sub_path, "get", "get", f"read{title}{name}{kind.kind}{suffix}", ["pretty"], response=target)
        if "update" in sub.verbs:
            op(
                sub_path,
                "put",
                "put",
                f"replace{title}{name}{kind.kind}{suffix}",
                _WRITE,
                body=target,
                response=target,
            )
        if "patch" in sub.verbs:
            op(
                sub_path,
                "patch",
                "patch",
                f"patch{title}{name}{kind.kind}{suffix}",
                _PATCH,
                body=f"{_META}Patch",
                response=target,
            )
    return paths


def _path_params(path: str) -> list[str]:
    return [p for p in ("namespace", "name") if f"{{{p}}}" in path]


def _kinds_of(group: str, version: str) -> list[Kind]:
    return [k for k in KINDS if (k.group, k.version) == (group, version)]


def _group_versions() -> list[tuple[str, str]]:
    return list(dict.fromkeys((k.group, k.version) for k in KINDS))


def _models(names: set[str], prefix: str) -> dict[str, Any]:
    wanted = kubeschema.referenced(
        names | {f"{_META}Status", f"{_META}Patch", f"{_META}DeleteOptions", f"{_META}WatchEvent"}
    )
    return {n: kubeschema.openapi_model(n, prefix) for n in sorted(wanted)}


# ---- v2 ----------------------------------------------------------------------------------------------


@functools.cache
def v2_document() -> bytes:
    """``/openapi/v2`` as JSON (every group-version in one Swagger 2.0 document)."""
    paths: dict[str, Any] = {}
    names: set[str] = set()
    for kind in KINDS:
        for path, methods in _operations(kind).items():
            entry = paths.setdefault(path, {"parameters": _v2_path_params(path)})
            for method, op in methods.items():
                entry[method] = _v2_operation(op)
                names |= {n for n in (op["response"], op.get("body")) if n}
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "definitions": _models(names, V2_PREFIX),
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc).encode()


def _v2_path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": p, "in": "path", "required": True, "type": "string", "uniqueItems": True}
        for p in _path_params(path)
    ]


def _v2_operation(op: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if op.get("body"):
        params.append(
            {"name": "body", "in": "body", "required": True, "schema": {"$ref": V2_PREFIX + op["body"]}}
        )
    for p in op["params"]:
        ptype, description, where = _PARAMS[p]
        params.append(
            {"name": p, "in": where, "type": ptype, "uniqueItems": True, "description": description}
        )
    response: dict[str, Any] = {"description": "OK"}
    if op["response"]:
        response["schema"] = {"$ref": V2_PREFIX + op["response"]}
    else:
        response["schema"] = {"type": "string"}
    return {
        "operationId": op["id"],
        "consumes": list(_PATCH_TYPES) if op["action"] == "patch" else ["*/*"],
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {"200": response, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": op["action"],
        "x-kubernetes-group-version-kind": op["gvk"],
    }


# ---- v3 ----------------------------------------------------------------------------------------------


@functools.cache
def _v3_documents() -> dict[str, bytes]:
    return {_gv_path(g, v): json.dumps(_v3_document(g, v)).encode() for g, v in _group_versions()}


def v3_index() -> dict[str, Any]:
    """``/openapi/v3``: each group-version's document and the hash that versions its URL."""
    return {
        "paths": {
            gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={hashlib.sha512(doc).hexdigest().upper()}"}
            for gv, doc in _v3_documents().items()
        }
    }


def v3_document(gv: str) -> bytes | None:
    """The document of ``api/v1`` / ``apis/apps/v1`` ..., or None."""
    return _v3_documents().get(gv.strip("/"))


def _v3_document(group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    names: set[str] = set()
    for kind in _kinds_of(group, version):
        for path, methods in _operations(kind).items():
            entry = paths.setdefault(path, {"parameters": _v3_path_params(path)})
            for method, op in methods.items():
                entry[method] = _v3_operation(op)
                names |= {n for n in (op["response"], op.get("body")) if n}
    schemas = _models(names, V3_PREFIX)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {
            "schemas": {n: _v3_wrap_refs(s) for n, s in schemas.items()},
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }


def _v3_wrap_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 ignores siblings of ``$ref``: a property with a description refers through
    ``allOf`` (as upstream's documents do)."""
    out = dict(schema)
    for key in ("properties",):
        if key in out:
            out[key] = {k: _v3_property(v) for k, v in out[key].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _v3_property(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _v3_property(out["additionalProperties"])
    return out


def _v3_property(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema and len(schema) > 1:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {"allOf": [{"$ref": schema["$ref"]}], **rest}
    return _v3_wrap_refs(schema) if "$ref" not in schema else schema


def _v3_path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "uniqueItems": True}}
        for p in _path_params(path)
    ]


def _v3_operation(op: dict[str, Any]) -> dict[str, Any]:
    params = []
    for p in op["params"]:
        ptype, description, where = _PARAMS[p]
        params.append(
            {
                "name": p,
                "in": where,
                "description": description,
                "schema": {"type": ptype, "uniqueItems": True},
            }
        )
    out: dict[str, Any] = {"operationId": op["id"], "parameters": params}
    if op.get("body"):
        types = _PATCH_TYPES if op["action"] == "patch" else ("*/*",)
        out["requestBody"] = {
            "content": {t: {"schema": {"$ref": V3_PREFIX + op["body"]}} for t in types},
            "required": True,
        }
    schema = {"$ref": V3_PREFIX + op["response"]} if op["response"] else {"type": "string"}
    out["responses"] = {
        "200": {
            "description": "OK",
            "content": {t: {"schema": schema} for t in ("application/json", "application/yaml")},
        },
        "401": {"description": "Unauthorized"},
    }
    out["x-kubernetes-action"] = op["action"]
    out["x-kubernetes-group-version-kind"] = op["gvk"]
    return out
