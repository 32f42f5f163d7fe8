"""CLI with typer's CliRunner (in-memory resources injected as the stack): rendering, exit codes,
confirmation, errors; plus real subprocess runs for --help import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sdcluster.ui.cli import Options, app

from .engine.memstore import MemStack, Store, Thing


class Runner(CliRunner):
    """CliRunner that plugs a stack into the CLI through its seam (``Options.stack``)."""

    stack: Any = None

    def invoke(self, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
        if self.stack is not None:
            kw.setdefault("obj", Options(stack=self.stack))
        return super().invoke(*args, **kw)


runner = Runner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A project dir with sdcluster.toml, whose stack is in-memory things a <- b."""
    monkeypatch.chdir(tmp_path)
    for k in list(os.environ):
        if k.startswith("SDCLUSTER_"):
            monkeypatch.delenv(k)
    store = Store()
    env: dict[str, Any] = {
        "store": store,
        "things": lambda: [Thing(store, "a"), Thing(store, "b", ("test.thing.a",))],
    }
    monkeypatch.setattr(runner, "stack", lambda cfg: MemStack(store, env["things"]()))
    r = runner.invoke(app, ["init", "--project", "demo-proj", "--user", "demo@example.com"])
    assert r.exit_code == 0, r.output
    yield env


def test_init_writes_config_and_refuses_overwrite(project: dict[str, Any]) -> None:
    text = Path("sdcluster.toml").read_text()
    assert 'project = "demo-proj"' in text and 'user = "user:demo@example.com"' in text
    r = runner.invoke(app, ["init", "--project", "demo-proj", "--user", "demo@example.com"])
    assert r.exit_code == 1 and "Error:" in r.output and "--force" in r.output
    r = runner.invoke(app, ["init", "--project", "other-proj", "--user", "x@example.com", "--force"])
    assert r.exit_code == 0 and 'project = "other-proj"' in Path("sdcluster.toml").read_text()


def test_plan_rendering_snapshot_and_detailed_exitcode(project: dict[str, Any]) -> None:
    r = runner.invoke(app, ["plan", "--detailed-exitcode"])
    assert r.exit_code == 2, r.output
    expected = "\n".join(
        [
            "sdcluster will perform the following actions:",
            "",
            "  # test.thing.a will be created",
            '  + resource "test.thing" "a" {',
            '      + flavor = "plain"',
            "      + size   = 1",
            "    }",
            "",
            "  # test.thing.b will be created",
            '  + resource "test.thing" "b" {',
            '      + flavor = "plain"',
            "      + size   = 1",
            "    }",
            "",
            "Plan: 2 to add, 0 to change, 0 to destroy.",
            "",
        ]
    )
    assert r.output == expected
    assert "\x1b[" not in r.output  # plain when not a terminal
    r = runner.invoke(app, ["plan"])
    assert r.exit_code == 0


def test_plan_json_is_machine_readable(project: dict[str, Any]) -> None:
    r = runner.invoke(app, ["plan", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["format"] == "sdcluster-plan/1" and doc["summary"] == {
        "import": 0,
        "add": 2,
        "change": 0,
        "destroy": 0,
    }
    assert [c["action"] for c in doc["changes"]] == ["create", "create"]


def test_apply_refuses_without_tty_and_without_yes(project: dict[str, Any]) -> None:
    r = runner.invoke(app, ["apply"])
    assert r.exit_code == 1
    assert "Error: refusing to perform these actions without confirmation" in r.output
    assert "Hint: pass -y/--auto-approve" in r.output
    assert project["store"].mutations == []


def test_apply_yes_then_noop_then_outputs_and_state(project: dict[str, Any]) -> None:
    r = runner.invoke(app, ["apply", "-y"])
    assert r.exit_code == 0, r.output
    assert "test.thing.a: Creation complete" in r.output
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in r.output
    r = runner.invoke(app, ["plan", "--detailed-exitcode"])
    assert r.exit_code == 0 and "No changes." in r.output
    r = runner.invoke(app, ["output", "count"])
    assert r.exit_code == 0 and r.output.strip() == "2"
    r = runner.invoke(app, ["output", "--json"])
    assert json.loads(r.output) == {"count": 2}
    r = runner.invoke(app, ["output", "nope"])
    assert r.exit_code == 1 and "no output named 'nope'" in r.output
    r = runner.invoke(app, ["state", "list"])
    assert r.output.split() == ["test.thing.a", "test.thing.b"]
    r = runner.invoke(app, ["state", "show", "test.thing.b"])
    assert json.loads(r.output)["dependencies"] == ["test.thing.a"]
    r = runner.invoke(app, ["destroy", "-y"])
    assert r.exit_code == 0 and "Destroy complete! Resources: 2 destroyed." in r.output
    assert project["store"].objects == {}


def test_saved_plan_roundtrip_and_stale_refusal(project: dict[str, Any]) -> None:
    r = runner.invoke(app, ["plan", "--out", "plan.json"])
    assert r.exit_code == 0 and "sdcluster apply plan.json" in r.output
    r = runner.invoke(app, ["apply", "plan.json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["apply", "plan.json"])
    assert r.exit_code == 1 and "Error: the plan was made from state serial 0" in r.output
    assert "Hint: the state changed since the plan was made" in r.output


def test_error_has_no_traceback_unless_verbose(project: dict[str, Any]) -> None:
    Path("sdcluster.toml").write_text(
        'project = "demo-proj"\nuser = "user:demo@example.com"\n[cluster]\nmachine_tpye = "x"\n'
    )
    r = runner.invoke(app, ["plan"])
    assert r.exit_code == 1 and "Error:" in r.output and "machine_tpye" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["--verbose", "plan"])
    assert r.exit_code == 1 and "Traceback" in r.output


def test_help_imports_no_google_or_kubernetes() -> None:
    code = (
        "import sys\n"
        "from sdcluster.ui.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('google', 'kubernetes', 'grpc')))\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "plan" in out.stdout and "apply" in out.stdout


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("sdcluster")
    out = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("sdcluster ")


def test_set_overrides_file_and_environment(project: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDCLUSTER_CLUSTER__MAX_NODES", "4")
    doc = json.loads(runner.invoke(app, ["plan", "--json"]).output)
    assert doc["config"]["cluster"]["max_nodes"] == 4
    r = runner.invoke(
        app,
        ["--set", "cluster.max_nodes=3", "--set", 'cluster.machine_type="n2-standard-8"', "plan", "--json"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert (
        doc["config"]["cluster"]["max_nodes"] == 3
        and doc["config"]["cluster"]["machine_type"] == "n2-standard-8"
    )
    r = runner.invoke(app, ["--set", "cluster.max_nodez=3", "plan"])
    assert r.exit_code == 1 and "max_nodez" in r.output


def test_emulator_env_needs_a_running_emulator(project: dict[str, Any]) -> None:
    result = runner.invoke(app, ["emulator", "env"])
    assert result.exit_code == 1 and "no emulator address" in result.output
    result = runner.invoke(app, ["--emulator", "127.0.0.1:9", "emulator", "env"])
    assert result.exit_code == 1 and "no emulator answers at 127.0.0.1:9" in result.output
