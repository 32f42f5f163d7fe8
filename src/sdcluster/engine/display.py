"""A plan as text, in the terraform idiom: the plan's own representation (``str(plan)``, Jupyter
HTML, and the lines ``sdcluster plan`` prints). Pure functions; the terminal side is ``ui.render``.

Symbols: ``+`` create, ``~`` update in place, ``-/+`` replace (destroy, then create), ``+/-``
replace (create the replacement, then destroy), ``-`` destroy, ``=`` unchanged (with its reason),
``!`` kept on destroy, ``<=`` adopted into the state (imported), ``<!`` a conflict: something with
our name that sdcluster did not make, which apply refuses to adopt unless told to.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
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
    if c.conflict:
        return "bold red"
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
    if c.conflict and c.adopt:
        return (
            "is a CONFLICT: it exists but sdcluster did not make it; apply refuses to adopt it unless told to"
        )
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


def _attr_lines(sym: str, st: str, key: str, width: int, value: Any, note: str = "") -> list[Line]:
    """One attribute; a list is shown element by element (terraform's way), not as one long value."""
    if isinstance(value, list) and value:
        return [
            (st, f"      {sym} {key:<{width}} = [{note}"),
            *[(st, f"          {_value(v)},") for v in value],
            (st, "        ]"),
        ]
    return [(st, f"      {sym} {key:<{width}} = {_value(value)}{note}")]


def _list_diff_lines(key: str, width: int, before: list[Any], after: list[Any], note: str) -> list[Line]:
    """``~ key = [`` then the elements: ``-`` removed, ``+`` added, unchanged ones without a sign."""
    import difflib

    lines: list[Line] = [("yellow", f"      ~ {key:<{width}} = [{note}")]
    a, b = [_value(x) for x in before], [_value(x) for x in after]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            lines += [("", f"            {x},") for x in a[i1:i2]]
            continue
        lines += [("red", f"          - {x},") for x in a[i1:i2]]
        lines += [("green", f"          + {x},") for x in b[j1:j2]]
    lines.append(("yellow", "        ]"))
    return lines


def change_lines(c: Change) -> list[Line]:
    if c.action is Action.NOOP and not c.adopt:
        # In a destroy plan a conflict is something under our address left running: not dim.
        return [("yellow" if c.conflict else "dim", f"  = {c.address}: {c.reason}")]
    st, sym = style(c), "<!" if c.conflict else symbol(c)
    kind, name = _split(c.address, c.type)
    lines: list[Line] = [("bold", f"  # {c.address} {verb(c)}")]
    # "does not exist" says nothing the verb does not; "not readable yet" (or what a create makes,
    # e.g. "model version 1: 1.9 GiB in 24 files") does.
    if c.action is not Action.CREATE or UNREADABLE in c.reason or not c.reason.endswith("does not exist"):
        lines.append(("dim", f"  # ({c.reason})"))
    if c.action in (Action.KEEP, Action.NOOP):
        return lines
    lines.append((st, f"{sym:>3} resource {_value(kind)} {_value(name)} {{"))
    if c.action is Action.CREATE:
        width = max((len(k) for k in c.after or {}), default=0)
        for k, v in sorted((c.after or {}).items()):
            lines += _attr_lines("+", st, k, width, v)
    elif c.action is Action.DELETE:
        before = sorted((c.before or {}).items())
        shown = before[:DELETE_ATTRS_SHOWN]
        width = max((len(k) for k, _ in shown), default=0)
        for k, v in shown:
            lines += _attr_lines("-", st, k, width, v)
        if len(before) > len(shown):
            lines.append(("dim", f"        # ({len(before) - len(shown)} more attributes)"))
    else:
        width = max((len(d.path) for d in c.diffs), default=0)
        for d in c.diffs:
            note = " # forces replacement" if d.forces_replacement else ""
            if d.before is None:
                lines += _attr_lines("+", "green", d.path, width, d.after, note)
            elif d.after is None:
                lines += _attr_lines("-", "red", d.path, width, d.before, note)
            elif isinstance(d.before, list) and isinstance(d.after, list):
                lines += _list_diff_lines(d.path, width, d.before, d.after, note)
            else:
                lines.append(
                    ("yellow", f"      ~ {d.path:<{width}} = {_value(d.before)} -> {_value(d.after)}{note}")
                )
    lines.append((st, "    }"))
    return lines


def summary_line(plan: Plan) -> str:
    n = plan.counts()
    conflicts = len(plan.conflicts())
    if plan.destroy and conflicts:
        left = f" {conflicts} left running (not in the state)."
    elif conflicts:
        left = (
            f" {conflicts} conflict(s): apply refuses until adopted "
            "(sdcluster import ADDRESS ID, or sdcluster apply --adopt)."
        )
    else:
        left = ""
    kept = sum(1 for c in plan.changes if c.action is Action.KEEP)
    kept_s = f", {kept} to keep" if kept else ""
    if not plan.has_changes:
        if plan.destroy:
            return "No changes. Nothing to destroy" + (f" ({kept} kept)." if kept else ".") + left
        return "No changes. Your infrastructure matches the configuration." + left
    head = f"{n['import']} to import, " if n["import"] else ""
    return f"Plan: {head}{n['add']} to add, {n['change']} to change, {n['destroy']} to destroy{kept_s}.{left}"


def unchanged(plan: Plan) -> list[Change]:
    return [c for c in plan.changes if c.action is Action.NOOP and not c.adopt]


def unchanged_line(plan: Plan) -> Line | None:
    """All unchanged resources in one line (``--show-unchanged`` lists them)."""
    same = unchanged(plan)
    if not same:
        return None
    return ("dim", f"  = {len(same)} unchanged (list them: sdcluster plan --show-unchanged)")


def plan_lines(plan: Plan, *, show_unchanged: bool = False) -> list[Line]:
    lines: list[Line] = []
    changes = [c for c in plan.changes if c.action is not Action.NOOP or c.adopt]
    if show_unchanged:
        for c in unchanged(plan):
            lines += change_lines(c)
    else:
        one = unchanged_line(plan)
        if one is not None:
            lines.append(one)
    if lines and changes:
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
    if plan.cost:
        lines += [("", ""), *cost_lines(plan.cost)]
    return lines


def _price(x: float) -> str:
    """A unit price as Google writes them: at least two decimals, no trailing zeros ($0.01499, $0.10)."""
    whole, _, frac = f"{x:.6f}".rstrip("0").partition(".")
    return f"${whole}.{frac:0<2}"


def _hourly(x: float | None) -> str:
    return "not priced" if x is None else f"${x:.4f}/h"


def _nodes(n: int) -> str:
    return f"{n} node{'' if n == 1 else 's'}"


def cost_lines(cost: Mapping[str, Any], *, now: bool = False) -> list[Line]:
    """The cost block: the total per hour and month, then one line per item (with a second column
    at the maximum node count when ``cost`` has one), what is not estimated, and the prices' source.

    ``cost`` is the provider's plain data (``Plan.cost``, ``status()["cost"]``)."""
    at_max = cost.get("max")
    head = f"Cost{' now' if now else ''}: ${cost['hourly_usd']:.4f}/hour"
    head += (
        f" {'' if now else 'while running '}(${cost['monthly_usd']:.2f}/month) with {_nodes(cost['nodes'])}"
    )
    if at_max:
        head += (
            f"; ${at_max['hourly_usd']:.4f}/hour (${at_max['monthly_usd']:.2f}/month) "
            f"at the maximum of {_nodes(at_max['nodes'])}"
        )
    lines: list[Line] = [("bold", head)]
    width = 11
    if at_max:
        lines.append(("dim", f"  {_nodes(cost['nodes']):<{width}} {_nodes(at_max['nodes'])}"))
    for item in cost["items"]:
        amounts = f"{_hourly(item['hourly_usd']):<{width}}"
        if at_max:
            amounts += f" {_hourly(item.get('max_hourly_usd')):<{width}}"
        text = f"{item['name']}: {item['description']}"
        if item["unit_price_usd"] is not None:
            text += f" at {_price(item['unit_price_usd'])} per {item['price_unit']}"
        if item["note"]:
            text += f"; {item['note']}"
        lines.append(("yellow" if item["hourly_usd"] is None else "", f"  {amounts} {text}".rstrip()))
    for what in cost["not_estimated"]:
        lines.append(("dim", f"  Not estimated: {what}."))
    source = str(cost["source"])
    if cost.get("source_note"):
        source += f", because {cost['source_note']}"
    elif not source.startswith("price snapshot"):
        source += f", read {cost['prices_as_of']}"
    lines.append(("dim", f"  Prices: {source}."))
    return lines


def plan_text(plan: Plan) -> str:
    return "\n".join(text for _, text in plan_lines(plan))


def _html_lines(lines: list[Line]) -> str:
    out = []
    for st, text in lines:
        words = st.split()
        color = next((_COLORS[w] for w in words if w in _COLORS), None)
        esc = html.escape(text)
        if "bold" in words:
            esc = f"<b>{esc}</b>"
        out.append(f'<span style="color:{color}">{esc}</span>' if color else esc)
    return "\n".join(out)


_PRE = '<pre style="font-family:monospace;white-space:pre-wrap;overflow-wrap:anywhere">'


def plan_html(plan: Plan) -> str:
    """For Jupyter: the summary and warnings first, then the changes; unchanged resources folded into
    one expandable line; long lines wrap instead of scrolling sideways."""
    head: list[Line] = [("bold", summary_line(plan))] + [("yellow", f"Warning: {w}") for w in plan.warnings]
    if plan.cost:
        head += cost_lines(plan.cost)
    body: list[Line] = []
    for c in plan.changes:
        if c.action is not Action.NOOP or c.adopt:
            body += [*change_lines(c), ("", "")]
    parts = [_PRE + _html_lines(head) + "</pre>"]
    if body:
        parts.append(_PRE + _html_lines(body) + "</pre>")
    same = unchanged(plan)
    if same:
        rows = _html_lines([line for c in same for line in change_lines(c)])
        parts.append(f"<details><summary>{len(same)} unchanged</summary>{_PRE}{rows}</pre></details>")
    return "<div>" + "".join(parts) + "</div>"
