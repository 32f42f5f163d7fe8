"""The upstream schema definitions of ``KUBERNETES_VERSION`` (as kubernetes-validate ships them) and
what the apiserver does with them beyond validation: unknown fields (``fieldValidation``), empty maps
and lists that the Go types omit, and the models the OpenAPI documents are built from.

kubernetes-validate ships JSON Schema converted from the Kubernetes OpenAPI: ``$ref`` to
``#/$defs/NAME``, nullable types (``["string", "null"]``), ``additionalProperties: false`` on structs
(the strict variant), a map's value type under ``additionalProperties``, and the ``x-kubernetes-*``
markers (group/version/kind, patch strategies, list types) kept as upstream has them.

Example::

    unknown = unknown_fields(deployment)            # ["spec.foo", ...]
    drop_empty(deployment)                          # annotations: {} goes, as in Go's omitempty
"""

from __future__ import annotations

import functools
import json
from typing import Any

from .kubekinds import KUBERNETES_VERSION

Schema = dict[str, Any]


def strict_file(name: str) -> Any:
    """A file of the strict schemas kubernetes-validate ships for ``KUBERNETES_VERSION``."""
    import importlib.resources

    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    return root.joinpath(f"v{KUBERNETES_VERSION}.0-local-strict", name)


@functools.cache
def definitions_document() -> Schema:
    """``_definitions.json``, parsed once per process (every write is validated against it)."""
    return dict(json.loads(strict_file("_definitions.json").read_text(encoding="utf-8")))


@functools.cache
def definitions() -> dict[str, Schema]:
    """Every definition by name (``io.k8s.api.apps.v1.Deployment``), from the strict schemas."""
    return dict(definitions_document()["$defs"])


@functools.cache
def by_gvk() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> definition name, from the ``x-kubernetes-group-version-kind`` marks."""
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def definition_of(group: str, version: str, kind: str) -> str:
    return by_gvk()[(group, version, kind)]


def resolve(schema: Schema) -> Schema:
    """The schema a ``$ref`` points at (or the schema itself)."""
    while "$ref" in schema:
        schema = definitions()[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def is_map(schema: Schema) -> bool:
    """A Go map (free keys with one value type), as opposed to a struct."""
    schema = resolve(schema)
    return isinstance(schema.get("additionalProperties"), dict) and "properties" not in schema


# ---- unknown fields (fieldValidation) --------------------------------------------------------------


def unknown_fields(obj: dict[str, Any], root: Schema | None = None) -> list[str]:
    """The paths of fields the schema does not declare (``spec.template.spec.containers[0].foo``), in
    document order; ``root`` defaults to the object's own kind."""
    if root is None:
        root = {"$ref": "#/$defs/" + _root_name(obj)}
    out: list[str] = []
    _walk_unknown(obj, root, "", out, remove=False)
    return out


def drop_unknown(obj: dict[str, Any]) -> list[str]:
    """Remove undeclared fields (what the apiserver's decoder does); returns their paths."""
    out: list[str] = []
    _walk_unknown(obj, {"$ref": "#/$defs/" + _root_name(obj)}, "", out, remove=True)
    return out


def _root_name(obj: dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    return definition_of(group, version, str(obj.get("kind", "")))


def _walk_unknown(value: Any, schema: Schema, path: str, out: list[str], remove: bool) -> None:
    schema = resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:
            for key in list(value):
                where = f"{path}.{key}" if path else key
                if key in props:
                    _walk_unknown(value[key], props[key], where, out, remove)
                elif schema.get("additionalProperties") is False:
                    out.append(where)
                    if remove:
                        del value[key]
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                _walk_unknown(item, schema["additionalProperties"], f"{path}[{key}]", out, remove)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk_unknown(item, schema["items"], f"{path}[{i}]", out, remove)


# ---- what Go's encoding omits --------------------------------------------------------------------------


def drop_empty(obj: dict[str, Any]) -> None:
    """Drop empty maps and empty optional lists, as the Go types' ``omitempty`` does on the way in and
    out of the apiserver (``annotations: {}`` is not stored); empty structs stay (``resources: {}``)."""
    _walk_empty(obj, {"$ref": "#/$defs/" + _root_name(obj)})


def _walk_empty(value: Any, schema: Schema) -> None:
    schema = resolve(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            return
        required = set(schema.get("required") or [])
        for key in list(value):
            if key not in props:
                continue
            sub, item = props[key], value[key]
            empty_map = isinstance(item, dict) and not item and is_map(sub)
            if empty_map or (isinstance(item, list) and not item and key not in required):
                del value[key]
            else:
                _walk_empty(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _walk_empty(item, schema["items"])


# ---- OpenAPI models ----------------------------------------------------------------------------------

# Definitions whose JSON Schema form is a oneOf of types; upstream's OpenAPI gives them as one string.
_SCALARS: dict[str, Schema] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


def openapi_model(name: str, ref_prefix: str) -> Schema:
    """Definition ``name`` as an OpenAPI schema (v2: ``#/definitions/``, v3: ``#/components/schemas/``)."""
    source = definitions()[name]
    if name in _SCALARS:
        return {"description": source.get("description", ""), **_SCALARS[name]}
    return _openapi(source, ref_prefix, top=True)


def _openapi(schema: Schema, ref_prefix: str, top: bool = False) -> Schema:
    out: Schema = {}
    for key, value in schema.items():
        if key == "$ref":
            out["$ref"] = ref_prefix + value.rsplit("/", 1)[1]
        elif key == "type":
            types = [t for t in (value if isinstance(value, list) else [value]) if t != "null"]
            if types:
                out["type"] = types[0]
        elif key == "properties":
            props = {}
            for pname, pschema in value.items():
                if not top or pname not in ("apiVersion", "kind"):
                    props[pname] = _openapi(pschema, ref_prefix)
                else:  # the converter added enums for these; upstream has plain strings
                    props[pname] = {k: v for k, v in _openapi(pschema, ref_prefix).items() if k != "enum"}
            out["properties"] = props
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = _openapi(value, ref_prefix)
        elif key == "items":
            out["items"] = _openapi(value, ref_prefix) if isinstance(value, dict) else value
        elif key == "oneOf":
            continue  # only the int-or-string / quantity forms use it, handled by name
        else:
            out[key] = value
    return out


def referenced(names: set[str]) -> set[str]:
    """``names`` and every definition they reach through ``$ref``."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _refs(definitions()[name])
    return seen


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else []
        for v in node.values():
            out += _refs(v)
        return out
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
