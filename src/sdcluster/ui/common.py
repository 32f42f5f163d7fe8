"""What every ``sdcluster`` command shares: the global options (accepted before the subcommand and
on it, as gcloud and kubectl accept them), error printing, confirmation and output-path checks.

User data (names, paths, messages) is always printed as text, never as rich markup: a value like
``[/x]`` or ``[cluster]`` must reach the terminal as written.

Example::

    @app.command()
    @command
    def plan(ctx: typer.Context) -> None: ...     # also takes -c/--config, --state, --set, -v, ...
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from ..errors import Interrupted, SdclusterError, UsageError
from .signals import EXIT_INTERRUPTED

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Options:
    """The global options of one invocation, kept in typer's context (``ctx.obj``).

    ``stack`` is the seam tests plug a stack of their own into (``CliRunner().invoke(app, args,
    obj=Options(stack=lambda cfg: MemStack(...)))``); by default the Google stack is built.
    """

    config: str = "sdcluster.toml"
    state: str | None = None
    emulator: str | None = None
    verbose: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    stack: Callable[[Any], Any] | None = None


def Flag(*decls: str, help: str) -> Any:
    """A plain on/off option: shown in help without a value placeholder."""
    return typer.Option(*decls, help=help, metavar="")


def opts(ctx: typer.Context | None) -> Options:
    found = ctx.find_object(Options) if ctx is not None else None
    return found if found is not None else Options()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def say(text: str, style: str = "", *, stderr: bool = False) -> None:
    """Print ``text`` as it is (no markup, no highlighting), in ``style``."""
    console(stderr).print(text, style=style or None, markup=False, highlight=False)


def print_error(e: SdclusterError) -> None:
    from rich.text import Text

    err = console(stderr=True)
    err.print(Text.assemble(("Error:", "bold red"), " ", e.message), highlight=False)
    if e.hint:
        err.print(Text.assemble(("Hint:", "bold"), " ", e.hint), highlight=False)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML scalars when they parse (3, true, "x"), else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


# The global options. On the group they carry the environment variables; on a subcommand they
# default to "not given" so the group's value (or the variable) stays unless the user repeats it.
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", metavar="FILE", help="Configuration file [default: sdcluster.toml]."),
]
StateOpt = Annotated[
    str | None, typer.Option("--state", metavar="PATH", help="State location (overrides state.path).")
]
EmulatorOpt = Annotated[
    str | None,
    typer.Option("--emulator", metavar="HOST:PORT", help="Route every call to the emulator at HOST:PORT."),
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show tracebacks, and each file of a model upload.", metavar=""),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a setting: --set cluster.max_nodes=3 (repeatable; beats file and env).",
    ),
]

_GLOBALS = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt),
    inspect.Parameter("state", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=StateOpt),
    inspect.Parameter("emulator", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=EmulatorOpt),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=VerboseOpt),
    inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SetOpt),
]
_GLOBAL_NAMES = {p.name for p in _GLOBALS}


def apply_globals(o: Options, given: dict[str, Any]) -> None:
    """Options given on a subcommand win over the same options given before it."""
    if given.get("config") is not None:
        o.config = given["config"]
    if given.get("state") is not None:
        o.state = given["state"]
    if given.get("emulator") is not None:
        o.emulator = given["emulator"]
    if given.get("verbose"):
        o.verbose = True
    if given.get("set_"):
        o.overrides = {**o.overrides, **parse_sets(given["set_"])}


def command(fn: F) -> F:
    """A command: takes the global options too, and turns SdclusterError into ``Error:``/``Hint:``
    and exit code 1 (the traceback only with ``--verbose``); 130 when interrupted (ui/signals.py)."""
    sig = inspect.signature(fn, eval_str=True)
    own = list(sig.parameters.values())  # a command's own option of a global's name wins (init --state)
    taken = {p.name for p in own}
    extra = [p for p in _GLOBALS if p.name not in taken]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        given = {
            name: kwargs.pop(name) for name in list(kwargs) if name in _GLOBAL_NAMES and name not in taken
        }
        if ctx is not None:
            apply_globals(ctx.ensure_object(Options), given)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None  # the signal handler said so already
        except SdclusterError as e:
            if opts(ctx).verbose:
                import traceback

                traceback.print_exc()
            print_error(e)
            raise typer.Exit(EXIT_INTERRUPTED if isinstance(e, Interrupted) else 1) from None

    wrapper.__signature__ = sig.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class PlainHelp(TyperCommand):
    """click-style help without typer's type placeholders: ``PROMPT``, not ``{PROMPT}`` in the usage
    line, and no ``<str>`` after an argument (options name their values with a metavar)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        inner = ctx.make_formatter()
        super().format_help(ctx, inner)
        text = re.sub(r"\{([A-Z][A-Z0-9_:.-]*)\}", r"\1", inner.getvalue())
        text = re.sub(r"^(  \S+) <[^>]+>", r"\1", text, flags=re.M)
        formatter.write(text)


def plain_help(*apps: typer.Typer) -> None:
    """Give every command of ``apps`` the plain help (call once all commands are registered)."""
    for a in apps:
        for info in a.registered_commands:
            info.cls = PlainHelp


def confirm(what: str, auto_approve: bool) -> None:
    """Ask for "yes" on a terminal; refuse without one (CI must pass -y/--auto-approve)."""
    if auto_approve:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to {what} without confirmation: standard input is not a terminal",
            hint="pass -y/--auto-approve to approve non-interactively",
        )
    answer = typer.prompt(
        f"Do you want to {what}? Only 'yes' will be accepted to approve", default="", show_default=False
    )
    if answer.strip() != "yes":
        raise UsageError(f"cancelled: did not {what}", hint="nothing was changed")


def check_output_file(path: Path, what: str) -> Path:
    """Fail now, before any work, if ``path`` cannot be written as a file (UsageError naming it).
    Creates the missing parent directories, as the write would."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory", hint="give a file name")
    check_output_dir(path.parent, what, shown=path)
    return path


def check_output_dir(directory: Path, what: str, shown: Path | None = None) -> Path:
    """Fail now if ``directory`` cannot hold new files (a file on the way, no permission, a
    read-only or pseudo file system): writes and removes a probe file, creating the missing
    directories for the probe and removing them again (the command's work creates them)."""
    import tempfile

    shown = shown or directory
    missing = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".sdcluster-probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(f"cannot write {what} {shown}: {reason}", hint="choose another path") from None
    finally:
        for d in missing:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
    return directory
