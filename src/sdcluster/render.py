"""Rendering for humans: plans in the terraform idiom, progress, tables. With cli.py, the only module
that formats for a terminal. Pure functions return text (or rich renderables); callers print.

Symbols: ``+`` create, ``~`` update in place, ``-/+`` replace, ``-`` destroy, ``=`` unchanged (with
its reason), ``!`` kept on destroy.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Change, Plan

SYMBOL = {
    "create": "+",
    "update": "~",
    "replace": "-/+",
    "delete": "-",
    "noop": "=",
    "keep": "!",
    "import": "<=",
}
STYLE = {
    "create": "green",
    "update": "yellow",
    "replace": "magenta",
    "delete": "red",
    "noop": "dim",
    "keep": "cyan",
    "import": "cyan",
}
VERB = {
    "create": "will be created",
    "update": "will be updated in-place",
    "replace": "must be replaced",
    "delete": "will be destroyed",
    "keep": "will be kept",
    "import": "will be imported (adopted into the state)",
}

Line = tuple[str, str]  # (rich style or "", text)
DELETE_ATTRS_SHOWN = 6


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
    if c.action == "noop":
        return [(STYLE["noop"], f"  = {c.address}: {c.reason}")]
    style = STYLE[c.action]
    sym = SYMBOL[c.action]
    kind, name = _split(c.address, c.type)
    lines: list[Line] = [("bold", f"  # {c.address} {VERB[c.action]}")]
    if c.action != "create":  # "does not exist" says nothing the verb does not
        lines.append(("dim", f"  # ({c.reason})"))
    if c.action in ("keep", "import"):
        return lines
    lines.append((style, f"{sym:>3} resource {_value(kind)} {_value(name)} {{"))
    if c.action == "create":
        width = max((len(k) for k in c.after or {}), default=0)
        lines += [
            (STYLE["create"], f"      + {k:<{width}} = {_value(v)}")
            for k, v in sorted((c.after or {}).items())
        ]
    elif c.action == "delete":
        before = sorted((c.before or {}).items())
        shown = before[:DELETE_ATTRS_SHOWN]
        width = max((len(k) for k, _ in shown), default=0)
        lines += [(STYLE["delete"], f"      - {k:<{width}} = {_value(v)}") for k, v in shown]
        if len(before) > len(shown):
            lines.append(("dim", f"        # ({len(before) - len(shown)} more attributes)"))
    else:
        width = max((len(d.path) for d in c.diffs), default=0)
        for d in c.diffs:
            note = " # forces replacement" if d.forces_replacement else ""
            if d.before is None:
                lines.append((STYLE["create"], f"      + {d.path:<{width}} = {_value(d.after)}{note}"))
            elif d.after is None:
                lines.append((STYLE["delete"], f"      - {d.path:<{width}} = {_value(d.before)}{note}"))
            else:
                lines.append(
                    (
                        STYLE["update"],
                        f"      ~ {d.path:<{width}} = {_value(d.before)} -> {_value(d.after)}{note}",
                    )
                )
    lines.append((style, "    }"))
    return lines


def plan_lines(plan: Plan) -> list[Line]:
    lines: list[Line] = []
    changes = [c for c in plan.changes if c.action != "noop"]
    noops = [c for c in plan.changes if c.action == "noop"]
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
    n = plan.counts()
    if not plan.has_changes:
        what = "Nothing to destroy." if plan.destroy else "Your infrastructure matches the configuration."
        lines.append(("bold", f"No changes. {what}"))
    else:
        kept = sum(1 for c in plan.changes if c.action == "keep")
        head = f"{n['import']} to import, " if n["import"] else ""
        tail = f", {kept} to keep" if kept else ""
        lines.append(
            (
                "bold",
                f"Plan: {head}{n['add']} to add, {n['change']} to change, {n['destroy']} to destroy{tail}.",
            )
        )
    return lines


def plan_text(plan: Plan) -> str:
    return "\n".join(text for _, text in plan_lines(plan))


def plan_html(plan: Plan) -> str:
    colors = {
        "green": "#22863a",
        "yellow": "#b08800",
        "magenta": "#6f42c1",
        "red": "#cb2431",
        "dim": "#6a737d",
        "cyan": "#1b7c83",
    }
    out = []
    for style, text in plan_lines(plan):
        color = colors.get(style)
        esc = html.escape(text)
        if style == "bold":
            esc = f"<b>{esc}</b>"
        out.append(f'<span style="color:{color}">{esc}</span>' if color else esc)
    return '<pre style="font-family:monospace">' + "\n".join(out) + "</pre>"


def rich_lines(lines: Iterable[Line]) -> Any:
    """A rich renderable of styled lines (rich decides whether a terminal gets color)."""
    from rich.text import Text

    text = Text()
    for style, line in lines:
        text.append(line + "\n", style=style or None)
    return text


def upload_progress_line(p: Any) -> str:
    """``uploading: 12.0/40.0 MiB (30%) at 8.1 MiB/s``."""
    mib = 1024 * 1024
    if p.phase == "checking":
        return f"checking {p.files_total} file(s) against the bucket..."
    pct = 100 * p.bytes_done / p.bytes_total if p.bytes_total else 100
    return f"{p.phase}: {p.bytes_done / mib:.1f}/{p.bytes_total / mib:.1f} MiB ({pct:.0f}%) at {p.rate_bps / mib:.1f} MiB/s"


_ING = {"create": "Creating", "update": "Modifying", "replace": "Replacing", "delete": "Destroying"}
_DONE = {"create": "Creation", "update": "Modifications", "replace": "Replacement", "delete": "Destruction"}


class ProgressPrinter:
    """A listener for engine events that prints terraform-style progress lines.

    On a terminal, long waits show a live status line per running resource (phase and a ticking
    elapsed time), one line per resource when several run at once; elsewhere (pipes, CI, Jupyter
    cells via rich's own handling, ``--json``) it prints plain lines, a progress message only when
    it changes.
    """

    def __init__(self, console: Any, live: bool | None = None) -> None:
        import threading

        self.console = console
        self.live_enabled = console.is_terminal if live is None else live
        self._status: dict[str, tuple[str, float]] = {}  # address -> (phase, started at)
        self._last: dict[str, str] = {}
        self._live: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressPrinter:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(
                console=self.console, refresh_per_second=4, transient=True, get_renderable=self._render
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self) -> Any:
        import time

        from rich.text import Text

        text = Text()
        now = time.monotonic()
        for address, (phase, since) in list(self._status.items()):
            text.append(f"  … {address}: {phase} [{now - since:.0f}s]\n", style="dim")
        return text

    def _print(self, line: str, style: str = "") -> None:
        console = self._live.console if self._live is not None else self.console
        console.print(line, style=style or None, highlight=False, markup=False)

    def __call__(self, event: Any) -> None:
        import time

        with self._lock:
            a = event.address
            if event.kind == "start":
                verb = _ING.get(event.action, event.action)
                self._status[a] = (f"{verb}...", time.monotonic())
                self._print(f"{a}: {verb}...")
            elif event.kind == "progress":
                since = self._status.get(a, ("", time.monotonic() - event.elapsed))[1]
                self._status[a] = (event.message, since)
                if self._live is None and self._last.get(a) != event.message:
                    self._print(f"{a}: {event.message}")
                self._last[a] = event.message
            elif event.kind == "done":
                self._status.pop(a, None)
                self._print(
                    f"{a}: {_DONE.get(event.action, event.action)} complete after {event.elapsed:.0f}s",
                    "green",
                )
            elif event.kind == "failed":
                self._status.pop(a, None)
                self._print(f"{a}: failed: {event.message}", "red")
