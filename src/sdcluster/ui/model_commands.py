"""The model commands: ``kubeconfig``, ``upload-model`` and ``generate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from . import lifecycle
from .app import (
    app,
    load_config,
    workspace,
)
from .common import (
    Flag,
    check_output_dir,
    check_output_file,
    command,
    console,
    opts,
    say,
)


@app.command()
@command
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
    cfg = load_config(ctx)
    doc = api.kubeconfig(cfg, emulator=opts(ctx).emulator)
    if target is None:
        typer.echo(json.dumps(doc, indent=2))
        return
    context = api.write_kubeconfig(doc, target, merge=merge)
    if merge:
        say(f"Merged context {context} into {target} and made it the current context. Try: kubectl get pods")
    else:
        say(f"Wrote {target}. Use: KUBECONFIG={target} kubectl get pods")


@app.command("upload-model")
@command
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

    ws = workspace(ctx)
    out = console()
    last = [0.0]
    verbose = opts(ctx).verbose

    def progress(p: Any) -> None:
        import time

        now = time.monotonic()
        if json_ or p.file:  # a file sent or skipped: a line of its own with --verbose
            if p.file and verbose and not json_:
                out.print(f"  {p.describe_file()}", highlight=False, style="dim")
            return
        if p.phase == "uploading" and now - last[0] < 0.5:
            return
        last[0] = now
        out.print(upload_progress_line(p), highlight=False)

    result = api.upload_model(
        ws,
        directory,
        version=version,
        progress=progress,
        say=None if json_ else (lambda message: out.print(message, highlight=False)),
        wait=not no_wait,
    )
    if json_:
        typer.echo(json.dumps(summarize(result), indent=2))
    else:
        typer.echo(result.message)


@app.command()
@command
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
    no_wake: Annotated[
        bool, Flag("--no-wake", help="Refuse on a paused cluster instead of resuming it.")
    ] = False,
) -> None:
    """Generate images from the deployed model and save them as PNG (a paused cluster is resumed)."""
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
    ws = workspace(ctx)
    cfg = ws.config
    if endpoint is None:
        lifecycle.wake(ws, no_wake=no_wake)
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
