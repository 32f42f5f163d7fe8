"""The ``sdcluster`` typer application, its global options and what the command modules share.

Commands live by concern: ``cli`` (the workflow: init, plan, apply, destroy, status, ...),
``model_commands`` (kubeconfig, upload-model, generate), ``state_commands`` (state, import,
force-unlock) and ``emulator_commands`` (demo, emulator serve/env). ``cli.main`` registers them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from ..errors import UsageError
from .common import (
    Options,
    SetOpt,
    VerboseOpt,
    console,
    opts,
    parse_sets,
)

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


def load_config(ctx: typer.Context) -> Any:
    from ..config import Config

    o = opts(ctx)
    overrides = dict(o.overrides)
    if o.state:
        overrides["state.path"] = o.state
    return Config.load(o.config, overrides=overrides or None, env=os.environ)


def workspace(ctx: typer.Context, **options: Any) -> Any:
    from ..api import Workspace

    o = opts(ctx)
    config = load_config(ctx)
    if o.stack is not None:
        options["stack"] = o.stack(config)
    return Workspace.open(config, state=o.state, emulator=o.emulator, **options)


def print_lines(lines: Any) -> None:
    from .render import rich_lines

    console().print(rich_lines(lines), end="")


def progress_printer(verbose: bool = False) -> Any:
    """Engine events as terraform-style lines; ``verbose``: a line per model file too."""
    from .render import ProgressPrinter

    return ProgressPrinter(console(), verbose=verbose)


def read_state(ws: Any) -> Any:
    st = ws.backend.read()
    if st is None:
        raise UsageError(f"no state at {ws.backend.describe()}", hint="run: sdcluster apply")
    return st


def print_outputs(backend: Any, outputs: dict[str, Any] | None = None) -> None:
    if outputs is None:
        st = backend.read()
        outputs = st.outputs if st else {}
    if outputs:
        typer.echo("\nOutputs:\n")
        width = max(len(k) for k in outputs)
        for k, v in outputs.items():
            typer.echo(f"{k:<{width}} = {json.dumps(v)}")
