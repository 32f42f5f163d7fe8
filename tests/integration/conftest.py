from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sdcluster


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
