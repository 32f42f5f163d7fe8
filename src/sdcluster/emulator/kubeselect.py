"""Label and field selectors of list and watch requests."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .kubeerrors import bad_request

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


def field_matcher(selector: str, allowed: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    """A predicate over objects for ``involvedObject.name=x``, ``status.phase!=Running``...; a field
    outside ``allowed`` (the kind's selectable fields) is 400, as upstream's field label conversion."""
    checks = [_field_requirement(req.strip(), allowed) for req in _split_requirements(selector)]
    return lambda obj: all(c(obj) for c in checks)


def _field_requirement(req: str, allowed: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", req)
    if not m:
        raise bad_request(f"invalid field selector: '{req}'")
    path, op, value = m.groups()
    if path not in allowed:
        raise bad_request(f"field label not supported: {path}")
    value = value.strip()
    return lambda obj: (value in _field_values(obj, path)) != (op == "!=")


def _field_values(obj: dict[str, Any], path: str) -> list[str]:
    """The values a field selector compares with (several for ``status.podIPs``)."""
    if path == "source":  # an event's source is its component
        return [str((obj.get("source") or {}).get("component", ""))]
    if path == "status.podIPs":
        return [str(p.get("ip", "")) for p in (obj.get("status") or {}).get("podIPs") or []] or [""]
    if path in ("spec.hostNetwork", "spec.unschedulable"):
        return [str(bool(_dotted_get(obj, path) == "True")).lower()]
    return [_dotted_get(obj, path)]


def _dotted_get(obj: Any, path: str) -> str:
    cur = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)
