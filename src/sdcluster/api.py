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
from typing import TYPE_CHECKING, Any, assert_never

from . import retry
from .engine import Action, Binding, Change, Listener, Plan, Stack, check_fresh, execute, plan_changes
from .errors import (
    AdoptionRefused,
    ConfigError,
    DestroyIncomplete,
    Interrupted,
    NotFound,
    StalePlan,
    StateError,
    StateMismatch,
    UsageError,
)
from .state import Backend, LocalBackend, ResourceState, State, atomic_write

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .gcp.clients import ClientFactory
    from .gcp.upload import UploadProgress, UploadResult


@dataclass
class Workspace:
    """A configuration bound to its state backend and its stack of resources."""

    config: Config
    backend: Backend
    stack: Stack[Any]

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        state: str | Backend | None = None,
        emulator: str | None = None,
        stack: Stack[Any] | None = None,
        delete_bucket: bool = False,
        force_bucket: bool = False,
    ) -> Workspace:
        from .gcp.clients import ClientFactory

        factory = ClientFactory.for_user(config.user, emulator)
        if factory.emulator and stack is None:
            factory.check_emulated_project(config.project)
        if state is None or isinstance(state, str):
            backend: Backend = backend_for(state or config.state_location, factory, config.project)
        else:
            backend = state
        if stack is None:
            from .gcp.stack import GcpStack

            stack = GcpStack(config, factory=factory, delete_bucket=delete_bucket, force_bucket=force_bucket)
        return cls(config=config, backend=backend, stack=stack)


def backend_for(path: str, factory: ClientFactory | None = None, project: str = "") -> Backend:
    """The backend for a state location: a local path, or ``gs://BUCKET/PREFIX/state.json``."""
    if path.startswith("gs://"):
        from .gcp.remote_state import GcsBackend

        if factory is None:
            raise ConfigError(f"remote state {path} needs credentials", hint="internal: pass a ClientFactory")
        return GcsBackend(path, factory, project)
    return LocalBackend(path)


def _workspace(target: Config | Workspace, **kw: Any) -> Workspace:
    return target if isinstance(target, Workspace) else Workspace.open(target, **kw)


def read_state(backend: Backend, stack: Stack[Any]) -> State | None:
    """The stored state, upgraded from older versions and checked against the stack's identity:
    ``StateMismatch`` if it belongs to another project (or a record's id names one), so nothing
    is ever read, changed or deleted in a project the state was not made for."""
    current = backend.read()
    if current is None:
        return None
    stack.upgrade(current)
    scope = stack.scope()
    separate = (
        f"to manage {scope}, keep its state apart: --state .sdcluster/{scope}/state.json "
        "(or state.path in sdcluster.toml)"
    )
    if current.project and scope and current.project != scope:
        raise StateMismatch(
            f"the state {backend.describe()} belongs to project {current.project}, but the configuration "
            f"says project {scope}: refusing to act on {scope} with it",
            hint=f"{separate}; to manage {current.project}, set project = {current.project!r} "
            "(check SDCLUSTER_PROJECT and --set)",
        )
    errors = stack.identity_errors(current)
    if errors:
        raise StateMismatch(
            f"the state {backend.describe()} (project {current.project or scope}) records resources of "
            f"another identity: {'; '.join(errors)}",
            hint=f"{separate}; move the state away if it was copied from elsewhere",
        )
    return current


def plan(
    config: Config | Workspace,
    *,
    destroy: bool = False,
    listener: Listener | None = None,
    state: str | Backend | None = None,
    emulator: str | None = None,
) -> Plan:
    """Refresh every resource and diff against the configuration. Read-only: it takes no lock and
    creates nothing (apply refuses a plan made from a state that has changed since: StalePlan)."""
    ws = _workspace(config, state=state, emulator=emulator)
    current = read_state(ws.backend, ws.stack)
    ctx = ws.stack.context(listener)
    ctx.destroying = destroy
    if not destroy:
        ws.stack.prefetch()  # prices arrive while the resources refresh
    changes, warnings, resources = plan_changes(
        ws.stack.resources(), current, ctx, destroy=destroy, orphan=ws.stack.orphan
    )
    p = Plan(
        changes=changes,
        destroy=destroy,
        lineage=current.lineage if current else None,
        serial=current.serial if current else 0,
        warnings=[*warnings, *running_elsewhere(ws.backend), *getattr(ws.backend, "warnings", [])],
        config=ws.config.model_dump(mode="json"),
        resources=resources,
        binding=Binding(ws.backend, ws.stack, ctx),
    )
    p.cost = ws.stack.cost(p, current)
    return p


def apply(
    target: Plan | Config | Workspace,
    *,
    listener: Listener | None = None,
    adopt: bool = False,
    **kw: Any,
) -> State:
    """Make it so. Given a config, plans first; given a plan, applies exactly that plan
    (refusing with StalePlan if the state changed since it was made).

    Refuses (``AdoptionRefused``) while the plan lists conflicts (things with our names that
    sdcluster did not make) unless ``adopt=True``. A destroy that leaves something under our
    addresses running raises ``DestroyIncomplete`` once it has deleted the rest.
    """
    the_plan = target if isinstance(target, Plan) else plan(target, listener=listener, **kw)
    refuse_conflicts(the_plan, adopt)
    bound = the_plan.bound()
    if listener is not None:
        bound.context.listener = listener
    with bound.backend.lock("destroy" if the_plan.destroy else "apply"):
        current = read_state(bound.backend, bound.stack)
        check_fresh(the_plan, current)
        if retry.cancelled():
            raise Interrupted("interrupted before any change was made", hint="nothing was changed")
        bound.backend.check_writable()  # before the first mutating call, not after it
        state = current.copy() if current else State.new()
        state.project = state.project or bound.stack.scope()
        state = execute(
            the_plan.changes,
            the_plan.resources,
            bound.context,
            bound.backend,
            state,
            outputs=bound.stack.outputs,
        )
    if the_plan.destroy:
        check_destroyed(the_plan)
    return state


def still_running(p: Plan) -> list[Change]:
    """The destroy plan's conflicts that still exist now (something under our address left alone;
    a node pool that went with its cluster does not count)."""
    ctx = p.bound().stack.context(None)  # fresh: no client of a cluster this destroy deleted
    ctx.destroying = True
    return [c for c in p.conflicts() if p.resources[c.address].read(ctx, None) is not None]


def refuse_conflicts(p: Plan, adopt: bool) -> None:
    """``AdoptionRefused`` if an apply plan would take over things sdcluster did not make."""
    conflicts = [] if p.destroy or adopt else p.conflicts()
    if not conflicts:
        return
    listed = ", ".join(f"{c.address} ({c.id})" for c in conflicts)
    first = conflicts[0]
    raise AdoptionRefused(
        f"{len(conflicts)} resource(s) exist with sdcluster's names but were not made by sdcluster: "
        f"{listed}; apply will not take them over (change them, and let destroy delete them) unasked",
        hint=(
            f"if they are yours to manage, adopt one: sdcluster import {first.address} {first.id}; "
            "or all the plan lists: sdcluster apply --adopt (library: apply(..., adopt=True)); "
            "otherwise choose other names in sdcluster.toml"
        ),
        addresses=[c.address for c in conflicts],
    )


def check_destroyed(p: Plan) -> None:
    """``DestroyIncomplete`` if a destroy left things under its addresses running."""
    left = still_running(p) if p.destroy and p.conflicts() else []
    if not left:
        return
    listed = ", ".join(f"{c.address} ({c.id})" for c in left)
    first = left[0]
    raise DestroyIncomplete(
        f"destroyed what the state records, but {len(left)} resource(s) under sdcluster's addresses "
        f"still exist and were left alone (not in the state): {listed}",
        hint=(
            f"if sdcluster made them, record them and destroy again: sdcluster import {first.address} "
            f"{first.id}, then sdcluster destroy; if they belong to someone else, nothing is wrong"
        ),
        addresses=[c.address for c in left],
    )


def destroy(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> State:
    """Plan a destroy and apply it: reverse dependency order, retained resources reported as kept."""
    p = plan(config, destroy=True, listener=listener, **kw)
    return apply(p, listener=listener)


def pause(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    """Pause the cluster: the serving Deployment at zero replicas, so the cluster autoscaler removes
    the serving nodes; the cluster, system pool, bucket, model, Service (and its address) and the
    state stay. Returns ``{"paused": "<since> by <what>", "serving_nodes_kept": N, "held_by": [...]}``
    (N: the pool's ``min_nodes``, the nodes that keep billing while paused; ``held_by``: the
    kube-system pods, ``{"pod", "node"}``, that keep a serving node up). Pausing a paused cluster
    changes nothing.
    """
    from .gcp.lifecycle import node_holders
    from .gcp.lifecycle import pause as pause_deployment

    ws = _workspace(config, **kw)
    with ws.backend.lock("pause"):
        ctx = ws.stack.context(listener)
        note = pause_deployment(ctx)
        held_by = node_holders(ctx)
    return {"paused": note, "serving_nodes_kept": ws.config.cluster.min_nodes, "held_by": held_by}


def resume(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    """Resume a paused cluster: ``serving.replicas`` back (the autoscaler adds their nodes) and
    return once TF Serving serves the model (AVAILABLE; with no model version yet, once the pods
    run). Returns the Deployment as plan observes it (``ready``, ``model``, ``paused``)."""
    from .gcp.lifecycle import resume as resume_deployment

    ws = _workspace(config, **kw)
    with ws.backend.lock("resume"):
        return resume_deployment(ws.stack.context(listener))


KUBERNETES_SCHEMA_VERSION = (
    "1.37"  # GKE's regular channel at the time of writing; kubernetes-validate's newest
)


def validate(config: Config) -> dict[str, Any]:
    """Offline checks for CI (no cloud access): the configuration (already validated by loading it)
    and the Kubernetes objects apply would send, against the upstream OpenAPI schemas when the
    ``validate`` extra (kubernetes-validate) is installed.

    Returns ``{"config": {...summary}, "objects": [{"kind", "name", "errors"}], "schemas": version or
    None}``; raises ConfigError for an invalid object (naming it and the schema's message).
    """
    from .gcp.resources.kube import KubeObject
    from .gcp.stack import GcpStack

    objects = [r for r in GcpStack(config).resources() if isinstance(r, KubeObject)]
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    rows = []
    for obj in objects:
        errors: list[str] = []
        if kubernetes_validate is not None:
            try:
                kubernetes_validate.validate(obj.manifest, KUBERNETES_SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(str(e.message))
        rows.append({"kind": obj.kind, "name": obj.obj_name, "errors": errors})
    bad = [r for r in rows if r["errors"]]
    if bad:
        raise ConfigError(
            "; ".join(f"{r['kind']} {r['name']}: {r['errors'][0]}" for r in bad),
            hint="a configuration value produced an invalid Kubernetes object; see the field it names",
        )
    return {
        "config": config.summary(),
        "objects": rows,
        "schemas": KUBERNETES_SCHEMA_VERSION if kubernetes_validate is not None else None,
    }


def kubeconfig(config: Config, *, emulator: str | None = None) -> dict[str, Any]:
    """A kubeconfig document for the configured cluster (NotFound while it does not exist)."""
    from . import retry
    from .gcp.clients import ClientFactory
    from .gcp.kubeconfig import kubeconfig_doc

    client = ClientFactory.for_user(config.user, emulator).cluster_manager()
    try:
        cluster = retry.call(lambda: client.get_cluster(name=config.cluster_key), project=config.project)
    except NotFound as e:
        raise NotFound(
            f"cluster {config.cluster.name} does not exist in {config.cluster.zone}",
            hint="run: sdcluster apply",
        ) from e
    return kubeconfig_doc(config, cluster.endpoint, cluster.master_auth.cluster_ca_certificate)


def write_kubeconfig(doc: dict[str, Any], path: str | Path, *, merge: bool = False) -> str:
    """Write a kubeconfig (``merge=True``: into the one at ``path``); returns its context name."""
    from .gcp.kubeconfig import write

    return write(doc, Path(path), merge_into=merge)


def default_kubeconfig_path() -> Path:
    from .gcp.kubeconfig import default_path

    return default_path()


def running_elsewhere(backend: Backend) -> list[str]:
    """A warning when another run holds the state lock (what it shows may be changing)."""
    holder = backend.holder()
    if holder is None or backend.lock_is_mine():
        return []
    return [
        f"another sdcluster run holds the state lock: {holder.describe()}; this shows the state it "
        "saved last, and what it is changing may still move"
    ]


def upload_model(
    target: Config | Workspace,
    directory: str | Path,
    *,
    version: int | None = None,
    progress: Callable[[UploadProgress], None] | None = None,
    say: Callable[[str], None] | None = None,
    wait: bool = True,
    state: str | Backend | None = None,
    emulator: str | None = None,
) -> UploadResult:
    """Publish the SavedModel in ``directory`` as a model version (``gcp.upload``), then, when the
    serving endpoint exists and ``wait``, return once TF Serving serves it (``say`` gets progress).

    Example: ``upload_model(cfg, "stable_diffusion_model/").message`` ->
    ``'published version 1 at gs://p-bucket/stable_diffusion_model/1/; TF Serving serves version 1 of ...'``.
    """
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from .gcp.resources.serving import wait_for_version
    from .gcp.stack import GcpStack
    from .gcp.upload import clean_staging
    from .gcp.upload import upload_model as upload

    ws = _workspace(target, state=state, emulator=emulator)
    if not isinstance(ws.stack, GcpStack):
        raise UsageError("upload_model needs the Google Cloud stack")
    factory = ws.stack.factory
    current = ws.backend.read() if wait else None
    url = (current.outputs.get("endpoint") if current else None) or None
    result = upload(
        ws.config, directory, version=version, factory=factory, progress=progress, clean=url is None
    )
    if url is None:
        return result  # cleaned already: nothing to wait for
    # The staging area goes while TF Serving loads the version (nothing there waits for it).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clean-staging") as pool:
        cleaned = pool.submit(clean_staging, ws.config, result.version, factory=factory)
        served = wait_for_version(
            ws.stack.context(None), str(url), result.serving_version, say or (lambda _m: None)
        )
        cleaned.result()
    return dataclasses.replace(result, served=served)


def save_plan(p: Plan, path: str | Path) -> Path:
    out = Path(path)
    atomic_write(out, (json.dumps(p.to_dict(), indent=2) + "\n").encode())
    return out


def load_plan(
    path: str | Path,
    *,
    state: str | Backend | None = None,
    emulator: str | None = None,
    stack: Stack[Any] | None = None,
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
    current = read_state(ws.backend, ws.stack)
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
    p.binding = Binding(ws.backend, ws.stack, ctx)
    return p


def state_word(c: Change) -> str:
    """How ``sdcluster status`` describes a resource, from its planned change."""
    match c.action:
        case Action.NOOP:
            return "not in the state (will be imported)" if c.adopt else "in sync"
        case Action.CREATE:
            return "missing"
        case Action.UPDATE:
            return "drifted"
        case Action.REPLACE:
            return "drifted (replace needed)"
        case Action.DELETE:
            return "no longer configured"
        case Action.KEEP:
            return "kept"
        case _:
            assert_never(c.action)


def status(config: Config | Workspace, *, listener: Listener | None = None, **kw: Any) -> dict[str, Any]:
    """What is there now: each managed resource's state, the cluster, the Deployment, the endpoint,
    and the hourly rate of what runs (``cost``: the nodes GKE reports, the Service, the model's storage).

    Refreshes like ``plan`` (no mutation) and returns plain data (``sdcluster status --json``).
    """
    ws = _workspace(config, **kw)
    p = plan(ws, listener=listener)
    rows = [{"address": c.address, "state": state_word(c), "detail": c.reason} for c in p.changes]
    details = ws.stack.details(p)
    current = read_state(ws.backend, ws.stack)
    return {
        "resources": rows,
        "cluster": details.get("cluster", {}),
        "deployment": details.get("deployment", {}),
        "outputs": current.outputs if current else {},
        "cost": ws.stack.cost(p, current, now=True),
        "warnings": p.warnings,
    }


def doctor(config: Config, *, emulator: str | None = None) -> list[dict[str, str]]:
    """A read-only preflight of the project (``sdcluster doctor``): who the credentials are, the
    project, each API's state, the permissions apply needs, the quotas the config needs against
    what is free, the machine type and GPU type in the zone, the network. Changes nothing.

    Returns one row per check: ``{"check", "status": "ok"|"warn"|"fail", "detail", "fix"}``.
    """
    from dataclasses import asdict

    from .gcp.clients import ClientFactory
    from .gcp.preflight import doctor as run_checks

    return [asdict(f) for f in run_checks(config, ClientFactory.for_user(config.user, emulator))]


# --------------------------------------------------------------------------------------------------
# State surgery: move, push, import, forget


def copy_state(source: Backend, target: Backend, *, force: bool = False) -> State | None:
    """Copy the state from ``source`` to ``target`` without loss: lineage and serial are kept.

    Refuses to overwrite a target that holds another lineage, or a newer serial of the same one.
    """
    with source.lock("state-migrate"), target.lock("state-migrate"):
        state = source.read()
        if state is None:
            return None
        existing = target.read()
        if existing is not None and not force:
            if existing.lineage != state.lineage:
                raise StateError(
                    f"{target.describe()} already holds another state (lineage {existing.lineage})",
                    hint="choose an empty location, or pass --force to replace it",
                )
            if existing.serial > state.serial:
                raise StateError(
                    f"{target.describe()} holds a newer serial ({existing.serial} > {state.serial})",
                    hint="pull that one instead, or pass --force",
                )
        if existing is not None and force and existing.lineage != state.lineage:
            raise StateError(
                f"{target.describe()} holds another lineage; refusing even with --force",
                hint="move it away first",
            )
        return target.write(state.copy())


def push_state(ws: Workspace, document: dict[str, Any], *, force: bool = False) -> State:
    """Replace the stored state with ``document`` (``sdcluster state push FILE``), same rules as copy."""
    incoming = State.from_dict(document, source="the pushed file")
    with ws.backend.lock("state-push"):
        existing = ws.backend.read()
        ws.backend.check_writable()
        if existing is not None:
            if existing.lineage != incoming.lineage:
                raise StateError(
                    f"the pushed state has lineage {incoming.lineage}, the stored one {existing.lineage}",
                    hint="push a state of the same lineage (sdcluster state pull gives the current one)",
                )
            if incoming.serial < existing.serial and not force:
                raise StateError(
                    f"the pushed state is older (serial {incoming.serial} < {existing.serial})",
                    hint="pull the current state first, or pass --force",
                )
            incoming.serial = max(incoming.serial, existing.serial)
        return ws.backend.write(incoming)


def import_resource(ws: Workspace, address: str, resource_id: str) -> State:
    """Record an existing resource in state after reading it (``sdcluster import ADDRESS ID``)."""
    resources = {r.address: r for r in ws.stack.resources()}
    if address not in resources:
        raise UsageError(
            f"{address} is not a resource of this configuration",
            hint="see the addresses in: sdcluster plan",
        )
    r = resources[address]
    with ws.backend.lock("import"):
        state = read_state(ws.backend, ws.stack) or State.new()
        state.project = state.project or ws.stack.scope()
        ws.backend.check_writable()
        ctx = ws.stack.context(None)
        observed = r.read(ctx, None)
        if observed is None:
            raise NotFound(f"nothing to import: {address} does not exist", hint="sdcluster apply creates it")
        actual = r.state_id(observed)
        if resource_id != actual:
            raise UsageError(
                f"{address} is {actual}, not {resource_id}",
                hint=f"sdcluster import {address} {actual}",
            )
        state.resources[address] = ResourceState(
            type=r.type, id=actual, attributes=dict(observed), dependencies=list(r.dependencies)
        )
        return ws.backend.write(state)


def forget(ws: Workspace, address: str) -> State:
    """Remove a resource from state without deleting it (``sdcluster state rm ADDRESS``)."""
    with ws.backend.lock("state-rm"):
        state = ws.backend.read()
        if state is None or address not in state.resources:
            raise UsageError(f"no resource {address} in state", hint="see: sdcluster state list")
        ws.backend.check_writable()
        del state.resources[address]
        return ws.backend.write(state)


def ensure_state_bucket(url: str, factory: ClientFactory, project: str, location: str) -> bool:
    """Create the state bucket of ``gs://BUCKET/...`` when missing: versioning on, uniform access,
    public access prevention. Returns True when it was created."""
    from . import retry
    from .gcp.labels import MANAGED_BY

    name = url[len("gs://") :].split("/", 1)[0]
    client = factory.storage(project)
    existing = retry.call(lambda: client.lookup_bucket(name), project=project)
    if existing is not None:
        return False
    bucket = client.bucket(name)
    bucket.versioning_enabled = True
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    bucket.iam_configuration.public_access_prevention = "enforced"
    bucket.labels = {**MANAGED_BY, "purpose": "sdcluster-state"}
    retry.call(lambda: client.create_bucket(bucket, project=project, location=location), project=project)
    return True
