"""sdcluster: stand up a Stable Diffusion serving cluster on Google Cloud, terraform-style.

Example::

    import sdcluster
    cfg = sdcluster.Config.load("sdcluster.toml")
    plan = sdcluster.plan(cfg)
    state = sdcluster.apply(plan)

Importing this package is light: Google and Kubernetes libraries load only when a call needs them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from . import api as _api
from ._version import __version__
from .api import Workspace, load_plan, plan, save_plan, status, upload_model
from .engine import Change, Listener, Plan
from .errors import SdclusterError
from .state import State

if TYPE_CHECKING:
    from .config import Config


def _progress(listener: Listener | None) -> Listener | None:
    """In Jupyter, a call without a listener still shows its progress (see ui/notebook.py)."""
    if listener is not None:
        return listener
    from .ui.notebook import notebook_listener

    found: Listener | None = notebook_listener()
    return found


@functools.wraps(_api.apply)
def apply(target: Any, *, listener: Listener | None = None, **kw: Any) -> State:
    return _api.apply(target, listener=_progress(listener), **kw)


@functools.wraps(_api.pause)
def pause(config: Any, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    return _api.pause(config, listener=_progress(listener), **kw)


@functools.wraps(_api.resume)
def resume(config: Any, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    return _api.resume(config, listener=_progress(listener), **kw)


@functools.wraps(_api.destroy)
def destroy(config: Any, *, listener: Listener | None = None, **kw: Any) -> State:
    return _api.destroy(config, listener=_progress(listener), **kw)


__all__ = [
    "Change",
    "Config",
    "Plan",
    "SdclusterError",
    "State",
    "Workspace",
    "__version__",
    "apply",
    "destroy",
    "load_plan",
    "pause",
    "plan",
    "resume",
    "save_plan",
    "status",
    "upload_model",
]


def __getattr__(name: str) -> Any:
    """``Config`` is loaded on first use (pydantic is the heaviest import of the package)."""
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
