"""``sdcluster pause`` and ``sdcluster resume``, and the wake-up ``generate`` does on a paused cluster.

Registered on the app as this module is imported (ui/cli.py imports it with the other command modules).

Example::

    sdcluster pause      # serving pods to zero; the autoscaler then removes the serving nodes
    sdcluster resume     # back to serving.replicas; returns once the model is AVAILABLE
"""

from __future__ import annotations

from typing import Any

import typer

from ..errors import UsageError
from .app import app, progress_printer, workspace
from .common import command, say


@app.command()
@command
def pause(ctx: typer.Context) -> None:
    """Pause the cluster: TF Serving to zero pods, so its nodes go (no VM billing for them). The
    cluster, the bucket, the model, the endpoint's address and the state stay."""
    from .. import api

    ws = workspace(ctx)
    got = api.pause(ws, listener=progress_printer())
    say(f"Paused ({got['paused']}): the Deployment has no pods now.")
    kept = int(got["serving_nodes_kept"])
    if kept:
        say(
            f"cluster.min_nodes = {kept} keeps {kept} serving node(s) running while paused; "
            "set it to 0 for a pause that stops them all."
        )
    elif got["held_by"]:
        held = ", ".join(f"kube-system/{h['pod']} on {h['node']}" for h in got["held_by"])
        names = " ".join(h["pod"] for h in got["held_by"])
        if not ws.config.cluster.system_pool:
            move = "set cluster.system_pool = true (apply), so GKE's pods have a node of their own"
        elif all(h["tainted"] for h in got["held_by"]):
            move = f"to move them to the system pool: kubectl -n kube-system delete pod {names}"
        else:
            move = (
                "run sdcluster apply (it taints the serving pool, so GKE's pods go to the system pool), "
                f"then: kubectl -n kube-system delete pod {names}"
            )
        say(
            f"Warning: {held} keeps its serving node up: the cluster autoscaler does not remove a "
            f"node running kube-system pods; {move}"
        )
    else:
        say(
            "The cluster autoscaler removes the empty serving nodes (on GKE about 10 minutes after "
            "they empty); the system pool's node, the load balancer and the cluster fee stay."
        )
    say("See the rate: sdcluster status. Serve again: sdcluster resume (or sdcluster generate).")


@app.command()
@command
def resume(ctx: typer.Context) -> None:
    """Resume a paused cluster: the configured replicas back (the autoscaler adds their nodes);
    returns once TF Serving serves the model."""
    from .. import api

    ws = workspace(ctx)
    got = api.resume(ws, listener=progress_printer())
    say(f"Resumed: {got.get('ready', '?')} ready, model: {got.get('model') or 'unknown'}.")


def wake(ws: Any, *, no_wake: bool) -> None:
    """Before ``generate``: a paused cluster is resumed (said, with how long it usually takes), or
    with ``no_wake`` refused."""
    from .. import api
    from ..gcp.lifecycle import is_paused, usual_resume

    ctx = ws.stack.context(None)
    note = is_paused(ctx)
    if not note:
        return
    if no_wake:
        raise UsageError(
            f"the cluster is paused ({note}) and --no-wake was given",
            hint="resume it first: sdcluster resume (or run generate without --no-wake)",
        )
    say(f"The cluster is paused ({note}): resuming it first; {usual_resume(ctx)}.")
    api.resume(ws, listener=progress_printer())
