"""Rendering for a terminal: styled lines through rich, upload progress, and the live progress of an
apply. With ``cli.py`` the only code that talks to a terminal; the plan's text itself is
``engine.display`` (the plan renders itself in notebooks too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..engine.display import Line, cost_lines, plan_lines

__all__ = ["Line", "ProgressPrinter", "cost_lines", "plan_lines", "rich_lines", "upload_progress_line"]


def rich_lines(lines: Iterable[Line]) -> Any:
    """A rich renderable of styled lines (rich decides whether a terminal gets color)."""
    from rich.text import Text

    text = Text()
    for style, line in lines:
        text.append(line + "\n", style=style or None)
    return text


def upload_progress_line(p: Any) -> str:
    """``uploading: 12.0/40.0 MiB (30%) at 8.1 MiB/s, ETA 4 s`` (``UploadProgress.describe``)."""
    return str(p.describe())


_ING = {"create": "Creating", "update": "Modifying", "replace": "Replacing", "delete": "Destroying"}
_DONE = {"create": "Creation", "update": "Modifications", "replace": "Replacement", "delete": "Destruction"}


class ProgressPrinter:
    """A listener for engine events that prints terraform-style progress lines.

    On a terminal, long waits show a live status line per running resource (phase and a ticking
    elapsed time), one line per resource when several run at once; elsewhere (pipes, CI, Jupyter
    cells via rich's own handling, ``--json``) it prints plain lines, a progress message only when
    it changes. ``verbose``: also each ``detail`` event (e.g. every file of a model upload).
    """

    def __init__(self, console: Any, live: bool | None = None, *, verbose: bool = False) -> None:
        import threading

        self.console = console
        self.verbose = verbose  # also print "detail" events (each file of an upload)
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
            elif event.kind == "detail":
                if self.verbose:
                    self._print(f"{a}: {event.message}", "dim")
            elif event.kind == "done":
                self._status.pop(a, None)
                self._print(
                    f"{a}: {_DONE.get(event.action, event.action)} complete after {event.elapsed:.0f}s",
                    "green",
                )
            elif event.kind == "failed":
                self._status.pop(a, None)
                self._print(f"{a}: failed: {event.message}", "red")
