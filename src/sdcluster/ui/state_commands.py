"""The state commands: ``state list/show/pull/push/rm``, ``import`` and ``force-unlock``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .app import (
    app,
    read_state,
    state_app,
    workspace,
)
from .common import (
    Flag,
    command,
)


@state_app.command("list")
@command
def state_list(ctx: typer.Context) -> None:
    """List the addresses recorded in state."""
    st = read_state(workspace(ctx))
    for address in sorted(st.resources):
        typer.echo(address)


@state_app.command("show")
@command
def state_show(
    ctx: typer.Context, address: Annotated[str, typer.Argument(help="A resource address.")]
) -> None:
    """Show one resource recorded in state."""
    st = read_state(workspace(ctx))
    if address not in st.resources:
        raise UsageError(f"no resource {address} in state", hint="see: sdcluster state list")
    typer.echo(json.dumps({"address": address, **st.resources[address].to_dict()}, indent=2))


@state_app.command("pull")
@command
def state_pull(ctx: typer.Context) -> None:
    """Print the stored state document (to save a copy: sdcluster state pull > state.json)."""
    typer.echo(read_state(workspace(ctx)).to_json(), nl=False)


@state_app.command("push")
@command
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
    st = api.push_state(workspace(ctx), document, force=force)
    typer.echo(f"Pushed {file}: lineage {st.lineage}, serial {st.serial}.")


@state_app.command("rm")
@command
def state_rm(ctx: typer.Context, address: Annotated[str, typer.Argument(help="A resource address.")]) -> None:
    """Forget a resource without deleting it (the next plan shows it as an import)."""
    from .. import api

    api.forget(workspace(ctx), address)
    typer.echo(f"Removed {address} from the state; the resource itself was not touched.")


@app.command("import")
@command
def import_(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Address, e.g. storage.bucket.my-proj-bucket.")],
    resource_id: Annotated[str, typer.Argument(metavar="ID", help="Its id, e.g. gs://my-proj-bucket.")],
) -> None:
    """Record an existing resource in the state after reading it."""
    from .. import api

    st = api.import_resource(workspace(ctx), address, resource_id)
    typer.echo(f"Imported {address} ({st.resources[address].id}).")


@app.command("force-unlock")
@command
def force_unlock(ctx: typer.Context) -> None:
    """Remove a state lock left behind by a run that died."""
    ws = workspace(ctx)
    info = ws.backend.force_unlock()
    if info is None:
        typer.echo(f"{ws.backend.describe()} is not locked.")
    else:
        typer.echo(f"Removed the lock held by {info.describe()}.")
