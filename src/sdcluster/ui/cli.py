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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..engine import Action
from ..errors import SdclusterError, UsageError
from .common import (
    Flag,
    Options,
    SetOpt,
    VerboseOpt,
    check_output_dir,
    check_output_file,
    command,
    confirm,
    console,
    opts,
    parse_sets,
    plain_help,
    say,
)
from .signals import INTERRUPTS

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="sdcluster",
    help="Stand up a Stable Diffusion serving cluster on Google Cloud: plan, apply, destroy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Plain help, click's: no "<bool>" after flags, and help texts are not read as rich markup.
    rich_markup_mode=None,
)
state_app = typer.Typer(help="Inspect and edit the state.", no_args_is_help=True, rich_markup_mode=None)
emulator_app = typer.Typer(
    help="The local emulator (offline use and CI).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(state_app, name="state")
app.add_typer(emulator_app, name="emulator")


# Shared machinery (ui/common.py), under the names the commands below use.
_opts = opts
_console = console
_errors = command
_confirm = confirm


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        str,
        typer.Option("--config", "-c", metavar="FILE", help="Configuration file.", envvar="SDCLUSTER_CONFIG"),
    ] = "sdcluster.toml",
    state: Annotated[
        str | None,
        typer.Option(
            "--state", metavar="PATH", help="State location (overrides state.path).", envvar="SDCLUSTER_STATE"
        ),
    ] = None,
    emulator: Annotated[
        str | None,
        typer.Option(
            "--emulator",
            metavar="HOST:PORT",
            help="Route every call to the emulator at HOST:PORT.",
            envvar="SDCLUSTER_EMULATOR",
        ),
    ] = None,
    verbose: VerboseOpt = False,
    set_: SetOpt = None,
) -> None:
    """Global options are accepted here and on every subcommand (`sdcluster plan -v --set k=v`)."""
    o = ctx.ensure_object(Options)
    o.config, o.state, o.emulator, o.verbose = config, state, emulator, verbose
    o.overrides = parse_sets(set_ or [])


def _load_config(ctx: typer.Context) -> Any:
    from ..config import Config

    opts = _opts(ctx)
    overrides = dict(opts.overrides)
    if opts.state:
        overrides["state.path"] = opts.state
    return Config.load(opts.config, overrides=overrides or None, env=os.environ)


def _workspace(ctx: typer.Context, **options: Any) -> Any:
    from ..api import Workspace

    opts = _opts(ctx)
    config = _load_config(ctx)
    if opts.stack is not None:
        options["stack"] = opts.stack(config)
    return Workspace.open(config, state=opts.state, emulator=opts.emulator, **options)


def _print_lines(lines: Any) -> None:
    from .render import rich_lines

    _console().print(rich_lines(lines), end="")


def _progress(verbose: bool = False) -> Any:
    from .render import ProgressPrinter

    return ProgressPrinter(_console(), verbose=verbose)


# --------------------------------------------------------------------------------------------------
# init


@app.command()
@_errors
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
    if migrate_state and Path(_opts(ctx).config).exists():
        old_state = _load_config(ctx).state_location
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
    path = write_init(_opts(ctx).config, force=force or migrate_state, **fields)
    typer.echo(f"Wrote {path}.")
    new_state = state or ".sdcluster/state.json"
    factory = ClientFactory.for_user(user, _opts(ctx).emulator)
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


# --------------------------------------------------------------------------------------------------
# plan / apply / destroy


@app.command()
@_errors
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
    p = api.plan(_workspace(ctx), destroy=destroy)
    if json_:
        typer.echo(json.dumps(p.to_dict(), indent=2))
    else:
        from .render import plan_lines

        _print_lines(plan_lines(p, show_unchanged=show_unchanged))
    if out is not None:
        api.save_plan(p, out)
        if not json_:
            say(f"\nSaved the plan to {out}. To apply exactly this plan: sdcluster apply {out}")
    if detailed_exitcode and p.has_changes:
        raise typer.Exit(2)


@app.command()
@_errors
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
        opts = _opts(ctx)
        stack = opts.stack(_load_config(ctx)) if opts.stack is not None else None
        p = api.load_plan(planfile, state=opts.state, emulator=opts.emulator, stack=stack)
        with p.bound().backend.lock("apply"):
            _print_lines(plan_lines(p))
            _run(
                p, "apply the plan", auto_approve=True, adopt=adopt, verbose=opts.verbose
            )  # a saved plan was reviewed when saved
        return
    ws = _workspace(ctx)
    with ws.backend.lock("apply"):
        p = api.plan(ws)
        _print_lines(plan_lines(p))
        _run(p, "perform these actions", auto_approve, adopt=adopt, verbose=_opts(ctx).verbose)


def _run(p: Any, what: str, auto_approve: bool, adopt: bool = False, verbose: bool = False) -> None:
    from .. import api

    api.refuse_conflicts(p, adopt)  # before asking: the answer could not be acted on
    if not p.has_changes:
        # Still record what was observed (adopt), without any mutating call.
        INTERRUPTS.applying(p.bound().context)
        state = api.apply(p, adopt=adopt)
        INTERRUPTS.finished()
        _print_outputs(p.bound().backend)
        _print_notes(p, state)
        return
    _confirm(what, auto_approve)
    INTERRUPTS.applying(p.bound().context)
    with _progress(verbose) as progress:
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
        _print_outputs(p.bound().backend, state.outputs)
        _print_notes(p, state)


def _print_notes(p: Any, state: Any) -> None:
    if not p.destroy:
        for note in p.bound().stack.notes(state):
            typer.echo(f"\nNote: {note}")


def _print_outputs(backend: Any, outputs: dict[str, Any] | None = None) -> None:
    if outputs is None:
        st = backend.read()
        outputs = st.outputs if st else {}
    if outputs:
        typer.echo("\nOutputs:\n")
        width = max(len(k) for k in outputs)
        for k, v in outputs.items():
            typer.echo(f"{k:<{width}} = {json.dumps(v)}")


@app.command()
@_errors
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
    ws = _workspace(ctx, delete_bucket=delete_bucket, force_bucket=force)
    with ws.backend.lock("destroy"):
        p = api.plan(ws, destroy=True)
        _print_lines(plan_lines(p))
        _run(p, "destroy these resources", auto_approve)


# --------------------------------------------------------------------------------------------------
# outputs and state


def _read_state(ws: Any) -> Any:
    st = ws.backend.read()
    if st is None:
        raise UsageError(f"no state at {ws.backend.describe()}", hint="run: sdcluster apply")
    return st


@app.command()
@_errors
def output(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="One output, printed bare.")] = None,
    json_: Annotated[bool, Flag("--json", help="JSON output.")] = False,
) -> None:
    """Print outputs (e.g. `curl $(sdcluster output endpoint)`). Read-only."""
    ws = _workspace(ctx)
    st = _read_state(ws)
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
        _print_outputs(None, st.outputs)


@state_app.command("list")
@_errors
def state_list(ctx: typer.Context) -> None:
    """List the addresses recorded in state."""
    st = _read_state(_workspace(ctx))
    for address in sorted(st.resources):
        typer.echo(address)


@state_app.command("show")
@_errors
def state_show(
    ctx: typer.Context, address: Annotated[str, typer.Argument(help="A resource address.")]
) -> None:
    """Show one resource recorded in state."""
    st = _read_state(_workspace(ctx))
    if address not in st.resources:
        raise UsageError(f"no resource {address} in state", hint="see: sdcluster state list")
    typer.echo(json.dumps({"address": address, **st.resources[address].to_dict()}, indent=2))


@app.command()
@_errors
def validate(ctx: typer.Context, json_: Annotated[bool, Flag("--json", help="JSON output.")] = False) -> None:
    """Check the configuration and the Kubernetes objects it makes, offline (for CI; no cloud access)."""
    from .. import api

    cfg = _load_config(ctx)
    result = api.validate(cfg)
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    c = cfg.cluster
    pool = f"{c.machine_type} x {c.min_nodes}..{c.max_nodes}, {'Spot' if c.spot else 'on-demand'}"
    say(
        f"Configuration {_opts(ctx).config}: valid (project {cfg.project}, cluster {c.name} in {c.zone}, {pool})."
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
@_errors
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
        _print_lines(plan_lines(p, show_unchanged=show_unchanged))


@app.command()
@_errors
def status(ctx: typer.Context, json_: Annotated[bool, Flag("--json", help="JSON output.")] = False) -> None:
    """Show the resources, the cluster, the Deployment and the endpoint (read-only; works while an
    apply runs elsewhere: it shows the state that run saved last)."""
    from rich.text import Text

    from .. import api

    st = api.status(_workspace(ctx))
    if json_:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    out = _console()
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
    if st["outputs"].get("endpoint"):
        say(f"Endpoint: {st['outputs']['endpoint']}")
    if st.get("cost"):
        from .render import cost_lines

        _print_lines([("", ""), *cost_lines(st["cost"], now=True)])
    for w in st["warnings"]:
        out.print(Text.assemble(("Warning:", "yellow"), " ", w), highlight=False)


@app.command()
@_errors
def doctor(
    ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="JSON output.")] = False
) -> None:
    """Check the project before apply, changing nothing: credentials, project, APIs, permissions,
    quotas, machine type, GPU type, network. Exits 1 when a check fails."""
    from .. import api

    rows = api.doctor(_load_config(ctx), emulator=_opts(ctx).emulator)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
    else:
        console = _console()
        marks = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]"}
        for r in rows:
            console.print(f"{marks[r['status']]}  {r['check']}: {r['detail']}", highlight=False)
            if r["fix"] and r["status"] != "ok":
                console.print(f"      fix: {r['fix']}", highlight=False)
    if any(r["status"] == "fail" for r in rows):
        raise typer.Exit(1)


@app.command()
@_errors
def kubeconfig(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write here instead of standard output.")
    ] = None,
    merge: Annotated[
        bool,
        Flag(
            "--merge",
            help="Merge into ~/.kube/config (or $KUBECONFIG's first file) as context "
            "gke_PROJECT_ZONE_CLUSTER, as `gcloud container clusters get-credentials` does.",
        ),
    ] = False,
) -> None:
    """Write a kubeconfig for kubectl (it uses gke-gcloud-auth-plugin; no token is embedded)."""
    from .. import api

    if out is not None and merge:
        raise UsageError("--out and --merge are alternatives", hint="sdcluster kubeconfig --merge")
    target = api.default_kubeconfig_path() if merge else out
    if target is not None:
        check_output_file(target, "kubeconfig")
    cfg = _load_config(ctx)
    doc = api.kubeconfig(cfg, emulator=_opts(ctx).emulator)
    if target is None:
        typer.echo(json.dumps(doc, indent=2))
        return
    context = api.write_kubeconfig(doc, target, merge=merge)
    if merge:
        say(f"Merged context {context} into {target} and made it the current context. Try: kubectl get pods")
    else:
        say(f"Wrote {target}. Use: KUBECONFIG={target} kubectl get pods")


@app.command("upload-model")
@_errors
def upload_model(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A TensorFlow SavedModel directory.")],
    version: Annotated[
        int | None,
        typer.Option(
            "--version", help="Model version (default: the highest if it holds this model, else the next)."
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not wait for TF Serving to serve the new version.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON summary.")] = False,
) -> None:
    """Publish a SavedModel as a model version (staged, then copied into <model_path>/<N>/ with
    saved_model.pb last) and wait until TF Serving serves it."""
    from .. import api
    from ..gcp.upload import summarize
    from .render import upload_progress_line

    ws = _workspace(ctx)
    console = _console()
    last = [0.0]
    verbose = _opts(ctx).verbose

    def progress(p: Any) -> None:
        import time

        now = time.monotonic()
        if json_ or p.file:  # a file sent or skipped: a line of its own with --verbose
            if p.file and verbose and not json_:
                console.print(f"  {p.describe_file()}", highlight=False, style="dim")
            return
        if p.phase == "uploading" and now - last[0] < 0.5:
            return
        last[0] = now
        console.print(upload_progress_line(p), highlight=False)

    result = api.upload_model(
        ws,
        directory,
        version=version,
        progress=progress,
        say=None if json_ else (lambda message: console.print(message, highlight=False)),
        wait=not no_wait,
    )
    if json_:
        typer.echo(json.dumps(summarize(result), indent=2))
    else:
        typer.echo(result.message)


@app.command()
@_errors
def generate(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.")],
    negative_prompt: Annotated[
        str, typer.Option("--negative-prompt", metavar="TEXT", help="What to avoid.")
    ] = "",
    steps: Annotated[
        int, typer.Option("--steps", metavar="N", min=1, max=1000, help="Diffusion steps.")
    ] = 30,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, max=8, help="Images per request.")
    ] = 1,
    out: Annotated[
        Path,
        typer.Option(
            "--out", metavar="PATH", help="A directory for the PNG files, or a file name ending in .png."
        ),
    ] = Path("."),
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", help="How long to wait for the images (CPU takes minutes)."
        ),
    ] = 600.0,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", metavar="URL", help="Model URL (default: the `endpoint` output)."),
    ] = None,
) -> None:
    """Generate images from the deployed model and save them as PNG."""
    import time

    from ..generate import generate as run_generate
    from ..generate import names_a_file, save_images

    # Everything that can be refused is refused before the (minutes-long) generation.
    if not prompt.strip():
        raise UsageError(
            "the prompt is empty", hint='say what to draw: sdcluster generate "a photo of a cat"'
        )
    if names_a_file(out):
        check_output_file(out, "image file")
    else:
        check_output_dir(out, "image directory")
    ws = _workspace(ctx)
    cfg = ws.config
    if endpoint is None:
        st = ws.backend.read()
        endpoint = (st.outputs.get("endpoint") if st else None) or None
        if endpoint is None:
            raise UsageError("no endpoint yet", hint="run: sdcluster apply (or pass --endpoint URL)")
    started = time.monotonic()
    result = run_generate(
        cfg,
        prompt,
        endpoint=endpoint,
        negative_prompt=negative_prompt,
        steps=steps,
        batch_size=batch_size,
        timeout_s=timeout,
        progress=say,
    )
    paths = save_images(result, out)
    for path in paths:
        say(f"Wrote {path}")
    say(f"{len(paths)} image(s) in {time.monotonic() - started:.1f}s from {result.endpoint}")


@state_app.command("pull")
@_errors
def state_pull(ctx: typer.Context) -> None:
    """Print the stored state document (to save a copy: sdcluster state pull > state.json)."""
    typer.echo(_read_state(_workspace(ctx)).to_json(), nl=False)


@state_app.command("push")
@_errors
def state_push(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A state document (from `state pull`).")],
    force: Annotated[bool, Flag("--force", help="Allow an older serial to replace a newer one.")] = False,
) -> None:
    """Replace the stored state with FILE (same lineage; serial checked)."""
    from .. import api

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read a state document from {file}: {e}") from e
    st = api.push_state(_workspace(ctx), document, force=force)
    typer.echo(f"Pushed {file}: lineage {st.lineage}, serial {st.serial}.")


@state_app.command("rm")
@_errors
def state_rm(ctx: typer.Context, address: Annotated[str, typer.Argument(help="A resource address.")]) -> None:
    """Forget a resource without deleting it (the next plan shows it as an import)."""
    from .. import api

    api.forget(_workspace(ctx), address)
    typer.echo(f"Removed {address} from the state; the resource itself was not touched.")


@app.command("import")
@_errors
def import_(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Address, e.g. storage.bucket.my-proj-bucket.")],
    resource_id: Annotated[str, typer.Argument(metavar="ID", help="Its id, e.g. gs://my-proj-bucket.")],
) -> None:
    """Record an existing resource in the state after reading it."""
    from .. import api

    st = api.import_resource(_workspace(ctx), address, resource_id)
    typer.echo(f"Imported {address} ({st.resources[address].id}).")


@app.command("force-unlock")
@_errors
def force_unlock(ctx: typer.Context) -> None:
    """Remove a state lock left behind by a run that died."""
    ws = _workspace(ctx)
    info = ws.backend.force_unlock()
    if info is None:
        typer.echo(f"{ws.backend.describe()} is not locked.")
    else:
        typer.echo(f"Removed the lock held by {info.describe()}.")


@app.command()
@_errors
def demo(
    ctx: typer.Context,
    keep: Annotated[bool, Flag("--keep", help="Keep the emulator running at the end.")] = False,
    workdir: Annotated[
        Path | None, typer.Option("--dir", metavar="DIR", help="Working directory (default: a new temp dir).")
    ] = None,
) -> None:
    """Run init, plan, apply, status, upload-model, generate and destroy on an embedded emulator."""
    _require_emulator_extra("sdcluster demo")
    from .demo import run

    run(
        _console(),
        keep=keep,
        workdir=workdir,
        step=lambda args: app(args, standalone_mode=False, prog_name="sdcluster"),
    )


# What the emulator imports beyond sdcluster's own dependencies (the `emulator` extra).
EMULATOR_EXTRA_MODULES = ("googleapiclient", "trustme", "kubernetes_validate", "numpy")


def _require_emulator_extra(what: str) -> None:
    import importlib.util

    missing = [m for m in EMULATOR_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{what} needs the emulator, which needs packages that are not installed ({', '.join(missing)})",
            hint="pip install 'sdcluster[emulator]'",
        )


@app.command()
def version(ctx: typer.Context) -> None:
    """Print the sdcluster version."""
    from .._version import __version__

    typer.echo(f"sdcluster {__version__}")


# --------------------------------------------------------------------------------------------------
# emulator


@emulator_app.command("serve")
@_errors
def emulator_serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="gRPC port (0 = any free port).")] = 0,
    state_file: Annotated[
        str | None, typer.Option(help="Persist and reload the emulator's state here.")
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            help="Project to emulate (repeatable: the first is the default one; default: from "
            "sdcluster.toml, else demo-proj)."
        ),
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner member (default: config user, else user:demo@example.com).")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option(help="Delay every request (gRPC, REST, Cloud Storage) by this.")
    ] = 0.0,
    fault_rate: Annotated[
        float, typer.Option(help="Share of requests failed before they take effect.")
    ] = 0.0,
    fault_after_rate: Annotated[
        float, typer.Option(help="Share of writes whose response is lost after they took effect.")
    ] = 0.0,
    storage_mib_s: Annotated[
        float, typer.Option(help="Cap each Cloud Storage connection at N MiB/s (0: loopback speed).")
    ] = 0.0,
    iam_propagation_s: float = 0.0,
    sa_propagation_s: float = 0.0,
    operation_s: float = 2.0,
    rollout_s: float = 2.0,
    lb_s: float = 1.0,
    seed: int = 0,
    quota: Annotated[
        list[str] | None, typer.Option("--quota", help="Override a quota: --quota N2_CPUS=24 (repeatable).")
    ] = None,
    default_network: Annotated[
        bool,
        typer.Option(
            help="Give the project a `default` network (off: as under compute.skipDefaultNetworkCreation)."
        ),
    ] = True,
    stockout_zone: Annotated[
        list[str] | None,
        typer.Option(
            "--stockout-zone", help="A zone out of capacity: node creation there fails (repeatable)."
        ),
    ] = None,
    service_enable_s: Annotated[
        float, typer.Option(help="Seconds an enabled API keeps answering SERVICE_DISABLED (propagation).")
    ] = 0.0,
    billing_catalog: Annotated[
        bool,
        typer.Option(
            help="Answer the Cloud Billing Catalog (off: unreachable, plan prices from its snapshot)."
        ),
    ] = True,
) -> None:
    """Serve the emulator until interrupted; prints `export SDCLUSTER_EMULATOR=...`.

    For gcloud and kubectl: `eval "$(sdcluster emulator env)"` in another shell.
    """
    _require_emulator_extra("sdcluster emulator serve")
    from ..emulator import serve

    projects = list(project or [])
    if not projects or owner is None:
        try:
            cfg = _load_config(ctx)
            projects = projects or [cfg.project]
            owner = owner or cfg.user
        except SdclusterError:
            pass
    projects = projects or ["demo-proj"]
    serve(
        port=port,
        state_file=state_file,
        project=projects[0],
        extra_projects=projects[1:],
        owner=owner or "user:demo@example.com",
        latency_ms=latency_ms,
        fault_rate=fault_rate,
        fault_after_rate=fault_after_rate,
        storage_mib_s=storage_mib_s,
        iam_propagation_s=iam_propagation_s,
        sa_propagation_s=sa_propagation_s,
        operation_s=operation_s,
        rollout_s=rollout_s,
        lb_s=lb_s,
        seed=seed,
        quotas=_quotas(quota or []),
        default_network=default_network,
        stockout_zones=list(stockout_zone or []),
        service_enable_s=service_enable_s,
        billing_catalog=billing_catalog,
    )


@emulator_app.command("env")
@_errors
def emulator_env(ctx: typer.Context) -> None:
    """Print the export lines that point gcloud (and sdcluster) at the running emulator.

    Use: eval "$(sdcluster emulator env)" with SDCLUSTER_EMULATOR set (or --emulator).
    """
    import grpc

    from ..emulator.env import export_lines
    from ..gcp.clients import control_call

    address = _opts(ctx).emulator
    if not address:
        raise UsageError(
            "no emulator address",
            hint="start one with `sdcluster emulator serve` and pass --emulator HOST:PORT",
        )
    try:
        info = control_call(address, "Info", timeout=5)
    except grpc.RpcError as e:
        raise UsageError(
            f"no emulator answers at {address}", hint="is `sdcluster emulator serve` still running?"
        ) from e
    typer.echo("\n".join(export_lines(info)))


def _quotas(items: list[str]) -> dict[str, float]:
    from ..emulator.core import Knobs

    quotas = dict(Knobs().quotas)
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            quotas[metric.strip().upper()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"expected METRIC=NUMBER, got {item!r}", param_hint="--quota") from None
        if not sep:
            raise typer.BadParameter(f"expected METRIC=NUMBER, got {item!r}", param_hint="--quota")
    return quotas


plain_help(app, state_app, emulator_app)


def main() -> None:
    INTERRUPTS.install()
    try:
        app()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if INTERRUPTS.count:
        # Changes abandoned by a second signal may still hold worker threads: do not wait for them
        # at exit (their pending records are saved).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    sys.exit(code)


if __name__ == "__main__":
    main()
