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
    assert html.startswith("<pre") and "Plan: 14 to add" in html
    assert "Plan: 14 to add" in str(plan)
    assert state.outputs["endpoint"].endswith("/v1/models/stable-diffusion")
    # destroy ran last: the service accounts are gone from the state and from the project.
    assert '"iam.service_account' not in (tmp_path / ".sdcluster" / "state.json").read_text()
    assert list(factory(emu).iam_admin().list_service_accounts(name="projects/my-project")) == []
