"""A plan as text, in the terraform idiom: the plan's own representation (``str(plan)``, Jupyter
HTML, and the lines ``sdcluster plan`` prints). Pure functions; the terminal side is ``ui.render``.

Symbols: ``+`` create, ``~`` update in place, ``-/+`` replace (destroy, then create), ``+/-``
replace (create the replacement, then destroy), ``-`` destroy, ``=`` unchanged (with its reason),
``!`` kept on destroy, ``<=`` adopted into the state (imported).
"""

from __future__ import annotations

import html
import json
from typing import Any, assert_never

from .model import UNREADABLE, Action, Change, Plan, ReplaceOrder

Line = tuple[str, str]  # (rich style or "", text)
DELETE_ATTRS_SHOWN = 6

_COLORS = {
    "green": "#22863a",
    "yellow": "#b08800",
    "magenta": "#6f42c1",
    "red": "#cb2431",
    "dim": "#6a737d",
    "cyan": "#1b7c83",
}


def symbol(c: Change) -> str:
    match c.action:
        case Action.CREATE:
            return "+"
        case Action.UPDATE:
            return "~"
        case Action.REPLACE:
            return "+/-" if c.replace_order is ReplaceOrder.CREATE_FIRST else "-/+"
        case Action.DELETE:
            return "-"
        case Action.NOOP:
            return "<=" if c.adopt else "="
        case Action.KEEP:
            return "!"
        case _:
            assert_never(c.action)


def style(c: Change) -> str:
    match c.action:
        case Action.CREATE:
            return "green"
        case Action.UPDATE:
            return "yellow"
        case Action.REPLACE:
            return "magenta"
        case Action.DELETE:
            return "red"
        case Action.NOOP:
            return "cyan" if c.adopt else "dim"
        case Action.KEEP:
            return "cyan"
        case _:
            assert_never(c.action)


def verb(c: Change) -> str:
    adopted = " (after adopting it into the state)" if c.adopt else ""
    match c.action:
        case Action.CREATE:
            return "will be created"
        case Action.UPDATE:
            return "will be updated in-place" + adopted
        case Action.REPLACE:
            order = (
                "create the replacement, then destroy"
                if c.replace_order is ReplaceOrder.CREATE_FIRST
                else "destroy, then create the replacement"
            )
            return f"must be replaced ({order})" + adopted
        case Action.DELETE:
            return "will be destroyed"
        case Action.NOOP:
            return "will be imported (adopted into the state)" if c.adopt else "is unchanged"
        case Action.KEEP:
            return "will be kept"
        case _:
            assert_never(c.action)


def _value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if v is None:
        return "null"
    return json.dumps(v, sort_keys=True, default=str)


def _split(address: str, type_: str) -> tuple[str, str]:
    if address.startswith(type_ + "."):
        return type_, address[len(type_) + 1 :]
    kind, _, name = address.rpartition(".")
    return kind, name


def change_lines(c: Change) -> list[Line]:
    if c.action is Action.NOOP and not c.adopt:
        return [("dim", f"  = {c.address}: {c.reason}")]
    st, sym = style(c), symbol(c)
    kind, name = _split(c.address, c.type)
    lines: list[Line] = [("bold", f"  # {c.address} {verb(c)}")]
    # "does not exist" says nothing the verb does not; "not readable yet" does.
    if c.action is not Action.CREATE or UNREADABLE in c.reason:
        lines.append(("dim", f"  # ({c.reason})"))
    if c.action in (Action.KEEP, Action.NOOP):
        return lines
    lines.append((st, f"{sym:>3} resource {_value(kind)} {_value(name)} {{"))
    if c.action is Action.CREATE:
        width = max((len(k) for k in c.after or {}), default=0)
        lines += [(st, f"      + {k:<{width}} = {_value(v)}") for k, v in sorted((c.after or {}).items())]
    elif c.action is Action.DELETE:
        before = sorted((c.before or {}).items())
        shown = before[:DELETE_ATTRS_SHOWN]
        width = max((len(k) for k, _ in shown), default=0)
        lines += [(st, f"      - {k:<{width}} = {_value(v)}") for k, v in shown]
        if len(before) > len(shown):
            lines.append(("dim", f"        # ({len(before) - len(shown)} more attributes)"))
    else:
        width = max((len(d.path) for d in c.diffs), default=0)
        for d in c.diffs:
            note = " # forces replacement" if d.forces_replacement else ""
            if d.before is None:
                lines.append(("green", f"      + {d.path:<{width}} = {_value(d.after)}{note}"))
            elif d.after is None:
                lines.append(("red", f"      - {d.path:<{width}} = {_value(d.before)}{note}"))
            else:
                lines.append(
                    ("yellow", f"      ~ {d.path:<{width}} = {_value(d.before)} -> {_value(d.after)}{note}")
                )
    lines.append((st, "    }"))
    return lines


def summary_line(plan: Plan) -> str:
    n = plan.counts()
    if not plan.has_changes:
        what = "Nothing to destroy." if plan.destroy else "Your infrastructure matches the configuration."
        return f"No changes. {what}"
    kept = sum(1 for c in plan.changes if c.action is Action.KEEP)
    head = f"{n['import']} to import, " if n["import"] else ""
    tail = f", {kept} to keep" if kept else ""
    return f"Plan: {head}{n['add']} to add, {n['change']} to change, {n['destroy']} to destroy{tail}."


def plan_lines(plan: Plan) -> list[Line]:
    lines: list[Line] = []
    changes = [c for c in plan.changes if c.action is not Action.NOOP or c.adopt]
    noops = [c for c in plan.changes if c.action is Action.NOOP and not c.adopt]
    for c in noops:
        lines += change_lines(c)
    if noops and changes:
        lines.append(("", ""))
    if changes:
        lines.append(("", "sdcluster will perform the following actions:"))
        lines.append(("", ""))
        for c in changes:
            lines += change_lines(c)
            lines.append(("", ""))
    for w in plan.warnings:
        lines.append(("yellow", f"Warning: {w}"))
    if plan.warnings:
        lines.append(("", ""))
    lines.append(("bold", summary_line(plan)))
    return lines


def plan_text(plan: Plan) -> str:
    return "\n".join(text for _, text in plan_lines(plan))


def plan_html(plan: Plan) -> str:
    out = []
    for st, text in plan_lines(plan):
        color = _COLORS.get(st)
        esc = html.escape(text)
        if st == "bold":
            esc = f"<b>{esc}</b>"
        out.append(f'<span style="color:{color}">{esc}</span>' if color else esc)
    return '<pre style="font-family:monospace">' + "\n".join(out) + "</pre>"
