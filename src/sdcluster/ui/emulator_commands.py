"""The emulator commands: ``demo`` and ``emulator serve`` / ``emulator env``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import SdclusterError, UsageError
from .app import (
    app,
    emulator_app,
    load_config,
)
from .common import (
    Flag,
    command,
    console,
    opts,
)


@app.command()
@command
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
        console(),
        keep=keep,
        workdir=workdir,
        step=lambda args: app(args, standalone_mode=False, prog_name="sdcluster"),
    )


# What the emulator imports beyond sdcluster's own dependencies (the `emulator` extra).
EMULATOR_EXTRA_MODULES = ("googleapiclient", "trustme", "kubernetes_validate", "numpy", "PIL")


def _require_emulator_extra(what: str) -> None:
    import importlib.util

    missing = [m for m in EMULATOR_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{what} needs the emulator, which needs packages that are not installed ({', '.join(missing)})",
            hint="pip install 'sdcluster[emulator]'",
        )


@emulator_app.command("serve")
@command
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
            cfg = load_config(ctx)
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
@command
def emulator_env(ctx: typer.Context) -> None:
    """Print the export lines that point gcloud (and sdcluster) at the running emulator.

    Use: eval "$(sdcluster emulator env)" with SDCLUSTER_EMULATOR set (or --emulator).
    """
    import grpc

    from ..emulator.env import export_lines
    from ..gcp.clients import control_call

    address = opts(ctx).emulator
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
