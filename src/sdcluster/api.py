"""The library API: plan, apply, destroy and friends, for terminals and notebooks alike.

Example (in a notebook)::

    import sdcluster
    cfg = sdcluster.Config.load("sdcluster.toml")
    p = sdcluster.plan(cfg)        # renders as a diff
    state = sdcluster.apply(p)     # returns the new State
    sdcluster.destroy(cfg)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StalePlan, UsageError
from .plan import Listener, Plan, check_fresh, execute, plan_changes
from .state import Backend, State, backend_for

if TYPE_CHECKING:
    from .config import Config
    from .stack import Stack


@dataclass
class Workspace:
    """A configuration bound to its state backend and its stack of resources."""

    config: Config
    backend: Backend
    stack: Stack

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        state: str | Backend | None = None,
        emulator: str | None = None,
        stack: Stack | None = None,
        delete_bucket: bool = False,
        force_bucket: bool = False,
    ) -> Workspace:
        backend = (
            state
            if state is not None and not isinstance(state, str)
            else backend_for(state or config.state.path)
        )
        if stack is None:
            from .clients import emulator_address
            from .stack import GcpStack

            stack = GcpStack(
                config,
                emulator=emulator_address(emulator),
                delete_bucket=delete_bucket,
                force_bucket=force_bucket,
            )
        return cls(config=config, backend=backend, stack=stack)


def _workspace(target: Config | Workspace, **kw: Any) -> Workspace:
    return target if isinstance(target, Workspace) else Workspace.open(target, **kw)


def plan(
    config: Config | Workspace,
    *,
    destroy: bool = False,
    listener: Listener | None = None,
    state: str | Backend | None = None,
    emulator: str | None = None,
) -> Plan:
    """Refresh every resource and diff against the configuration. Takes the state lock while it reads."""
    ws = _workspace(config, state=state, emulator=emulator)
    with ws.backend.lock("plan"):
        current = ws.backend.read()
        ctx = ws.stack.context(listener)
        ctx.destroying = destroy
        changes, warnings, resources = plan_changes(
            ws.stack.resources(), current, ctx, destroy=destroy, orphan=ws.stack.orphan
        )
    return Plan(
        changes=changes,
        destroy=destroy,
        lineage=current.lineage if current else None,
        serial=current.serial if current else 0,
        warnings=warnings,
        config=ws.config.model_dump(mode="json"),
        resources=resources,
        context=(ws, ctx),
    )


def apply(target: Plan | Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> State:
    """Make it so. Given a config, plans first; given a plan, applies exactly that plan
    (refusing with StalePlan if the state changed since it was made)."""
    the_plan = target if isinstance(target, Plan) else plan(target, listener=listener, **kw)
    if the_plan.context is None:
        raise UsageError("this plan has no workspace; load saved plans with sdcluster.load_plan(path)")
    ws, ctx = the_plan.context
    if listener is not None:
        ctx.listener = listener
    with ws.backend.lock("destroy" if the_plan.destroy else "apply"):
        current = ws.backend.read()
        check_fresh(the_plan, current)
        state = current.copy() if current else State.new()
        return execute(
            the_plan.changes,
            the_plan.resources,
            ctx,
            ws.backend,
            state,
            outputs=None if the_plan.destroy else ws.stack.outputs,
        )


def destroy(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> State:
    """Plan a destroy and apply it: reverse dependency order, retained resources reported as kept."""
    p = plan(config, destroy=True, listener=listener, **kw)
    state = apply(p, listener=listener)
    if not state.resources:
        state.outputs = {}
    return state


def save_plan(p: Plan, path: str | Path) -> Path:
    from .state import atomic_write

    out = Path(path)
    atomic_write(out, (json.dumps(p.to_dict(), indent=2) + "\n").encode())
    return out


def load_plan(
    path: str | Path,
    *,
    state: str | Backend | None = None,
    emulator: str | None = None,
    stack: Stack | None = None,
) -> Plan:
    """A saved plan, bound to the config it was made from, ready for ``apply``."""
    from .config import Config

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UsageError(f"no plan file {path}", hint="make one: sdcluster plan --out plan.json") from e
    except ValueError as e:
        raise StalePlan(
            f"the plan file {path} is not valid JSON", hint="make a new one: sdcluster plan --out plan.json"
        ) from e
    p = Plan.from_dict(data)
    cfg = Config.from_dict(p.config)
    ws = Workspace.open(cfg, state=state, emulator=emulator, stack=stack)
    p.resources = {r.address: r for r in ws.stack.resources()}
    current = ws.backend.read()
    for c in p.changes:  # resources only the state knows (planned for deletion)
        if c.address not in p.resources and current is not None and c.address in current.resources:
            r = ws.stack.orphan(c.address, current.resources[c.address])
            if r is not None:
                p.resources[c.address] = r
    missing = [c.address for c in p.changes if c.address not in p.resources]
    if missing:
        raise StalePlan(
            f"the saved plan names resources this configuration does not know: {', '.join(missing)}",
            hint="make a new plan: sdcluster plan --out plan.json",
        )
    ctx = ws.stack.context(None)
    ctx.destroying = p.destroy
    p.context = (ws, ctx)
    return p


_STATE_WORDS = {
    "noop": "in sync",
    "create": "missing",
    "update": "drifted",
    "replace": "drifted (replace needed)",
    "delete": "no longer configured",
    "keep": "kept",
}


def status(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    """What is there now: each managed resource's state, the cluster, the Deployment, the endpoint.

    Refreshes like ``plan`` (no mutation) and returns plain data (``sdcluster status --json``).
    """
    p = plan(config, listener=listener, **kw)
    ws, _ = p.context
    rows = []
    cluster: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    for c in p.changes:
        observed = c.before or {}
        rows.append({"address": c.address, "state": _STATE_WORDS[c.action], "detail": c.reason})
        if c.type == "gke.cluster" and observed:
            cluster = {
                "status": observed.get("status"),
                "location": observed.get("location"),
                "nodes": observed.get("current_node_count"),
                "endpoint": observed.get("endpoint"),
            }
        if c.type == "k8s.deployment" and observed:
            deployment = {"ready": observed.get("ready", ""), "replicas": observed.get("spec.replicas")}
    current = ws.backend.read()
    return {
        "resources": rows,
        "cluster": cluster,
        "deployment": deployment,
        "outputs": current.outputs if current else {},
        "warnings": p.warnings,
    }
