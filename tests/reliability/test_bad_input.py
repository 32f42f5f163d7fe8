"""Bad input through the CLI: broken or invalid configuration (named cases and hypothesis-generated
ones), unusable state files, stale and hand-edited saved plans, a directory that is not a SavedModel
and an over-long prompt. Each one exits 1 with ``Error: ...`` naming the problem, shows no
traceback, and makes **zero** mutating calls against the emulator."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sdcluster.state import LocalBackend, ResourceState, State
from sdcluster.ui.cli import app

from .runs import KNOBS
from .worldview import PROJECT, USER

runner = CliRunner()
VALID = f'project = "{PROJECT}"\nuser = "{USER}"\n'
STATE = Path(".sdcluster/state.json")


@pytest.fixture(scope="module")
def emu() -> Iterator[Any]:
    from sdcluster.emulator import Emulator

    with Emulator(**KNOBS) as emulator:
        yield emulator


@pytest.fixture
def project_dir(emu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a valid sdcluster.toml, routed to the emulator, with a clean log."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("SDCLUSTER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SDCLUSTER_EMULATOR", emu.address)
    Path("sdcluster.toml").write_text(VALID)
    emu.log.clear()
    return tmp_path


def refused(emu: Any, args: list[str], *expected: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI; assert exit 1, ``Error:`` with each ``expected`` text, no traceback, no mutation."""
    result = runner.invoke(app, args, env=env)
    out = result.output
    assert result.exit_code == 1, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Error: " in out and "Traceback" not in out, out
    for text in expected:
        assert text in out, out
    assert emu.log.mutating() == [], emu.log.mutating()
    return out


# --------------------------------------------------------------------------------------------------
# Configuration: named cases

CONFIG_CASES = {
    "unterminated string": ('project = "demo-proj\n', ["invalid TOML", "line 1"]),
    "unclosed section": (VALID + "[cluster\nname = 'x'\n", ["invalid TOML"]),
    "empty file": ("", ["project"]),
    "no user": (f'project = "{PROJECT}"\n', ["user"]),
    "member without type": (f'project = "{PROJECT}"\nuser = "nobody"\n', ["user", "nobody"]),
    "unknown top-level key": (VALID + 'projct = "x"\n', ["projct"]),
    "unknown section": (VALID + "[clustr]\nname = 'x'\n", ["clustr", 'did you mean "cluster"']),
    "unknown key in section": (VALID + '[cluster]\nmachine_tpye = "n2-standard-4"\n', ["machine_tpye"]),
    "region as zone": (VALID + '[cluster]\nzone = "us-central1"\n', ["cluster.zone", "is a region"]),
    "zone outside region": (VALID + '[cluster]\nzone = "europe-west1-b"\n', ["cluster.zone"]),
    "string for a number": (VALID + '[cluster]\nmax_nodes = "2"\n', ["cluster.max_nodes", "integer"]),
    "min above initial": (VALID + "[cluster]\nmin_nodes = 2\n", ["min_nodes"]),
    "spot and preemptible": (VALID + "[cluster]\npreemptible = true\n", ["preemptible"]),
    "gpus without type": (VALID + "[cluster]\naccelerator_count = 1\n", ["accelerator_count"]),
    "bad bucket name": (VALID + '[bucket]\nname = "Bad_Bucket"\n', ["bucket.name"]),
    "bad cidr": (VALID + '[serving]\nallowed_source_ranges = ["10.0.0.0/33"]\n', ["allowed_source_ranges"]),
    "same accounts": (VALID + '[iam]\nadmin_account = "gke-node"\n', ["node_account"]),
}


@pytest.mark.parametrize("text, expected", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_invalid_configuration_is_refused_before_any_call(
    emu: Any, project_dir: Path, text: str, expected: list[str]
) -> None:
    Path("sdcluster.toml").write_text(text)
    refused(emu, ["apply", "-y"], "sdcluster.toml", *expected)


def test_binary_configuration_is_refused(emu: Any, project_dir: Path) -> None:
    Path("sdcluster.toml").write_bytes(b"\x00\xff\x13garbage")
    refused(emu, ["apply", "-y"], "sdcluster.toml")


def test_invalid_environment_override_names_the_variable(emu: Any, project_dir: Path) -> None:
    refused(
        emu,
        ["apply", "-y"],
        "cluster.max_nodes",
        "SDCLUSTER_CLUSTER__MAX_NODES",
        env={"SDCLUSTER_CLUSTER__MAX_NODES": "abc"},
    )


# --------------------------------------------------------------------------------------------------
# Configuration: generated cases (one invalid setting on top of a valid file)

SECTION_FIELDS = {
    "": {"project", "region", "user", "manage_apis"},
    "iam": {"admin_account", "node_account", "propagation_timeout_s"},
    "cluster": {
        "name", "zone", "node_pool", "machine_type", "min_nodes", "max_nodes", "initial_nodes", "spot",
        "preemptible", "disk_size_gb", "disk_type", "accelerator_type", "accelerator_count", "labels",
    },
    "bucket": {"enabled", "name", "keep_on_destroy", "location"},
    "serving": {
        "namespace", "model_name", "model_path", "image", "replicas", "cpu", "memory", "rest_api_timeout_ms",
        "batching", "rollout_timeout_s", "lb_timeout_s", "allowed_source_ranges", "autoscaling",
        "max_replicas", "target_cpu_utilization",
    },
    "state": {"path"},
}  # fmt: skip
# Integer settings and the range they must lie in.
INT_RANGES = {
    ("cluster", "max_nodes"): (1, None),
    ("cluster", "min_nodes"): (0, None),
    ("cluster", "disk_size_gb"): (10, 65536),
    ("serving", "replicas"): (1, None),
    ("serving", "target_cpu_utilization"): (1, 100),
    ("serving", "rest_api_timeout_ms"): (1, None),
    ("iam", "propagation_timeout_s"): (1, None),
}
BOOL_SETTINGS = [("", "manage_apis"), ("cluster", "spot"), ("bucket", "enabled"), ("serving", "batching")]
NAME_SETTINGS = [
    ("", "project"),
    ("", "region"),
    ("cluster", "name"),
    ("cluster", "zone"),
    ("cluster", "node_pool"),
    ("cluster", "machine_type"),
    ("iam", "admin_account"),
    ("serving", "namespace"),
    ("serving", "model_name"),
]
ASCII = st.characters(codec="ascii", categories=("L", "N", "P", "Zs"))
LOWER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=8)
Setting = tuple[str, str, Any]  # section ("" = top level), key, value


def out_of_range(section: str, key: str) -> st.SearchStrategy[Setting]:
    low, high = INT_RANGES[(section, key)]
    values = st.integers(max_value=low - 1)
    if high is not None:
        values = values | st.integers(min_value=high + 1, max_value=2**62)
    return values.map(lambda v: (section, key, v))


def wrong_type(section: str, key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Setting]:
    return values.map(lambda v: (section, key, v))


def bad_name(section: str, key: str) -> st.SearchStrategy[Setting]:
    # Lower-case letters, digits and dashes, with one character no GCP/Kubernetes name allows.
    bad = st.tuples(LOWER, st.sampled_from("A_ !/.:@Z"), LOWER).map("".join)
    return bad.map(lambda v: (section, key, v))


def unknown_key() -> st.SearchStrategy[Setting]:
    keys = st.from_regex(r"[a-z][a-z_]{2,14}", fullmatch=True)
    return st.tuples(st.sampled_from(sorted(SECTION_FIELDS)), keys, st.integers()).filter(
        lambda s: s[1] not in SECTION_FIELDS[s[0]] and not (s[0] == "" and s[1] in SECTION_FIELDS)
    )


def invalid_settings() -> st.SearchStrategy[Setting]:
    not_int = st.text(ASCII, max_size=6) | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    not_bool = st.integers() | st.text(ASCII, max_size=6)
    not_str = st.integers() | st.booleans() | st.lists(st.integers(), max_size=2)
    return st.one_of(
        *(out_of_range(s, k) for s, k in INT_RANGES),
        *(wrong_type(s, k, not_int) for s, k in INT_RANGES),
        *(wrong_type(s, k, not_bool) for s, k in BOOL_SETTINGS),
        *(bad_name(s, k) for s, k in NAME_SETTINGS),
        *(wrong_type(s, k, not_str) for s, k in NAME_SETTINGS),
        unknown_key(),
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # strings, ints and floats read the same in TOML


def config_with(setting: Setting) -> str:
    section, key, value = setting
    top = {"project": json.dumps(PROJECT), "user": json.dumps(USER)}
    if section == "":
        top[key] = toml_value(value)
        return "".join(f"{k} = {v}\n" for k, v in top.items())
    return VALID + f"[{section}]\n{key} = {toml_value(value)}\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(setting=invalid_settings())
def test_generated_invalid_settings_are_refused_naming_the_key(
    emu: Any, project_dir: Path, setting: Setting
) -> None:
    emu.log.clear()
    Path("sdcluster.toml").write_text(config_with(setting))
    refused(emu, ["apply", "-y"], setting[1])  # the message names the key


# --------------------------------------------------------------------------------------------------
# State files


def valid_state_bytes() -> bytes:
    backend = LocalBackend(STATE)
    state = State.new()
    state.resources["iam.service_account.gke-admin"] = ResourceState(
        type="iam.service_account", id=f"gke-admin@{PROJECT}.iam.gserviceaccount.com"
    )
    backend.write(state)
    return STATE.read_bytes()


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda b: b[: len(b) // 2], ["is not valid JSON", "state.json"]),
        pytest.param(
            lambda b: b"\x00\xff\x13garbage",
            ["state.json"],
        ),
        (lambda b: b"[]", ["is not a JSON object"]),
        (
            lambda b: b.replace(b'"format_version": 1', b'"format_version": 99'),
            ["format_version 99", "newer"],
        ),
        (lambda b: b.replace(b'"serial": 1', b'"serial": "one"'), ["malformed"]),
    ],
    ids=["truncated", "corrupt", "not-an-object", "future-version", "wrong-type"],
)
def test_unusable_state_is_refused_and_left_untouched(
    emu: Any, project_dir: Path, damage: Any, expected: list[str]
) -> None:
    damaged = damage(valid_state_bytes())
    STATE.write_bytes(damaged)
    for command in (["plan"], ["apply", "-y"], ["destroy", "-y"]):
        refused(emu, command, *expected)
    assert STATE.read_bytes() == damaged  # never overwritten


# --------------------------------------------------------------------------------------------------
# Saved plans


def saved_plan(emu: Any) -> dict[str, Any]:
    result = runner.invoke(app, ["plan", "--out", "plan.json"])
    assert result.exit_code == 0, result.output
    assert emu.log.mutating() == []
    return json.loads(Path("plan.json").read_text())  # type: ignore[no-any-return]


def test_stale_saved_plan_is_refused(emu: Any, project_dir: Path) -> None:
    saved_plan(emu)
    valid_state_bytes()  # the state moved on since the plan was made (serial 0 -> 1)
    refused(emu, ["apply", "plan.json"], "the plan was made from state serial 0", "Hint:")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p["changes"][0].update(action="delete"), "modified after it was saved"),
        (
            lambda p: p["config"]["cluster"].update(machine_type="n2-standard-64"),
            "modified after it was saved",
        ),
        (lambda p: p.update(format="sdcluster-plan/9"), "not a plan saved by this sdcluster version"),
    ],
    ids=["action", "config", "format"],
)
def test_hand_edited_saved_plan_is_refused(emu: Any, project_dir: Path, edit: Any, expected: str) -> None:
    plan = saved_plan(emu)
    edit(plan)
    Path("plan.json").write_text(json.dumps(plan))
    refused(emu, ["apply", "plan.json"], expected)


@pytest.mark.parametrize(
    "damage", [lambda b: b[: len(b) // 2], lambda b: b"\xff\xfe\x00"], ids=["truncated", "binary"]
)
def test_unreadable_saved_plan_is_refused(emu: Any, project_dir: Path, damage: Any) -> None:
    saved_plan(emu)
    Path("plan.json").write_bytes(damage(Path("plan.json").read_bytes()))
    refused(emu, ["apply", "plan.json"], "plan.json", "not valid JSON")


# --------------------------------------------------------------------------------------------------
# Day-2 commands


def test_upload_of_a_directory_that_is_not_a_saved_model_is_refused(emu: Any, project_dir: Path) -> None:
    model = Path("not-a-model")
    (model / "weights").mkdir(parents=True)
    (model / "weights" / "model.ckpt").write_bytes(b"\x00" * 1024)
    refused(emu, ["upload-model", str(model)], "saved_model.pb")
    refused(emu, ["upload-model", "no-such-dir"], "no-such-dir", "not a directory")


def test_over_long_prompt_is_refused_before_any_request(emu: Any, project_dir: Path) -> None:
    prompt = " ".join(["astronaut"] * 100)
    endpoint = "http://127.0.0.1:9/v1/models/stable-diffusion"  # never contacted
    refused(
        emu, ["generate", prompt, "--endpoint", endpoint, "--out", "images"], "the prompt is", "tokens long"
    )
    assert not Path("images").exists()
