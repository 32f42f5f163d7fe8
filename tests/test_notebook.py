"""The notebook session documented in README.md, executed as written against the emulator."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import factory

README = Path(__file__).resolve().parents[1] / "README.md"


def notebook_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## In a notebook", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python block under 'In a notebook'"
    return match.group(1)


def test_readme_notebook_session_runs(
    make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emu(project="my-project", owner="user:me@example.com")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    namespace: dict[str, Any] = {}
    exec(compile(notebook_block(), "README.md#in-a-notebook", "exec"), namespace)
    plan, state = namespace["plan"], namespace["state"]
    html = plan._repr_html_()
    # A new project: the five APIs sdcluster enables, then its 15 resources.
    assert html.startswith("<div>") and "Plan: 21 to add" in html
    assert "Plan: 21 to add" in str(plan)
    assert state.outputs["endpoint"].endswith("/v1/models/stable-diffusion")
    # destroy ran last: the service accounts are gone from the state and from the project.
    assert '"iam.service_account' not in (tmp_path / ".sdcluster" / "state.json").read_text()
    assert list(factory(emu).iam_admin().list_service_accounts(name="projects/my-project")) == []


def test_apply_in_a_jupyter_kernel_shows_its_progress(make_emu: Callable[..., Any], tmp_path: Path) -> None:
    """The README session, one line per cell, in a real IPython kernel (nbclient): the apply cell's
    output shows each resource's progress, not nothing for the whole run."""
    import os

    import nbformat
    from nbclient import NotebookClient

    emu = make_emu(project="my-project", owner="user:me@example.com")
    lines = [line for line in notebook_block().splitlines() if line.strip()]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(line) for line in lines])
    env = {**os.environ, "SDCLUSTER_EMULATOR": emu.address}
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment of the process that starts it
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)

    def text_of(cell: Any) -> str:
        out = []
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
        return "".join(out)

    apply_cell = next(c for c in nb.cells if "sdcluster.apply(plan)" in c.source)
    shown = text_of(apply_cell)
    assert "gke.cluster.sd-cluster: Creating..." in shown
    assert "gke.cluster.sd-cluster: Creation complete after" in shown
    destroy_cell = next(c for c in nb.cells if "sdcluster.destroy(cfg)" in c.source)
    assert "gke.cluster.sd-cluster: Destruction complete after" in text_of(destroy_cell)
