from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sdcluster
from sdcluster.ui.cli import app


@pytest.fixture
def setup(make_emu: Callable[..., Any], tmp_path: Path) -> Callable[..., tuple[Any, Any]]:
    """``emu, ws = setup(knobs={...}, **config_sections)``: an emulator and a workspace on it
    (project demo-proj, user user:demo@example.com, state in tmp_path)."""

    def make(knobs: dict[str, Any] | None = None, **cfg: Any) -> tuple[Any, Any]:
        emu = make_emu(**(knobs or {}))
        cfg.setdefault("state", {"path": str(tmp_path / "state.json")})
        config = sdcluster.Config.build(project="demo-proj", user="user:demo@example.com", **cfg)
        return emu, sdcluster.Workspace.open(config, emulator=emu.address)

    return make


@pytest.fixture
def project(
    make_emu: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """``emu = project(**knobs)``: an emulator and an sdcluster.toml for it in the working directory."""

    def make(**knobs: Any) -> Any:
        emu = make_emu(**knobs)
        for k in list(os.environ):
            if k.startswith("SDCLUSTER_"):
                monkeypatch.delenv(k)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
        r = CliRunner().invoke(app, ["init", "--project", "demo-proj", "--user", "demo@example.com"])
        assert r.exit_code == 0, r.output
        return emu

    return make
