"""Progress for notebooks: ``sdcluster.apply(plan)`` in Jupyter shows what it is doing, as the
terminal does, instead of staying silent for the 10+ minutes a real cluster takes.

Example (what ``sdcluster.apply`` does when no listener is given)::

    listener = notebook_listener()      # None outside Jupyter
"""

from __future__ import annotations

from typing import Any


def notebook_listener() -> Any:
    """A progress printer for the running Jupyter kernel, or None when not in one."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_jupyter:
        return None
    from .render import ProgressPrinter

    # Live (redrawn) status lines need a terminal; a notebook gets one line per event.
    return ProgressPrinter(console, live=False)
