"""How the Kubernetes API server merges writes and tracks who owns which field (pure, no I/O).

- **Field sets** in the ``FieldsV1`` wire format of ``metadata.managedFields``: a path is a tuple of
  ``f:<field>`` (struct or map member) and ``k:{"name":"c"}`` (an item of an associative list,
  named by its key fields) elements; ``.`` marks ownership of a map or list item itself.
- **Server-side apply** (``apply``): conflicts with other managers, ``force`` taking ownership, and
  removal of fields a manager stopped applying.
- **Update ownership** (``update_ownership``) for create/replace/merge-patch writers.
- **Strategic merge patch**, **JSON merge patch** (RFC 7386) and **JSON patch** (RFC 6902).

The schema knowledge is the small slice sdcluster's objects touch (containers, ports, env, volumes,
labels, selectors); everything else is a struct of fields or an atomic list, as in upstream.

Example::

    obj = apply(None, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                       "data": {"a": "1"}}, manager="me", now="2024-01-01T00:00:00Z")
    obj["metadata"]["managedFields"][0]["fieldsV1"]   # {"f:data": {".": {}, "f:a": {}}}
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]

# Associative lists ("listType: map") and their key fields, by field name.
_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
}
# A missing key field takes its API default when naming an item (ports without protocol are TCP).
_KEY_DEFAULTS = {"protocol": "TCP"}
# Maps with free-form keys: granular (each key owned separately) and marked with "." when owned.
_FREEFORM_MAPS = {"labels", "annotations", "data", "binaryData", "requests", "limits"}
# Fields upstream declares atomic: owned and replaced as a whole.
_ATOMIC = {"selector", "nodeSelector", "finalizers", "args", "command", "metrics"}
# Never owned by a manager: identity, server-set metadata and the status subresource.
_UNOWNED_TOP = {"apiVersion", "kind", "status"}
_UNOWNED_METADATA = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
}


class MergeError(Exception):
    """The write cannot be merged (e.g. a list item without its key field). ``field`` is dotted."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Conflict:
    manager: str
    api_version: str
    path: Path


class ApplyConflict(Exception):
    """Fields the applier would change that another manager owns (HTTP 409 unless force=true)."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        super().__init__(conflict_message(conflicts))


def conflict_message(conflicts: list[Conflict]) -> str:
    """The apiserver's wording, e.g. ``Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas``."""
    n = len(conflicts)
    by_manager: dict[tuple[str, str], list[str]] = {}
    for c in conflicts:
        by_manager.setdefault((c.manager, c.api_version), []).append(path_str(c.path))
    parts = []
    for (manager, api_version), paths in by_manager.items():
        if len(paths) == 1:
            parts.append(f'conflict with "{manager}" using {api_version}: {paths[0]}')
        else:
            parts.append(
                f'conflicts with "{manager}" using {api_version}:\n' + "\n".join(f"- {p}" for p in paths)
            )
    return f"Apply failed with {n} conflict{'s' if n > 1 else ''}: " + "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Paths and field sets


def list_keys(names: tuple[str, ...]) -> tuple[str, ...] | None:
    """Key fields of the associative list at field-name path ``names``, None when atomic.

    Example: ``list_keys(("spec", "template", "spec", "containers", "ports"))`` -> ``("containerPort", "protocol")``.
    """
    last = names[-1]
    if last == "ports":
        in_container = any(n in ("containers", "initContainers", "ephemeralContainers") for n in names)
        return ("containerPort", "protocol") if in_container else ("port", "protocol")
    return _LIST_KEYS.get(last)


def item_key(item: Any, keys: tuple[str, ...], field: str) -> str:
    """The ``k:{...}`` path element naming ``item`` (MergeError when a key field is missing)."""
    if not isinstance(item, dict):
        raise MergeError(field, "associative list with keys has an element that is not a map")
    named: dict[str, Any] = {}
    for k in keys:
        if k in item:
            named[k] = item[k]
        elif k in _KEY_DEFAULTS:
            named[k] = _KEY_DEFAULTS[k]
        else:
            raise MergeError(field, f'associative list with keys has an element that omits key field "{k}"')
    return "k:" + json.dumps(named, sort_keys=True, separators=(",", ":"))


def fields_of(obj: dict[str, Any]) -> set[Path]:
    """Every field ``obj`` sets, as owned paths (identity, server metadata and status excluded)."""
    out: set[Path] = set()
    for k, v in obj.items():
        if k in _UNOWNED_TOP:
            continue
        if k == "metadata" and isinstance(v, dict):
            meta = {mk: mv for mk, mv in v.items() if mk not in _UNOWNED_METADATA}
            if meta:
                _walk({"metadata": meta}, (), (), out)
            continue
        _walk({k: v}, (), (), out)
    return out


def _walk(value: dict[str, Any], path: Path, names: tuple[str, ...], out: set[Path]) -> None:
    for k, v in value.items():
        p, n = (*path, f"f:{k}"), (*names, k)
        keys = list_keys(n) if isinstance(v, list) else None
        if isinstance(v, dict) and v and k not in _ATOMIC:
            if k in _FREEFORM_MAPS:
                out.add(p)
            _walk(v, p, n, out)
        elif keys is not None and v:
            for i, item in enumerate(v):
                ip = (*p, item_key(item, keys, _dotted(n, i)))
                out.add(ip)
                _walk(item, ip, n, out)
        else:
            out.add(p)


def _dotted(names: tuple[str, ...], index: int | None = None) -> str:
    s = ".".join(names)
    return f"{s}[{index}]" if index is not None else s


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    """The nested ``fieldsV1`` form, e.g. ``{("f:spec", "f:replicas")}`` -> ``{"f:spec": {"f:replicas": {}}}``."""
    root: dict[str, Any] = {}
    for p in sorted(paths):
        node = root
        for el in p:
            node = node.setdefault(el, {})
    for p in paths:
        node = root
        for el in p:
            node = node[el]
        if node and "." not in node:
            node["."] = {}
    return root


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for el, sub in tree.items():
        if el == ".":
            out.add(prefix)
            continue
        p = (*prefix, el)
        if sub:
            out |= from_fields_v1(sub, p)
        else:
            out.add(p)
    return out


def leaves(paths: set[Path]) -> set[Path]:
    """Paths that are not a proper prefix of another path of the set (the values, not containers)."""
    prefixes = {p[:i] for p in paths for i in range(1, len(p))}
    return paths - prefixes


def path_str(path: Path) -> str:
    """Apiserver notation: ``.spec.template.spec.containers[name="c"].image``."""
    s = ""
    for el in path:
        if el.startswith("f:"):
            s += "." + el[2:]
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
    return s


_MISSING = object()


def get_at(obj: Any, path: Path) -> Any:
    """The value at ``path`` or ``_MISSING``."""
    cur = obj
    for el in path:
        if el.startswith("f:") and isinstance(cur, dict):
            cur = cur.get(el[2:], _MISSING)
        elif el.startswith("k:") and isinstance(cur, list):
            cur = _find_item(cur, el)
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def _find_item(items: list[Any], el: str) -> Any:
    key: dict[str, Any] = json.loads(el[2:])
    for item in items:
        if isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in key.items()):
            return item
    return _MISSING


def remove_at(obj: Any, path: Path) -> None:
    """Delete the field or list item at ``path`` (no-op when it is gone already)."""
    parent = get_at(obj, path[:-1])
    el = path[-1]
    if el.startswith("f:") and isinstance(parent, dict):
        parent.pop(el[2:], None)
    elif el.startswith("k:") and isinstance(parent, list):
        item = _find_item(parent, el)
        if item is not _MISSING:
            parent.remove(item)


# --------------------------------------------------------------------------------------------------
# managedFields entries


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not obj:
        return []
    return copy.deepcopy(obj.get("metadata", {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, now: str, paths: set[Path]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


def _store_entries(obj: dict[str, Any], entries: list[tuple[dict[str, Any], set[Path]]]) -> None:
    kept = []
    for entry, paths in entries:
        if paths:
            entry["fieldsV1"] = to_fields_v1(paths)
            kept.append(entry)
    meta = obj.setdefault("metadata", {})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def without_times(obj: dict[str, Any] | None) -> Any:
    """``obj`` with managedFields times blanked: equal objects mean the write changed nothing."""
    if obj is None:
        return None
    o = copy.deepcopy(obj)
    for e in o.get("metadata", {}).get("managedFields") or []:
        e.pop("time", None)
    return o


# --------------------------------------------------------------------------------------------------
# Server-side apply


def merge_applied(live: Any, applied: Any, names: tuple[str, ...] = ()) -> Any:
    """``applied`` laid over ``live``: maps merge, associative lists merge by key, the rest is replaced."""
    if isinstance(live, dict) and isinstance(applied, dict) and (not names or names[-1] not in _ATOMIC):
        out = dict(live)
        for k, v in applied.items():
            if v is None:  # an explicit null in an applied configuration removes the field
                out.pop(k, None)
            else:
                out[k] = merge_applied(live.get(k, _MISSING), v, (*names, k))
        return out
    keys = list_keys(names) if names and isinstance(applied, list) else None
    if keys is not None and isinstance(live, list) and isinstance(applied, list):
        field = _dotted(names)
        live_by_key = {item_key(i, keys, field): i for i in live if isinstance(i, dict)}
        merged, seen = [], set()
        for item in applied:
            k = item_key(item, keys, field)
            seen.add(k)
            merged.append(merge_applied(live_by_key.get(k, _MISSING), item, names))
        merged += [i for k, i in live_by_key.items() if k not in seen]
        return merged
    return copy.deepcopy(applied)


def apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    now: str,
    force: bool = False,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: create).

    Raises ApplyConflict when another manager owns a field ``applied`` sets to a different value
    (unless ``force``, which moves ownership to ``manager``). Fields ``manager`` applied before and
    omits now are removed unless another manager owns them. ``managedFields`` is updated.
    """
    api_version = str(applied.get("apiVersion", ""))
    new_set = fields_of(applied)
    entries = [(e, from_fields_v1(e.get("fieldsV1") or {})) for e in _entries(live)]
    mine = next(
        (i for i, (e, _) in enumerate(entries) if e["manager"] == manager and e["operation"] == "Apply"), None
    )
    previous = entries[mine][1] if mine is not None else set()

    conflicts: list[tuple[int, Conflict]] = []
    applied_leaves = leaves(new_set)
    for i, (entry, owned) in enumerate(entries):
        if i == mine:
            continue
        for p in sorted(applied_leaves & owned):
            if get_at(live, p) != get_at(applied, p):
                conflicts.append((i, Conflict(entry["manager"], entry.get("apiVersion", api_version), p)))
    if conflicts and not force:
        raise ApplyConflict([c for _, c in conflicts])
    for i, c in conflicts:
        entries[i][1].discard(c.path)

    merged: dict[str, Any] = merge_applied(copy.deepcopy(live) if live else {}, applied)
    others = set().union(*(owned for i, (_, owned) in enumerate(entries) if i != mine))
    _remove_abandoned(merged, previous - new_set, others)

    if mine is None:
        entries.append((_entry(manager, "Apply", api_version, now, new_set), new_set))
    else:
        entry = entries[mine][0]
        entry.update(apiVersion=api_version, time=now)
        entries[mine] = (entry, new_set)
    _store_entries(merged, entries)
    return merged


def _remove_abandoned(obj: dict[str, Any], abandoned: set[Path], others: set[Path]) -> None:
    """Remove what the applier stopped applying, keeping what any other manager still owns."""
    owned_prefixes = {q[:i] for q in others for i in range(1, len(q) + 1)}
    abandoned_leaves = leaves(abandoned)
    # Shorter first, so a removed list item takes its fields with it.
    for p in sorted(abandoned, key=len):
        if p in owned_prefixes:
            continue
        if p[-1].startswith("k:") or p in abandoned_leaves:
            remove_at(obj, p)
    # Then maps the applier owned ("."), when nothing is left in them.
    for p in sorted(abandoned, key=len, reverse=True):
        if p not in owned_prefixes and get_at(obj, p) in ({}, []):
            remove_at(obj, p)


# --------------------------------------------------------------------------------------------------
# Ownership for Update operations (create, replace, merge/strategic/JSON patch)


def update_ownership(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, now: str, subresource: str = ""
) -> None:
    """Record in ``new``'s managedFields that ``manager`` (operation Update) set what changed.

    Fields that changed move to ``manager``; fields that disappeared leave every owner.
    """
    old_set = fields_of(old) if old else set()
    new_set = fields_of(new)
    changed = {
        p for p in new_set if p not in old_set or (p in leaves(new_set) and get_at(old, p) != get_at(new, p))
    }
    gone = old_set - new_set
    api_version = str(new.get("apiVersion", ""))
    entries = [(e, from_fields_v1(e.get("fieldsV1") or {})) for e in _entries(old)]
    mine = next(
        (i for i, (e, _) in enumerate(entries) if e["manager"] == manager and e["operation"] == "Update"),
        None,
    )
    for i, (_, owned) in enumerate(entries):
        owned -= gone
        if i != mine:
            owned -= leaves(changed)
    if changed:
        if mine is None:
            entry = _entry(manager, "Update", api_version, now, changed)
            if subresource:
                entry["subresource"] = subresource
            entries.append((entry, set(changed)))
        else:
            entries[mine][0].update(apiVersion=api_version, time=now)
            entries[mine][1].update(changed)
    _store_entries(new, entries)


# --------------------------------------------------------------------------------------------------
# Patches


def strategic_merge(target: Any, patch: Any, names: tuple[str, ...] = ()) -> Any:
    """Kubernetes strategic merge patch: like a merge patch, but lists of containers, ports, env,
    volumes... merge by their key (``name``, ``containerPort``...), and ``$patch: delete|replace``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue  # $setElementOrder/$retainKeys: ordering hints, not modelled
        n = (*names, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = strategic_merge(out.get(k), v, n)
        elif isinstance(v, list) and list_keys(n) is not None and isinstance(out.get(k), list):
            out[k] = _merge_keyed_list(out[k], v, n)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge_keyed_list(live: list[Any], patch: list[Any], names: tuple[str, ...]) -> list[Any]:
    keys = list_keys(names) or ()
    key = keys[0]  # strategic merge uses the first key only (patchMergeKey)
    out = list(live)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise MergeError(_dotted(names), f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append({k: v for k, v in item.items() if not k.startswith("$")})
        else:
            out[idx] = strategic_merge(out[idx], item, names)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, move, copy)."""
    if not isinstance(ops, list):
        raise MergeError("", "json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise MergeError("", f"invalid JSON patch operation {op!r}")
        kind, path = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise MergeError("", f"missing value for {kind} operation")
        if kind == "test":
            if _pointer_get(doc, path) != op["value"]:
                raise MergeError("", f"testing value {op['path']} failed")
        elif kind == "remove":
            doc = _pointer_set(doc, path, _MISSING, insert=False)
        elif kind in ("add", "replace"):
            if kind == "replace":
                _pointer_get(doc, path)
            doc = _pointer_set(doc, path, copy.deepcopy(op["value"]), insert=kind == "add")
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_pointer_get(doc, src))
            if kind == "move":
                doc = _pointer_set(doc, src, _MISSING, insert=False)
            doc = _pointer_set(doc, path, value, insert=True)
        else:
            raise MergeError("", f"unsupported JSON patch operation {kind!r}")
    return doc


def _pointer(s: str) -> list[str]:
    if s == "":
        return []
    if not s.startswith("/"):
        raise MergeError("", f"invalid JSON pointer {s!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in s[1:].split("/")]


def _pointer_get(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise MergeError("", f"path /{'/'.join(parts)} does not exist")
    return cur


def _pointer_set(doc: Any, parts: list[str], value: Any, insert: bool) -> Any:
    if not parts:
        return None if value is _MISSING else value
    parent = _pointer_get(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if value is _MISSING:
            if last not in parent:
                raise MergeError("", f"path /{'/'.join(parts)} does not exist")
            del parent[last]
        else:
            parent[last] = value
    elif isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if idx < 0 or idx > len(parent) or (idx == len(parent) and not (insert and value is not _MISSING)):
            raise MergeError("", f"path /{'/'.join(parts)} is out of range")
        if value is _MISSING:
            parent.pop(idx)
        elif insert:
            parent.insert(idx, value)
        else:
            parent[idx] = value
    else:
        raise MergeError("", f"path /{'/'.join(parts)} does not exist")
    return doc
