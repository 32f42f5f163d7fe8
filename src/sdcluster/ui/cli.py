"""The ``sdcluster`` command line: parses, calls the library, renders, maps errors to exit codes.

Exit codes: 0 success, 1 error, 2 "changes present" with ``plan --detailed-exitcode``, 130
interrupted (SIGINT, SIGTERM or SIGHUP: see ``ui/signals.py``). Only ``SdclusterError`` is caught:
it prints ``Error: ...`` and ``Hint: ...`` (traceback only with ``--verbose``). Google and Kubernetes
libraries are imported lazily, inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..engine import Action
from ..errors import UsageError
from .app import (
    app,
    emulator_app,
    load_config,
    print_lines,
    print_outputs,
    progress_printer,
    read_state,
    state_app,
    workspace,
)
from .common import (
    Flag,
    Options,
    check_output_file,
    command,
    confirm,
    console,
    opts,
    plain_help,
    say,
)
from .signals import EXIT_INTERRUPTED, INTERRUPTS


@app.command()
@command
def init(
    ctx: typer.Context,
    project: Annotated[str, typer.Option(metavar="PROJECT", help="Google Cloud project id.")],
    user: Annotated[
        str,
        typer.Option(metavar="EMAIL", help="Member allowed to impersonate gke-admin (user:EMAIL or EMAIL)."),
    ],
    region: Annotated[str | None, typer.Option(metavar="REGION", help="Region, e.g. us-central1.")] = None,
    zone: Annotated[
        str | None, typer.Option(metavar="ZONE", help="Zone of the cluster, e.g. us-central1-c.")
    ] = None,
    machine_type: Annotated[str | None, typer.Option(metavar="TYPE", help="Node machine type.")] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", metavar="LOCATION", help="State location: a path or gs://BUCKET/PREFIX/state.json."
        ),
    ] = None,
    migrate_state: Annotated[
        bool, Flag("--migrate-state", help="Move the existing state to the new location.")
    ] = False,
    force: Annotated[bool, Flag("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write sdcluster.toml (the counterpart of the tutorial's setup.sh); with --state gs://...,
    create the state bucket (versioned, uniform access, public access prevention) when missing."""
    from .. import api
    from ..config import normalize_member, write_init
    from ..gcp.clients import ClientFactory

    user = normalize_member(user)
    old_state = ".sdcluster/state.json"
    if migrate_state and Path(opts(ctx).config).exists():
        old_state = load_config(ctx).state_location
    fields: dict[str, Any] = {"project": project, "user": user}
    if region:
        fields["region"] = region
    cluster: dict[str, Any] = {}
    if zone:
        cluster["zone"] = zone
    elif region:
        cluster["zone"] = f"{region}-c"  # a zone must be given with a region; -c exists in most regions
    if machine_type:
        cluster["machine_type"] = machine_type
    if cluster:
        fields["cluster"] = cluster
    if state:
        fields["state"] = {"path": state}
    path = write_init(opts(ctx).config, force=force or migrate_state, **fields)
    typer.echo(f"Wrote {path}.")
    new_state = state or ".sdcluster/state.json"
    factory = ClientFactory.for_user(user, opts(ctx).emulator)
    if new_state.startswith("gs://") and api.ensure_state_bucket(
        new_state, factory, project, region or "us-central1"
    ):
        typer.echo(f"Created the state bucket {new_state.split('/')[2]} (versioning on, uniform access).")
    if migrate_state and old_state != new_state:
        moved = api.copy_state(
            api.backend_for(old_state, factory, project), api.backend_for(new_state, factory, project)
        )
        if moved is None:
            typer.echo(f"No state at {old_state}: nothing to migrate.")
        else:
            typer.echo(
                f"Migrated the state (lineage {moved.lineage}, serial {moved.serial}) from {old_state} to {new_state}; "
                f"the old copy is left in place."
            )
    typer.echo("Next: sdcluster plan")


@app.command()
@command
def plan(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Save the plan for `sdcluster apply FILE`.")
    ] = None,
    json_: Annotated[bool, Flag("--json", help="Print the plan as JSON (see README).")] = False,
    destroy: Annotated[bool, Flag("--destroy", help="Plan a destroy.")] = False,
    detailed_exitcode: Annotated[
        bool, Flag("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
    show_unchanged: Annotated[
        bool, Flag("--show-unchanged", help="List the unchanged resources one by one.")
    ] = False,
) -> None:
    """Show what apply would change (read-only: takes no lock, creates nothing)."""
    from .. import api

    if out is not None:
        check_output_file(out, "plan file")
    p = api.plan(workspace(ctx), destroy=destroy)
    if json_:
        typer.echo(json.dumps(p.to_dict(), indent=2))
    else:
        from .render import plan_lines

        print_lines(plan_lines(p, show_unchanged=show_unchanged))
    if out is not None:
        api.save_plan(p, out)
        if not json_:
            say(f"\nSaved the plan to {out}. To apply exactly this plan: sdcluster apply {out}")
    if detailed_exitcode and p.has_changes:
        raise typer.Exit(2)


@app.command()
@command
def apply(
    ctx: typer.Context,
    planfile: Annotated[
        Path | None, typer.Argument(metavar="PLANFILE", help="A plan saved with `plan --out`.")
    ] = None,
    auto_approve: Annotated[bool, Flag("--auto-approve", "-y", help="Do not ask for confirmation.")] = False,
    adopt: Annotated[
        bool,
        Flag(
            "--adopt",
            help="Take over the conflicts the plan lists (things with our names sdcluster did not make).",
        ),
    ] = False,
) -> None:
    """Create or update everything so it matches the configuration."""
    from .. import api
    from .render import plan_lines

    if planfile is not None:
        o = opts(ctx)
        stack = o.stack(load_config(ctx)) if o.stack is not None else None
        p = api.load_plan(planfile, state=o.state, emulator=o.emulator, stack=stack)
        with p.bound().backend.lock("apply"):
            print_lines(plan_lines(p))
            # A saved plan was reviewed when it was saved.
            _run(p, "apply the plan", auto_approve=True, adopt=adopt, verbose=o.verbose)
        return
    ws = workspace(ctx)
    with ws.backend.lock("apply"):
        p = api.plan(ws)
        print_lines(plan_lines(p))
        _run(p, "perform these actions", auto_approve, adopt=adopt, verbose=opts(ctx).verbose)


def _run(p: Any, what: str, auto_approve: bool, adopt: bool = False, verbose: bool = False) -> None:
    from .. import api

    api.refuse_conflicts(p, adopt)  # before asking: the answer could not be acted on
    if not p.has_changes:
        # Still record what was observed (adopt), without any mutating call.
        INTERRUPTS.applying(p.bound().context)
        state = api.apply(p, adopt=adopt)
        INTERRUPTS.finished()
        print_outputs(p.bound().backend)
        _print_notes(p, state)
        return
    confirm(what, auto_approve)
    INTERRUPTS.applying(p.bound().context)
    with progress_printer(verbose) as progress:
        state = api.apply(p, listener=progress, adopt=adopt)
    INTERRUPTS.finished()
    n = p.counts()
    imported = f"{n['import']} imported, " if n["import"] else ""
    if p.destroy:
        say(f"\nDestroy complete! Resources: {imported}{n['destroy']} destroyed.")
        for c in p.changes:
            if c.action is Action.KEEP:
                say(f"Kept: {c.address} ({c.reason})")
    else:
        say(
            f"\nApply complete! Resources: {imported}{n['add']} added, {n['change']} changed, "
            f"{n['destroy']} destroyed."
        )
        print_outputs(p.bound().backend, state.outputs)
        _print_notes(p, state)


def _print_notes(p: Any, state: Any) -> None:
    if not p.destroy:
        for note in p.bound().stack.notes(state):
            typer.echo(f"\nNote: {note}")


@app.command()
@command
def destroy(
    ctx: typer.Context,
    auto_approve: Annotated[bool, Flag("--auto-approve", "-y", help="Do not ask for confirmation.")] = False,
    delete_bucket: Annotated[
        bool,
        Flag("--delete-bucket", help="Delete the model bucket too (only if it is empty, unless --force)."),
    ] = False,
    force: Annotated[
        bool, Flag("--force", help="With --delete-bucket: delete the objects in it (the model) as well.")
    ] = False,
) -> None:
    """Delete what sdcluster created (the model bucket is kept unless asked or configured otherwise)."""
    from .. import api
    from .render import plan_lines

    if force and not delete_bucket:
        raise UsageError(
            "--force only applies with --delete-bucket", hint="sdcluster destroy --delete-bucket --force"
        )
    ws = workspace(ctx, delete_bucket=delete_bucket, force_bucket=force)
    with ws.backend.lock("destroy"):
        p = api.plan(ws, destroy=True)
        print_lines(plan_lines(p))
        _run(p, "destroy these resources", auto_approve)


@app.command()
@command
def output(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="One output, printed bare.")] = None,
    json_: Annotated[bool, Flag("--json", help="JSON output.")] = False,
) -> None:
    """Print outputs (e.g. `curl $(sdcluster output endpoint)`). Read-only."""
    ws = workspace(ctx)
    st = read_state(ws)
    if name is not None:
        if name not in st.outputs:
            known = ", ".join(sorted(st.outputs)) or "none"
            hint = f"outputs now: {known}"
            if name in ("endpoint", "grpc_address"):
                hint += "; the Service does not exist (or has no address yet): sdcluster apply"
            raise UsageError(f"no output named {name!r}", hint=hint)
        v = st.outputs[name]
        typer.echo(json.dumps(v) if json_ or not isinstance(v, str) else v)
        return
    if json_:
        typer.echo(json.dumps(st.outputs, indent=2))
    else:
        print_outputs(None, st.outputs)


@app.command()
@command
def validate(ctx: typer.Context, json_: Annotated[bool, Flag("--json", help="JSON output.")] = False) -> None:
    """Check the configuration and the Kubernetes objects it makes, offline (for CI; no cloud access)."""
    from .. import api

    cfg = load_config(ctx)
    result = api.validate(cfg)
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    c = cfg.cluster
    pool = f"{c.machine_type} x {c.min_nodes}..{c.max_nodes}, {'Spot' if c.spot else 'on-demand'}"
    say(
        f"Configuration {opts(ctx).config}: valid (project {cfg.project}, cluster {c.name} in {c.zone}, {pool})."
    )
    kinds = ", ".join(f"{o['kind']} {o['name']}" for o in result["objects"])
    if result["schemas"]:
        say(
            f"Kubernetes objects: {len(result['objects'])} valid against the Kubernetes {result['schemas']} schemas ({kinds})."
        )
    else:
        say(
            f"Kubernetes objects: {len(result['objects'])} rendered ({kinds}); their schemas were NOT checked: "
            "pip install 'sdcluster[validate]'"
        )


@app.command()
@command
def show(
    ctx: typer.Context,
    planfile: Annotated[Path, typer.Argument(metavar="PLANFILE", help="A plan saved with `plan --out`.")],
    json_: Annotated[bool, Flag("--json", help="Print the plan as JSON.")] = False,
    show_unchanged: Annotated[
        bool, Flag("--show-unchanged", help="List the unchanged resources too.")
    ] = False,
) -> None:
    """Show a saved plan (offline: nothing is read from the cloud or the state)."""
    from ..engine import Plan
    from .render import plan_lines

    try:
        data = json.loads(planfile.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no plan file {planfile}", hint="make one: sdcluster plan --out plan.json"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(
            f"cannot read the plan file {planfile}: {e}",
            hint="make a new one: sdcluster plan --out plan.json",
        ) from None
    p = Plan.from_dict(data)
    if json_:
        typer.echo(json.dumps(p.to_dict(), indent=2))
    else:
        print_lines(plan_lines(p, show_unchanged=show_unchanged))


@app.command()
@command
def status(ctx: typer.Context, json_: Annotated[bool, Flag("--json", help="JSON output.")] = False) -> None:
    """Show the resources, the cluster, the Deployment and the endpoint (read-only; works while an
    apply runs elsewhere: it shows the state that run saved last)."""
    from rich.text import Text

    from .. import api

    st = api.status(workspace(ctx))
    if json_:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    out = console()
    width = max((len(r["state"]) for r in st["resources"]), default=0)
    for r in st["resources"]:
        style = "green" if r["state"] == "in sync" else "yellow"
        out.print(Text.assemble((f"{r['state']:<{width}}", style), "  ", r["address"]), highlight=False)
    c, d = st["cluster"], st["deployment"]
    if c:
        say(f"\nCluster: {c['status']} in {c['location']}, {c['nodes']} node(s), endpoint {c['endpoint']}")
    else:
        say("\nCluster: not created")
    if d:
        model = d.get("model") or "unknown"
        waiting = " (waiting for a model: sdcluster upload-model DIR)" if model == "none" else ""
        say(f"Deployment: {d['ready']} ready, model: {model}{waiting}")
        if d.get("paused"):
            say(f"Paused: since {d['paused']} (serve again: sdcluster resume)")
    if st["outputs"].get("endpoint"):
        say(f"Endpoint: {st['outputs']['endpoint']}")
    if st.get("cost"):
        from .render import cost_lines

        print_lines([("", ""), *cost_lines(st["cost"], now=True)])
    for w in st["warnings"]:
        out.print(Text.assemble(("Warning:", "yellow"), " ", w), highlight=False)


@app.command()
@command
def doctor(
    ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="JSON output.")] = False
) -> None:
    """Check the project before apply, changing nothing: credentials, project, APIs, permissions,
    quotas, machine type, GPU type, network. Exits 1 when a check fails."""
    from .. import api

    rows = api.doctor(load_config(ctx), emulator=opts(ctx).emulator)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
    else:
        out = console()
        marks = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}
        for r in rows:
            out.print(f"{marks[r['status']]}  {r['check']}: {r['detail']}", highlight=False)
            if r["fix"] and r["status"] != "ok":
                out.print(f"      fix: {r['fix']}", highlight=False)
    if any(r["status"] == "fail" for r in rows):
        raise typer.Exit(1)


# The other command modules register themselves on the app as they are imported.
from . import emulator_commands, lifecycle, model_commands, state_commands  # noqa: E402

__all__ = ["Options", "app", "emulator_commands", "lifecycle", "main", "model_commands", "state_commands"]


@app.command()
def version(ctx: typer.Context) -> None:
    """Print the sdcluster version."""
    from .._version import __version__

    typer.echo(f"sdcluster {__version__}")


plain_help(app, state_app, emulator_app)


def main() -> None:
    INTERRUPTS.install()
    try:
        app()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:
        # A signal before any command ran (typer still building the commands): nothing to finish.
        code = EXIT_INTERRUPTED
    if INTERRUPTS.count:
        # Changes abandoned by a second signal may still hold worker threads: do not wait for them
        # at exit (their pending records are saved).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    sys.exit(code)


if __name__ == "__main__":
    main()
