"""Everyday CLI and notebook use (issue 15): each test runs the CLI the way a new user did and asserts
what they see. In-memory stacks where the cloud does not matter, the emulator where it does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import sdcluster
from sdcluster.ui.cli import Options, app

from .engine.memstore import MemStack, Store, Thing
from .helpers import factory

SDCLUSTER = str(Path(sys.executable).with_name("sdcluster"))


def invoke(args: list[str], stack: Callable[[Any], Any] | None = None, **kw: Any) -> Any:
    obj = Options(stack=stack) if stack is not None else None
    return CliRunner().invoke(app, args, obj=obj, **kw)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for k in list(os.environ):
        if k.startswith("SDCLUSTER_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def mem(clean_env: Path) -> Iterator[dict[str, Any]]:
    """A project directory with sdcluster.toml and an in-memory stack a <- b."""
    store = Store()
    things = {"list": [("a", ()), ("b", ("test.thing.a",))]}

    def stack(cfg: Any) -> MemStack:
        return MemStack(store, [Thing(store, n, d) for n, d in things["list"]])

    r = invoke(["init", "--project", "demo-proj", "--user", "demo@example.com"])
    assert r.exit_code == 0, r.output
    yield {"store": store, "stack": stack, "things": things}


# --- 2. global options on every subcommand -------------------------------------------------------


def test_global_options_are_accepted_after_the_subcommand_too(mem: dict[str, Any]) -> None:
    stack = mem["stack"]
    Path("other.toml").write_text('project = "other-proj"\nuser = "user:demo@example.com"\n')
    r = invoke(["plan", "--json", "--set", "cluster.max_nodes=3", "--config", "other.toml"], stack)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["config"]["project"] == "other-proj" and doc["config"]["cluster"]["max_nodes"] == 3
    # The subcommand's value wins over the one given before it.
    r = invoke(["--set", "cluster.max_nodes=4", "plan", "--json", "--set", "cluster.max_nodes=5"], stack)
    assert json.loads(r.output)["config"]["cluster"]["max_nodes"] == 5
    Path("sdcluster.toml").write_text(
        'project = "demo-proj"\nuser = "user:demo@example.com"\n[cluster]\nx = 1\n'
    )
    r = invoke(["plan", "-v"], stack)
    assert r.exit_code == 1 and "Traceback" in r.output
    Path("sdcluster.toml").write_text('project = "demo-proj"\nuser = "user:demo@example.com"\n')
    r = invoke(["apply", "--auto-approve", "--state", "elsewhere.json"], stack)
    assert r.exit_code == 0, r.output
    assert Path("elsewhere.json").exists()


# --- 3. the state follows the config file ------------------------------------------------------------


def test_state_is_found_from_another_directory_and_read_only_commands_create_nothing(
    mem: dict[str, Any],
) -> None:
    stack = mem["stack"]
    Path("images").mkdir()
    os.chdir("images")
    r = invoke(["-c", "../sdcluster.toml", "plan"], stack)
    assert r.exit_code == 0, r.output
    assert not Path(".sdcluster").exists() and not Path("../.sdcluster").exists()  # a plan creates nothing
    r = invoke(["-c", "../sdcluster.toml", "status"], stack)
    assert r.exit_code == 0 and not Path("../.sdcluster").exists()
    r = invoke(["-c", "../sdcluster.toml", "apply", "-y"], stack)
    assert r.exit_code == 0, r.output
    assert Path("../.sdcluster/state.json").exists() and not Path(".sdcluster").exists()
    r = invoke(["-c", "../sdcluster.toml", "plan"], stack)
    assert "will be imported" not in r.output and "No changes." in r.output


# --- 4 (and issue 14 point 8). user data is printed as text, never as markup -------------------------


def test_messages_with_brackets_reach_the_terminal_as_written(clean_env: Path) -> None:
    r = invoke(["init", "--project", "[/x]", "--user", "me@example.com"])
    assert r.exit_code == 1 and "MarkupError" not in r.output
    assert '"[/x]"' in r.output
    Path("sdcluster.toml").write_text(
        'project = "demo-proj"\nuser = "user:a@b.com"\nzone = "us-central1-a"\n'
    )
    r = invoke(["plan"])
    assert 'unknown key "zone" at the top level; it belongs under [cluster]' in r.output
    assert "Hint: move it under [cluster]" in r.output


# --- 5. output paths are checked before the work ----------------------------------------------------


def test_bad_output_paths_fail_before_any_work(mem: dict[str, Any]) -> None:
    stack, store = mem["stack"], mem["store"]
    Path("afile").write_text("x")
    r = invoke(["plan", "--out", "afile/plan"], stack)
    assert r.exit_code == 1 and "Error: cannot write plan file afile/plan" in r.output
    assert "Traceback" not in r.output and store.calls == []  # refused before the refresh
    for out in ("/proc/nope", "afile"):
        r = invoke(["generate", "a cat", "--out", out, "--endpoint", "http://127.0.0.1:9/v1/models/m"], stack)
        assert r.exit_code == 1 and f"cannot write image directory {out}" in r.output, r.output
    r = invoke(["kubeconfig", "--out", "afile/kc"], stack)
    assert r.exit_code == 1 and "cannot write kubeconfig afile/kc" in r.output
    r = invoke(["generate", "   ", "--endpoint", "http://127.0.0.1:9/v1/models/m"], stack)
    assert r.exit_code == 1 and "the prompt is empty" in r.output


def test_an_out_name_ending_in_png_is_the_image_file(tmp_path: Path) -> None:
    from PIL import Image

    from sdcluster.generate import GenerateResult, save_images

    one = GenerateResult(
        images=[Image.new("RGB", (4, 4))],
        prompt="a cat",
        negative_prompt="",
        steps=5,
        endpoint="e",
        elapsed_s=0.1,
    )
    assert save_images(one, tmp_path / "img" / "x.png") == [tmp_path / "img" / "x.png"]
    two = GenerateResult(
        images=[Image.new("RGB", (4, 4))] * 2,
        prompt="a cat",
        negative_prompt="",
        steps=5,
        endpoint="e",
        elapsed_s=0.1,
    )
    assert save_images(two, tmp_path / "y.png") == [tmp_path / "y-0.png", tmp_path / "y-1.png"]
    assert all(p.suffix == ".png" for p in save_images(one, tmp_path / "dir"))


# --- 6. outputs never outlive what they describe ------------------------------------------------------


def test_outputs_are_derived_at_every_save_even_when_a_run_fails(mem: dict[str, Any]) -> None:
    stack, store = mem["stack"], mem["store"]
    store.fail["test.thing.b"] = "create"
    r = invoke(["apply", "-y"], stack)
    assert r.exit_code == 1
    r = invoke(["output", "count", "--json"], stack)
    assert r.exit_code == 0 and r.output.strip() == "1"  # recorded with the one resource that exists


# --- 9. plans that read like terraform's ---------------------------------------------------------


def test_unchanged_resources_fold_into_one_line_and_list_diffs_go_element_by_element(
    mem: dict[str, Any],
) -> None:
    store, things = mem["store"], mem["things"]
    r = invoke(["apply", "-y"], mem["stack"])
    assert r.exit_code == 0
    ranges = ["10.0.0.0/8", "192.168.0.0/16"]
    store.objects["test.thing.b"]["ranges"] = ranges
    changed = ["10.0.0.0/8", "203.0.113.0/24"]

    def stack(cfg: Any) -> MemStack:
        return MemStack(store, [Thing(store, "a"), Thing(store, "b", ("test.thing.a",), ranges=changed)])

    r = invoke(["plan"], stack)
    lines = r.output.splitlines()
    assert lines[0] == "  = 1 unchanged (list them: sdcluster plan --show-unchanged)"
    start = lines.index("      ~ ranges = [")
    assert lines[start + 1 : start + 5] == [
        '            "10.0.0.0/8",',
        '          - "192.168.0.0/16",',
        '          + "203.0.113.0/24",',
        "        ]",
    ]
    r = invoke(["plan", "--show-unchanged"], stack)
    assert "  = test.thing.a: test.thing a exists and matches" in r.output
    del things


def test_apply_complete_counts_imports(mem: dict[str, Any]) -> None:
    r = invoke(["apply", "-y"], mem["stack"])
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in r.output
    assert invoke(["state", "rm", "test.thing.a"], mem["stack"]).exit_code == 0
    mem["store"].objects["test.thing.b"]["size"] = 7
    r = invoke(["apply", "-y"], mem["stack"])
    assert "Apply complete! Resources: 1 imported, 0 added, 1 changed, 0 destroyed." in r.output, r.output


# --- 10. help and wordings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["plan"], ["apply"], ["destroy"], ["generate"], ["status"], ["output"]]
)
def test_help_shows_no_type_placeholders(command: list[str]) -> None:
    r = invoke([*command, "--help"])
    assert r.exit_code == 0
    for junk in ("<bool>", "<str>", "<path>", "{prompt}", "<list[str]>", "<int range>", "<float>"):
        assert junk not in r.output, (junk, r.output)


def test_cancelling_a_confirmation_says_so_plainly(emu: Any, clean_env: Path) -> None:
    import pty

    Path("sdcluster.toml").write_text('project = "demo-proj"\nuser = "user:demo@example.com"\n')
    leader, follower = pty.openpty()  # a real terminal, as a user's: apply asks for "yes"
    proc = subprocess.Popen(
        [SDCLUSTER, "apply"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SDCLUSTER_EMULATOR": emu.address},
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, b"no\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(leader)
    assert proc.returncode == 1, out + err
    assert "Error: cancelled: did not perform these actions" in err
    assert "Hint: nothing was changed" in err
    assert emu.log.mutating() == []


# --- 11. status while an apply holds the lock ------------------------------------------------------


def test_status_and_plan_work_while_another_run_holds_the_lock(mem: dict[str, Any]) -> None:
    assert invoke(["apply", "-y"], mem["stack"]).exit_code == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom sdcluster.state import LocalBackend\n"
            "with LocalBackend('.sdcluster/state.json').lock('apply'):\n"
            "    print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = invoke(["status"], mem["stack"])
        assert r.exit_code == 0, r.output
        assert f"another sdcluster run holds the state lock: pid {holder.pid}" in r.output
        r = invoke(["output", "count"], mem["stack"])
        assert r.exit_code == 0 and r.output.strip() == "2"
        r = invoke(["apply", "-y"], mem["stack"])
        assert r.exit_code == 1 and f"locked by pid {holder.pid}" in r.output
    finally:
        holder.kill()
        holder.wait()


# --- 13. validate and show --------------------------------------------------------------------------


def test_validate_is_offline_and_names_what_it_checked(clean_env: Path) -> None:
    Path("sdcluster.toml").write_text(
        'project = "demo-proj"\nuser = "user:a@b.com"\n[serving]\nallowed_source_ranges = ["10.0.0.0/8"]\n'
    )
    r = invoke(["validate", "--emulator", "127.0.0.1:1"])  # an address nobody listens on: never contacted
    assert r.exit_code == 0, r.output
    assert (
        "Configuration sdcluster.toml: valid (project demo-proj, cluster sd-cluster in us-central1-c"
        in r.output
    )
    assert "Kubernetes objects: 4 valid against the Kubernetes 1.37 schemas" in r.output
    assert "ServiceAccount tf-serving" in r.output  # the identity TF Serving reads the bucket as
    Path("sdcluster.toml").write_text(
        'project = "demo-proj"\nuser = "user:a@b.com"\n[serving]\nmemory = "12"\n'
    )
    r = invoke(["validate"])
    assert r.exit_code == 1 and 'serving.memory: "12" is only 12 bytes' in r.output


def test_show_prints_a_saved_plan_without_the_cloud(mem: dict[str, Any]) -> None:
    assert invoke(["plan", "--out", "p.json"], mem["stack"]).exit_code == 0
    mem["store"].calls.clear()
    r = invoke(["show", "p.json"])
    assert r.exit_code == 0 and "Plan: 2 to add, 0 to change, 0 to destroy." in r.output
    assert mem["store"].calls == []
    doc = json.loads(invoke(["show", "p.json", "--json"]).output)
    assert doc["summary"]["add"] == 2
    Path("p.json").write_text(Path("p.json").read_text().replace('"add": 2', '"add": 3'))
    r = invoke(["show", "p.json"])
    assert r.exit_code == 1 and "modified after it was saved" in r.output


# --- 7. the emulator's traps ----------------------------------------------------------------------


def test_a_dead_emulator_address_fails_fast_naming_it(clean_env: Path) -> None:
    Path("sdcluster.toml").write_text('project = "demo-proj"\nuser = "user:a@b.com"\n')
    out = subprocess.run(
        [SDCLUSTER, "plan"],
        env={**os.environ, "SDCLUSTER_EMULATOR": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=15,  # the old behaviour took 20 s of retries to say "RetryError"
    )
    assert out.returncode == 1
    assert "Error: no sdcluster emulator answers at 127.0.0.1:1" in out.stderr
    assert "RetryError" not in out.stderr and "Traceback" not in out.stderr


def test_a_project_the_emulator_does_not_emulate_is_named(emu: Any, clean_env: Path) -> None:
    Path("sdcluster.toml").write_text('project = "my-project"\nuser = "user:demo@example.com"\n')
    r = invoke(["plan", "--emulator", emu.address])
    assert r.exit_code == 1
    assert f"the emulator at {emu.address} emulates demo-proj, not project my-project" in r.output
    assert "sdcluster emulator serve --project my-project" in r.output


def test_demo_without_the_emulator_extra_says_what_to_install(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trustme" else real(name, *a)
    )
    r = invoke(["demo"])
    assert r.exit_code == 1 and "ModuleNotFoundError" not in r.output
    assert "Hint: pip install 'sdcluster[emulator]'" in r.output


def test_emulator_serve_says_what_it_emulates() -> None:
    proc = subprocess.Popen(
        [SDCLUSTER, "emulator", "serve", "--project", "p-one-23", "--owner", "user:o@example.com"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("export SDCLUSTER_EMULATOR=")
        assert "emulating project p-one-23 (owner user:o@example.com)" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- 1, 6, 10, 12, 13 on the emulator: one journey ----------------------------------------------------


def test_a_day_on_the_emulator(
    make_emu: Callable[..., Any], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = make_emu()
    tmpdir = clean_env / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    monkeypatch.setenv("KUBECONFIG", str(clean_env / "kube" / "config"))
    (clean_env / "kube").mkdir()
    (clean_env / "kube" / "config").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://10.0.0.1"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
                "users": [{"name": "other", "user": {"token": "x"}}],
                "current-context": "other",
            }
        )
    )
    assert invoke(["init", "--project", "demo-proj", "--user", "demo@example.com"]).exit_code == 0
    r = invoke(["apply", "-y"])
    assert r.exit_code == 0, r.output
    # 12. no CA file is left behind per Kubernetes client
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("sdcluster-ca-")] == []

    # 10. labels are updated in place (SetLabels), not ignored
    r = invoke(["plan", "--set", 'cluster.labels={team = "ml"}'])
    assert "~ labels" in r.output and "Plan: 0 to add, 1 to change, 0 to destroy." in r.output, r.output
    emu.log.clear()
    r = invoke(["apply", "-y", "--set", 'cluster.labels={team = "ml"}'])
    assert r.exit_code == 0, r.output
    assert [e.method for e in emu.log.mutating()] == ["SetLabels"]
    cluster = (
        factory(emu)
        .cluster_manager()
        .get_cluster(name="projects/demo-proj/locations/us-central1-c/clusters/sd-cluster")
    )
    assert dict(cluster.resource_labels) == {"team": "ml", "managed-by": "sdcluster"}

    # 13. kubeconfig --merge keeps the other contexts and adds gcloud's name for this cluster
    r = invoke(["kubeconfig", "--merge"])
    assert r.exit_code == 0, r.output
    merged = yaml.safe_load((clean_env / "kube" / "config").read_text())
    assert [c["name"] for c in merged["contexts"]] == ["other", "gke_demo-proj_us-central1-c_sd-cluster"]
    assert merged["current-context"] == "gke_demo-proj_us-central1-c_sd-cluster"

    # 1 + 6. destroy keeps the bucket in the state; the endpoint output goes with the Service
    bucket = factory(emu).storage("demo-proj").bucket("demo-proj-bucket")
    bucket.blob("stable_diffusion_model/1/saved_model.pb").upload_from_string(b"x")
    r = invoke(["destroy", "-y"])
    assert r.exit_code == 0, r.output
    assert "Kept: storage.bucket.demo-proj-bucket" in r.output
    r = invoke(["output", "endpoint"])
    assert r.exit_code == 1 and "no output named 'endpoint'" in r.output
    r = invoke(["status"])
    assert "Endpoint:" not in r.output and "Cluster: not created" in r.output
    r = invoke(["destroy", "-y", "--delete-bucket"])
    assert r.exit_code == 1 and "bucket demo-proj-bucket is not empty" in r.output
    r = invoke(["destroy", "-y", "--delete-bucket", "--force"])
    assert r.exit_code == 0, r.output
    assert factory(emu).storage("demo-proj").lookup_bucket("demo-proj-bucket") is None
    assert sdcluster.State.from_dict(json.loads(Path(".sdcluster/state.json").read_text())).resources == {}


# --- 9. addresses that read well at 80 columns -----------------------------------------------------


def test_a_fresh_plan_names_every_resource_within_80_columns(emu: Any, clean_env: Path) -> None:
    """Each address (what `state show`, `import` and `-target`-like commands take) fits an 80-column
    line after the plan's 4-column indent; the full role and member are in the body."""
    Path("sdcluster.toml").write_text('project = "demo-proj"\nuser = "user:demo@example.com"\n')
    r = invoke(["--emulator", emu.address, "plan"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    addresses = [
        line.removeprefix("  # ").removesuffix(" will be created")
        for line in r.output.splitlines()
        if line.startswith("  # ") and line.endswith(" will be created")
    ]
    assert len(addresses) >= 19, r.output  # every resource of a fresh project is created
    too_long = [a for a in addresses if len(a) > 76]
    assert not too_long, too_long
    assert "  # iam.sa_member.gke-node/iam.serviceAccountUser/gke-admin will be created" in r.output
    assert '      + member = "serviceAccount:gke-admin@demo-proj.iam.gserviceaccount.com"' in r.output


def test_brackets_in_a_label_value_and_a_state_path_are_text_too(mem: dict[str, Any]) -> None:
    r = invoke(["plan", "--set", "cluster.labels.team=[/x]"], mem["stack"])
    assert r.exit_code == 1 and "MarkupError" not in r.output and "Traceback" not in r.output
    assert "[/x]" in r.output, r.output
    r = invoke(["--state", "[/x]/state.json", "apply", "-y"], mem["stack"])
    assert r.exit_code == 0 and "MarkupError" not in r.output, r.output
    assert Path("[/x]/state.json").is_file()
    Path("[/x]/state.json").write_text("{not json")  # an error that names the state's path
    r = invoke(["--state", "[/x]/state.json", "plan"], mem["stack"])
    assert r.exit_code == 1 and "MarkupError" not in r.output, r.output
    assert "[/x]/state.json" in r.output, r.output
