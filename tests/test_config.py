"""sdcluster.toml: validation rules, messages, sources and precedence, templates, rendering.

Table-driven: each row is a setting a user might write and what they must (not) be told about it.
"""

from __future__ import annotations

import contextlib
import json
import re
import string
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sdcluster.config import Config, normalize_member, quantity_value, render_toml, write_init
from sdcluster.errors import ConfigError

BASE = {"project": "demo-proj", "user": "user:me@example.com"}


def data_with(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """BASE plus dotted settings: ``data_with(("cluster.zone", "us-central1-a"))``."""
    data: dict[str, Any] = {k: v for k, v in BASE.items()}
    for dotted, value in pairs:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    return info.value


def write(tmp_path: Path, text: str, name: str = "sdcluster.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL_TOML = 'project = "demo-proj"\nuser = "user:me@example.com"\n'

# --------------------------------------------------------------------------------------------------
# Rules: (dotted key, value) the model accepts, and (key, value, blamed path, words) it rejects.

VALID = [
    ("project", "a12345"),
    ("project", "my-project-123"),
    ("project", "a" * 30),
    ("region", "us-central1"),
    ("user", "group:ml-team@example.com"),
    ("user", "serviceAccount:ci@demo-proj.iam.gserviceaccount.com"),
    ("user", "domain:example.com"),
    ("manage_apis", False),
    ("iam.admin_account", "admin-sa"),
    ("iam.node_account", "n" * 30),
    ("iam.propagation_timeout_s", 1),
    ("cluster.name", "a"),
    ("cluster.name", "c" * 40),
    ("cluster.zone", "us-central1-f"),
    ("cluster.node_pool", "pool-1"),
    ("cluster.machine_type", "e2-medium"),
    ("cluster.machine_type", "custom-4-16384"),
    ("cluster.disk_size_gb", 10),
    ("cluster.disk_type", "pd-ssd"),
    ("cluster.labels", {"team": "ml", "env": "", "équipe": "données"}),
    ("bucket.name", "my.bucket.example.com"),
    ("bucket.name", "{project}-models"),
    ("bucket.name", "abc"),
    ("bucket.location", "US"),
    ("bucket.location", "nam4"),
    ("serving.namespace", "sd-1"),
    ("serving.model_path", "gs://other-bucket/models/sd"),
    ("serving.model_path", "gs://{project}-models/sd"),
    ("serving.image", "tensorflow/serving:2.11.0-gpu"),
    ("serving.image", "us-docker.pkg.dev/p/repo/serving:v1"),
    ("serving.image", "localhost:5000/serving"),
    ("serving.image", "gcr.io/p/serving@sha256:" + "a" * 64),
    ("serving.cpu", "500m"),
    ("serving.cpu", "2.5"),
    ("serving.cpu", ".5"),
    ("serving.cpu", 4),
    ("serving.memory", "512Mi"),
    ("serving.memory", "1G"),
    ("serving.memory", "1e9"),
    ("serving.memory", 17179869184),
    ("serving.allowed_source_ranges", ["203.0.113.0/24", "2001:db8::/32"]),
    ("serving.target_cpu_utilization", 100),
    ("state.path", "state.json"),
    ("state.path", "gs://my-bucket/sdcluster/state.json"),
]


@pytest.mark.parametrize(("key", "value"), VALID, ids=[f"{k}={v!r}"[:60] for k, v in VALID])
def test_valid_settings_are_accepted(key: str, value: Any) -> None:
    cfg = Config.from_dict(data_with((key, value)))

    section, _, name = key.rpartition(".")
    stored = getattr(getattr(cfg, section) if section else cfg, name)
    expected = str(value) if key in ("serving.cpu", "serving.memory") else value  # numbers read as quantities
    assert (list(stored) if isinstance(stored, tuple) else stored) == expected


INVALID = [
    # project: GCP project id rules
    ("project", "short", "project", ["6-30 characters"]),
    ("project", "p" * 31, "project", ["6-30 characters"]),
    ("project", "1project", "project", ["must start with a lowercase letter"]),
    ("project", "My-Project", "project", ["lowercase letters, digits and hyphens", '"M"']),
    ("project", "my_project", "project", ['"_"']),
    ("project", "my-project-", "project", ["must end with a lowercase letter or digit"]),
    ("project", "123456789012", "project", ["looks like a project number"]),
    ("project", 123456, "project", ["must be a string"]),
    # region, zone: the regional-vs-zonal trap, both ways round
    ("region", "us-central1-c", "region", ["is a zone, not a region", '"us-central1"']),
    ("region", "central", "region", ["not a region name"]),
    ("cluster.zone", "us-central1", "cluster.zone", ["is a region, not a zone", "zonal cluster"]),
    ("cluster.zone", "uscentral1c", "cluster.zone", ["not a zone name"]),
    ("cluster.zone", "europe-west4-a", "cluster.zone", ["not in region", '"us-central1"']),
    # user: an IAM member with its type
    ("user", "me@example.com", "user", ["no member type prefix", '"user:me@example.com"']),
    ("user", "serviceaccount:ci@p.iam.gserviceaccount.com", "user", ["did you mean", "serviceAccount:"]),
    ("user", "user:not-an-email", "user", ["not an email address"]),
    ("user", "domain:not a domain", "user", ["not a domain"]),
    ("user", "nobody", "user", ["not an IAM member"]),
    ("manage_apis", "yes", "manage_apis", ["must be true or false", '"yes"']),
    # [iam]
    ("iam.admin_account", "admin", "iam.admin_account", ["6-30 characters"]),
    ("iam.admin_account", "Gke-admin", "iam.admin_account", ['"G"']),
    ("iam.admin_account", "gke-admin-", "iam.admin_account", ["must end with"]),
    ("iam.node_account", "gke-admin", "iam.node_account", ["must differ from iam.admin_account"]),
    ("iam.propagation_timeout_s", 0, "iam.propagation_timeout_s", ["must be > 0"]),
    # [cluster]
    ("cluster.name", "", "cluster.name", ["1-40 characters"]),
    ("cluster.name", "c" * 41, "cluster.name", ["1-40 characters"]),
    ("cluster.name", "sd_cluster", "cluster.name", ['"_"']),
    ("cluster.name", "-sd", "cluster.name", ["must start with a lowercase letter"]),
    ("cluster.name", "sd-", "cluster.name", ["must end with"]),
    ("cluster.node_pool", "Pool", "cluster.node_pool", ['"P"']),
    ("cluster.machine_type", "n2 standard 4", "cluster.machine_type", ["not a Compute Engine machine type"]),
    ("cluster.min_nodes", -1, "cluster.min_nodes", ["must be >= 0"]),
    ("cluster.max_nodes", 0, "cluster.max_nodes", ["must be >= 1"]),
    ("cluster.min_nodes", 2, "cluster.min_nodes", ["above initial_nodes (1)"]),
    ("cluster.initial_nodes", 3, "cluster.initial_nodes", ["above max_nodes (2)"]),
    ("cluster.min_nodes", "1", "cluster.min_nodes", ["must be an integer", 'string "1"']),
    ("cluster.max_nodes", 2.0, "cluster.max_nodes", ["must be an integer"]),
    ("cluster.preemptible", True, "cluster.preemptible", ["together with spot"]),
    ("cluster.disk_size_gb", 9, "cluster.disk_size_gb", ["must be >= 10"]),
    ("cluster.disk_type", "pd-extreme", "cluster.disk_type", ["must be one of", "pd-balanced"]),
    ("cluster.accelerator_type", "nvidia-h100-80gb", "cluster.accelerator_count", ["at least 1"]),
    ("cluster.accelerator_count", 1, "cluster.accelerator_count", ["accelerator_type is not"]),
    ("cluster.accelerator_type", "Tesla T4", "cluster.accelerator_type", ["not a GPU accelerator type"]),
    ("cluster.labels", {"Team": "ml"}, "cluster.labels", ['label key "Team"']),
    ("cluster.labels", {"1team": "ml"}, "cluster.labels", ["must start with a lowercase letter"]),
    ("cluster.labels", {"team": "ML"}, "cluster.labels", ['label value "ML"']),
    ("cluster.labels", {"k" * 64: "v"}, "cluster.labels", ["1-63 characters"]),
    ("cluster.labels", {f"k{i}": "v" for i in range(65)}, "cluster.labels", ["at most 64"]),
    ("cluster.labels", {"team": 1}, "cluster.labels.team", ["must be a string"]),
    ("cluster", "big", "cluster", ["must be a table"]),
    # [bucket]: Cloud Storage naming rules, checked on the resolved name
    ("bucket.name", "ab", "bucket.name", ["3-63 characters"]),
    ("bucket.name", "b" * 64, "bucket.name", ["3-63 characters"]),
    ("bucket.name", "My-Bucket", "bucket.name", ['"B"', '"M"']),
    ("bucket.name", "-bucket", "bucket.name", ["must start with a lowercase letter or digit"]),
    ("bucket.name", "192.168.1.1", "bucket.name", ["IP address"]),
    ("bucket.name", "goog-models", "bucket.name", ['must not start with "goog"']),
    ("bucket.name", "my-google-models", "bucket.name", ['must not contain "google"']),
    ("bucket.name", "my-g00gle-models", "bucket.name", ["misspelling"]),
    ("bucket.name", "{proj}-models", "bucket.name", ["unknown placeholder {proj}"]),
    ("bucket.name", "{project", "bucket.name", ["not a valid template"]),
    ("bucket.location", "us central", "bucket.location", ["not a Cloud Storage location"]),
    # [serving]
    ("serving.namespace", "Default", "serving.namespace", ["DNS-1123 label", '"D"']),
    ("serving.model_name", "stable_diffusion", "serving.model_name", ['"_"']),
    ("serving.model_path", "s3://bucket/model", "serving.model_path", ["must start with gs://"]),
    ("serving.model_path", "gs://{bucket}", "serving.model_path", ["no object path", '"gs://{bucket}"']),
    ("serving.model_path", "gs://Bad/model", "serving.model_path", ["bucket name", '"B"']),
    ("serving.model_path", "gs://{bukcet}/m", "serving.model_path", ["unknown placeholder {bukcet}"]),
    ("serving.image", "Tensorflow/serving", "serving.image", ["not a container image reference"]),
    ("serving.image", "tensorflow/serving:", "serving.image", ["not a container image reference"]),
    ("serving.image", "tensorflow/serving:2.11.0 ", "serving.image", ["not a container image reference"]),
    ("serving.replicas", 0, "serving.replicas", ["must be >= 1"]),
    ("serving.cpu", "3 cores", "serving.cpu", ["not a Kubernetes quantity", '"500m"']),
    ("serving.cpu", "1.2.3", "serving.cpu", ["not a Kubernetes quantity"]),
    ("serving.cpu", "0", "serving.cpu", ["greater than zero"]),
    ("serving.cpu", "-1", "serving.cpu", ["greater than zero"]),
    ("serving.memory", "12GB", "serving.memory", ["not a Kubernetes quantity", '"12Gi"']),
    ("serving.memory", "12gi", "serving.memory", ["not a Kubernetes quantity"]),
    ("serving.memory", "12", "serving.memory", ["only 12 bytes", 'did you mean "12Gi"']),
    ("serving.rest_api_timeout_ms", 0, "serving.rest_api_timeout_ms", ["must be > 0"]),
    ("serving.batching", "no", "serving.batching", ["must be true or false"]),
    ("serving.allowed_source_ranges", ["10.0.0.1/8"], "serving.allowed_source_ranges[0]", ["host bits set"]),
    ("serving.allowed_source_ranges", ["1.2.3.4"], "serving.allowed_source_ranges[0]", ["an address, not"]),
    ("serving.allowed_source_ranges", ["anywhere"], "serving.allowed_source_ranges[0]", ["not a CIDR range"]),
    (
        "serving.allowed_source_ranges",
        ["10.0.0.0/8", "10.0.0.0/33"],
        "serving.allowed_source_ranges[1]",
        ["CIDR"],
    ),
    ("serving.allowed_source_ranges", "10.0.0.0/8", "serving.allowed_source_ranges", ["must be an array"]),
    ("serving.target_cpu_utilization", 0, "serving.target_cpu_utilization", ["must be >= 1"]),
    ("serving.target_cpu_utilization", 101, "serving.target_cpu_utilization", ["must be <= 100"]),
    # [state]
    ("state.path", "s3://bucket/state.json", "state.path", ["must start with gs://"]),
    ("state.path", "gs://my-bucket/", "state.path", ["no object path"]),
    ("state.path", "gs://My-Bucket/state.json", "state.path", ["bucket name"]),
    ("state.path", "states/", "state.path", ["names a directory"]),
    ("state.path", "", "state.path", ["not a file path"]),
]


@pytest.mark.parametrize(
    ("key", "value", "path", "words"), INVALID, ids=[f"{k}={v!r}"[:60] for k, v, *_ in INVALID]
)
def test_invalid_settings_name_the_field_and_the_rule(
    key: str, value: Any, path: str, words: list[str]
) -> None:
    message = str(error_of(data_with((key, value))))

    assert message.startswith(f"invalid configuration: {path}: "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("pairs", "path"),
    [
        ([("serving.autoscaling", True), ("serving.replicas", 3)], "serving.max_replicas"),
        ([("cluster.spot", False), ("cluster.preemptible", True)], None),
        ([("serving.autoscaling", False), ("serving.replicas", 3)], None),
        ([("cluster.min_nodes", 0), ("cluster.initial_nodes", 0), ("cluster.max_nodes", 1)], None),
        (
            [
                ("cluster.machine_type", "g2-standard-8"),
                ("cluster.accelerator_type", "nvidia-l4"),
                ("cluster.accelerator_count", 2),
            ],
            None,
        ),
        ([("bucket.enabled", False), ("serving.model_path", "gs://shared-models/sd")], None),
    ],
)
def test_rules_between_fields(pairs: list[tuple[str, Any]], path: str | None) -> None:
    if path is None:
        Config.from_dict(data_with(*pairs))
    else:
        assert f": {path}: " in str(error_of(data_with(*pairs)))


def test_project_that_makes_a_bad_bucket_name_is_blamed_on_the_bucket_template() -> None:
    error = error_of(data_with(("project", "goog-project")))

    assert 'bucket.name: bucket name "goog-project-bucket" must not start with "goog"' in str(error)
    assert 'from template "{project}-bucket"' in str(error)
    # The model path uses the same bucket; the problem is reported once, not twice.
    assert "serving.model_path" not in str(error)


def test_bucket_name_is_not_checked_when_nothing_uses_it() -> None:
    cfg = Config.from_dict(
        data_with(
            ("project", "goog-project"), ("bucket.enabled", False), ("serving.model_path", "gs://m-1/sd")
        )
    )

    assert cfg.model_path == "gs://m-1/sd"


def test_default_zone_outside_a_changed_region_says_it_is_the_default() -> None:
    error = error_of(data_with(("region", "europe-west4")))

    assert 'cluster.zone: defaults to "us-central1-c", which is not in region "europe-west4"' in str(error)
    assert 'zone = "europe-west4-c"' in error.hint


def test_zone_given_as_region_hint_offers_a_zone() -> None:
    error = error_of(data_with(("cluster.zone", "us-central1")))

    assert 'zone = "us-central1-c"' in error.hint
    assert "gcloud compute zones list --filter=region:us-central1" in error.hint


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"cluster": {"machine_tpye": "x"}}, "cluster.machine_tpye", ['did you mean "machine_type"?']),
        ({"serving": {"replica": 2}}, "serving.replica", ['did you mean "replicas"?']),
        ({"projet": "demo-proj"}, "projet", ["at the top level", 'did you mean "project"?']),
        ({"clustr": {}}, "clustr", ['did you mean "cluster"?']),
        ({"zone": "us-central1-a"}, "zone", ["belongs under [cluster]"]),
        ({"bucket": {"zone": "us-central1-a"}}, "bucket.zone", ["belongs under [cluster]"]),
        ({"cluster": {"frobnicate": 1}}, "cluster.frobnicate", ['unknown key "frobnicate" in [cluster]']),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(data: dict[str, Any], path: str, words: list[str]) -> None:
    message = str(error_of({**BASE, **data}))

    assert f": {path}: unknown key" in message
    for word in words:
        assert word in message


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    error = error_of({**BASE, "cluster": {"frobnicate": 1}})

    assert "valid keys in [cluster]: name, zone, node_pool, machine_type" in error.hint


@pytest.mark.parametrize("missing", ["project", "user"])
def test_required_fields(missing: str) -> None:
    error = error_of({k: v for k, v in BASE.items() if k != missing})

    assert f"{missing}: is required" in str(error)
    assert "sdcluster init --project P --user EMAIL" in error.hint


def test_several_problems_are_reported_together_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL_TOML + '[cluster]\nzone = "us-central1"\nmin_nodes = -1\nmachine_tpye = "e2"\n',
    )

    with pytest.raises(ConfigError) as info:
        Config.load(path, env={})

    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 3 problems:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "cluster.machine_tpye",
        "cluster.min_nodes",
        "cluster.zone",
    ]
    # Each line carries its own fix; the overall hint points at them.
    assert any("rename it to machine_type" in line for line in lines)
    assert info.value.hint == "fix the 3 problems above"


# --------------------------------------------------------------------------------------------------
# Sources: file < environment < overrides.


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_TOML + '[cluster]\nzone = "us-central1-a"\nmax_nodes = 3\n')
    env = {"SDCLUSTER_CLUSTER__ZONE": "us-central1-b"}
    overrides = {"cluster.zone": "us-central1-f"}

    assert Config.load(path, env={}).cluster.zone == "us-central1-a"
    assert Config.load(path, env=env).cluster.zone == "us-central1-b"
    cfg = Config.load(path, overrides=overrides, env=env)
    assert cfg.cluster.zone == "us-central1-f"
    assert cfg.cluster.max_nodes == 3  # keys not overridden keep the file's value


def test_overrides_accept_nested_tables_and_skip_none(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_TOML + '[cluster]\nzone = "us-central1-a"\n')

    cfg = Config.load(path, overrides={"cluster": {"max_nodes": 4, "zone": None}, "region": None}, env={})

    assert (cfg.cluster.zone, cfg.cluster.max_nodes, cfg.region) == ("us-central1-a", 4, "us-central1")


@pytest.mark.parametrize(
    ("var", "raw", "key", "expected"),
    [
        ("SDCLUSTER_PROJECT", "other-proj", "project", "other-proj"),
        ("SDCLUSTER_MANAGE_APIS", "no", "manage_apis", False),
        ("SDCLUSTER_MANAGE_APIS", "TRUE", "manage_apis", True),
        ("SDCLUSTER_CLUSTER__SPOT", "0", "cluster.spot", False),
        ("SDCLUSTER_CLUSTER__MAX_NODES", "5", "cluster.max_nodes", 5),
        ("SDCLUSTER_CLUSTER__NAME", "123", "cluster.name", None),  # a string field stays a string
        ("SDCLUSTER_CLUSTER__LABELS", '{team = "ml"}', "cluster.labels", {"team": "ml"}),
        ("SDCLUSTER_CLUSTER__ACCELERATOR_TYPE", "", "cluster.accelerator_type", None),  # empty = unset
        ("SDCLUSTER_SERVING__CPU", "500m", "serving.cpu", "500m"),
        (
            "SDCLUSTER_SERVING__ALLOWED_SOURCE_RANGES",
            "10.0.0.0/8, 192.168.0.0/16",
            "serving.allowed_source_ranges",
            ("10.0.0.0/8", "192.168.0.0/16"),
        ),
        (
            "SDCLUSTER_SERVING__ALLOWED_SOURCE_RANGES",
            '["10.0.0.0/8"]',
            "serving.allowed_source_ranges",
            ("10.0.0.0/8",),
        ),
        ("SDCLUSTER_STATE", "gs://my-bucket/s/state.json", "state.path", "gs://my-bucket/s/state.json"),
        ("SDCLUSTER_STATE__PATH", "other.json", "state.path", "other.json"),
        ("SDCLUSTER_EMULATOR", "localhost:1234", "project", "demo-proj"),  # not a config field
        ("SDCLUSTER_LOG_LEVEL", "debug", "project", "demo-proj"),  # someone else's variable
    ],
)
def test_environment_variables_are_read_by_field_type(
    tmp_path: Path, var: str, raw: str, key: str, expected: Any
) -> None:
    path = write(tmp_path, MINIMAL_TOML)

    if key == "cluster.name":
        assert "cluster.name (from SDCLUSTER_CLUSTER__NAME)" in str(_load_error(path, {var: raw}))
        return
    cfg = Config.load(path, env={var: raw})
    section, _, name = key.rpartition(".")
    assert getattr(getattr(cfg, section) if section else cfg, name) == expected


def _load_error(path: Path, env: dict[str, str], overrides: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.load(path, overrides=overrides, env=env)
    return info.value


def test_errors_name_the_variable_or_the_override_that_set_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_TOML)

    env_error = _load_error(path, {"SDCLUSTER_CLUSTER__MAX_NODES": "many"})
    assert str(env_error) == (
        f'{path}: cluster.max_nodes (from SDCLUSTER_CLUSTER__MAX_NODES): must be an integer, not string "many"'
    )
    assert env_error.hint == "fix SDCLUSTER_CLUSTER__MAX_NODES"
    override_error = _load_error(path, {}, {"cluster.zone": "us-central1"})
    assert "cluster.zone (from --set): " in str(override_error)
    assert "cluster.tpye (from --set): unknown key" in str(_load_error(path, {}, {"cluster.tpye": 1}))


@pytest.mark.parametrize(
    ("var", "words"),
    [
        ("SDCLUSTER_CLUSTER__ZONEE", ["did you mean SDCLUSTER_CLUSTER__ZONE?"]),
        ("SDCLUSTER_CLUSTR__ZONE", ["is not a configuration variable"]),
        ("SDCLUSTER_PROJCT", ["did you mean SDCLUSTER_PROJECT?"]),
    ],
)
def test_misspelt_environment_variables_are_errors(tmp_path: Path, var: str, words: list[str]) -> None:
    error = _load_error(write(tmp_path, MINIMAL_TOML), {var: "x"})

    assert str(error).startswith(f"environment: {var} ")
    for word in words:
        assert word in str(error)


def test_missing_file_without_project_suggests_init(tmp_path: Path) -> None:
    error = _load_error(tmp_path / "sdcluster.toml", {})

    assert "config file not found" in str(error)
    assert error.hint == "create one: sdcluster init --project P --user EMAIL"


def test_missing_file_is_fine_when_the_environment_gives_project_and_user(tmp_path: Path) -> None:
    env = {"SDCLUSTER_PROJECT": "env-proj", "SDCLUSTER_USER": "user:ci@example.com"}

    cfg = Config.load(tmp_path / "absent.toml", env=env)

    assert (cfg.project, cfg.bucket_name) == ("env-proj", "env-proj-bucket")


def test_config_path_defaults_to_sdcluster_config_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL_TOML + 'region = "europe-west4"\n[cluster]\nzone = "europe-west4-a"\n', "x.toml"
    )

    assert Config.load(env={"SDCLUSTER_CONFIG": str(path)}).region == "europe-west4"


def test_config_path_defaults_to_sdcluster_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL_TOML)
    monkeypatch.chdir(tmp_path)

    assert Config.load(env={}).project == "demo-proj"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('project = "demo-proj\n', ["invalid TOML", "line 1"]),
        ("project = demo-proj\n", ["invalid TOML"]),
    ],
)
def test_broken_toml_names_the_file_and_line(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)

    message = str(_load_error(path, {}))

    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    assert "cannot read the config file" in str(_load_error(tmp_path, {}))


# --------------------------------------------------------------------------------------------------
# Resolved values, construction, summary.


def test_resolved_values_follow_the_tutorial_defaults() -> None:
    cfg = Config.build(**BASE)

    assert cfg.bucket_name == "demo-proj-bucket"
    assert cfg.bucket_location == "us-central1"
    assert cfg.model_path == "gs://demo-proj-bucket/stable_diffusion_model"
    assert cfg.admin_email == "gke-admin@demo-proj.iam.gserviceaccount.com"
    assert cfg.node_email == "gke-node@demo-proj.iam.gserviceaccount.com"
    assert cfg.cluster_location == "us-central1-c"
    assert cfg.cluster_key == "projects/demo-proj/locations/us-central1-c/clusters/sd-cluster"
    # min_nodes 0 (the tutorial: 1): a paused cluster keeps no serving node (README, "Pause")
    assert (cfg.cluster.machine_type, cfg.cluster.min_nodes, cfg.cluster.max_nodes) == ("n2-standard-4", 0, 2)
    assert (cfg.serving.image, cfg.serving.model_name) == ("tensorflow/serving:2.11.0", "stable-diffusion")


def test_templates_follow_project_and_bucket() -> None:
    cfg = Config.build(
        **BASE,
        bucket={"name": "{project}-models", "location": "EU"},
        serving={"model_path": "gs://{bucket}/{project}/sd"},
    )

    assert cfg.bucket_name == "demo-proj-models"
    assert cfg.model_path == "gs://demo-proj-models/demo-proj/sd"
    assert cfg.bucket.name == "{project}-models"  # kept as written, so rendering round-trips
    assert cfg.bucket_location == "EU"


def test_summary_is_json_friendly_and_resolved() -> None:
    cfg = Config.build(**BASE, serving={"allowed_source_ranges": ["10.0.0.0/8"]})

    summary = json.loads(json.dumps(cfg.summary()))

    assert summary["bucket"]["name"] == "demo-proj-bucket"
    assert summary["serving"]["model_path"] == "gs://demo-proj-bucket/stable_diffusion_model"
    assert summary["serving"]["allowed_source_ranges"] == ["10.0.0.0/8"]
    assert summary["iam"]["admin_email"] == "gke-admin@demo-proj.iam.gserviceaccount.com"
    assert summary["cluster"]["key"] == cfg.cluster_key


def test_direct_construction_validates_with_pydantic_errors() -> None:
    from sdcluster.config import ClusterConfig

    cfg = Config(project="demo-proj", user="user:me@example.com", cluster=ClusterConfig(zone="us-central1-a"))
    assert cfg.cluster_location == "us-central1-a"
    with pytest.raises(ValidationError, match="is a region, not a zone"):
        ClusterConfig(zone="us-central1")


def test_configs_are_frozen_values() -> None:
    cfg = Config.build(**BASE)

    with pytest.raises(ValidationError):
        cfg.project = "other-proj"
    assert cfg == Config.build(**BASE)


def test_build_accepts_section_models_and_raises_config_error() -> None:
    from sdcluster.config import ServingConfig

    assert Config.build(**BASE, serving=ServingConfig(replicas=2)).serving.replicas == 2
    with pytest.raises(ConfigError, match=re.escape("serving.replicas: must be >= 1")):
        Config.build(**BASE, serving={"replicas": 0})


@pytest.mark.parametrize(
    ("given", "member"),
    [
        ("me@example.com", "user:me@example.com"),
        (" me@example.com ", "user:me@example.com"),
        ("group:g@example.com", "group:g@example.com"),
        ("not-an-email", "not-an-email"),
    ],
)
def test_normalize_member_for_init(given: str, member: str) -> None:
    assert normalize_member(given) == member


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("3", "3"),
        ("500m", "0.5"),
        ("2.5", "2.5"),
        ("12Gi", str(12 * 1024**3)),
        ("1G", "1000000000"),
        ("1e9", "1e9"),
    ],
)
def test_quantity_values(quantity: str, value: str) -> None:
    assert quantity_value(quantity) == Decimal(value)


def test_importing_config_stays_light() -> None:
    code = (
        "import sys, sdcluster.config\n"
        "heavy = [m for m in sys.modules if m.startswith(('google', 'kubernetes', 'grpc'))]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# Rendering sdcluster.toml and `sdcluster init`.

NON_DEFAULT = {
    **BASE,
    "region": "europe-west4",
    "manage_apis": False,
    "iam": {"propagation_timeout_s": 60},
    "cluster": {
        "zone": "europe-west4-b",
        "max_nodes": 5,
        "spot": False,
        "preemptible": True,
        "machine_type": "n1-standard-8",
        "accelerator_type": "nvidia-tesla-t4",
        "accelerator_count": 1,
        "labels": {"team": "ml", "équipe": "données", "empty": ""},
    },
    "bucket": {"name": "{project}-models", "location": "EU", "keep_on_destroy": False},
    "serving": {"allowed_source_ranges": ["10.0.0.0/8"], "cpu": "500m", "autoscaling": True},
    "state": {"path": 'odd "dir"\\with\x7fchars/state.json'},
}


@pytest.mark.parametrize("data", [BASE, NON_DEFAULT], ids=["defaults", "non-defaults"])
def test_render_toml_round_trips(tmp_path: Path, data: dict[str, Any]) -> None:
    cfg = Config.from_dict(data)

    path = write(tmp_path, render_toml(cfg))

    assert Config.load(path, env={}) == cfg


def test_render_toml_sets_changed_values_and_comments_defaults() -> None:
    text = render_toml(NON_DEFAULT)

    assert 'zone = "europe-west4-b"\n' in text
    assert '\n# name = "sd-cluster"\n' in text
    assert '\nname = "{project}-models"\n' in text
    assert '\nmachine_type = "n1-standard-8"\n' in text
    assert '\n# disk_type = "pd-balanced"\n' in text
    assert "\n[serving]\n" in text
    assert "équipe" in text


def test_render_toml_rejects_invalid_fields() -> None:
    with pytest.raises(ConfigError, match=re.escape("cluster.zone")):
        render_toml({**BASE, "cluster": {"zone": "us-central1"}})


def test_write_init_writes_a_loadable_file(tmp_path: Path) -> None:
    path = write_init(
        tmp_path / "sub" / "sdcluster.toml",
        force=False,
        project="demo-proj",
        user="me@example.com",
        region=None,
        **{"cluster.zone": "us-central1-a"},
    )

    cfg = Config.load(path, env={})
    assert (cfg.user, cfg.cluster.zone) == ("user:me@example.com", "us-central1-a")


def test_write_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = write(tmp_path, "# mine\n")

    with pytest.raises(ConfigError, match="already exists") as info:
        write_init(path, force=False, **BASE)
    assert "--force" in info.value.hint
    assert path.read_text() == "# mine\n"

    write_init(path, force=True, **BASE)
    assert Config.load(path, env={}).project == "demo-proj"


def test_write_init_with_invalid_fields_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="project"):
        write_init(tmp_path / "sdcluster.toml", force=False, project="Bad", user="me@example.com")

    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Properties.

PROJECT_IDS = st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True).filter(
    lambda p: not p.startswith("goog") and "google" not in p.replace("0", "o")
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(project=PROJECT_IDS)
def test_valid_project_ids_round_trip(project: str) -> None:
    cfg = Config.build(project=project, user="user:me@example.com")

    assert cfg.bucket_name == f"{project}-bucket"
    text = render_toml(cfg)

    assert Config.from_dict(tomllib.loads(text)) == cfg


STRING_FIELDS = [
    "project",
    "region",
    "user",
    "cluster.zone",
    "cluster.name",
    "cluster.machine_type",
    "bucket.name",
    "bucket.location",
    "serving.image",
    "serving.cpu",
    "serving.memory",
    "serving.model_path",
    "state.path",
]
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@FAST
@given(key=st.sampled_from(STRING_FIELDS), value=st.text(max_size=80))
def test_random_strings_give_config_error_or_a_config(key: str, value: str) -> None:
    try:
        Config.from_dict(data_with((key, value)))
    except ConfigError as e:
        assert key.split(".")[0] in str(e)


@FAST
@given(
    key=st.sampled_from([*STRING_FIELDS, "cluster.labels", "serving.allowed_source_ranges", "cluster"]),
    value=ANY_VALUE,
)
def test_random_values_never_crash(key: str, value: Any) -> None:
    with contextlib.suppress(ConfigError):
        Config.from_dict(data_with((key, value)))


@FAST
@given(
    name=st.text(alphabet=string.ascii_uppercase + "_", min_size=1, max_size=25),
    raw=st.text(max_size=30),
)
def test_random_environment_never_crashes(tmp_path: Path, name: str, raw: str) -> None:
    path = tmp_path / "sdcluster.toml"
    path.write_text(MINIMAL_TOML)
    with contextlib.suppress(ConfigError):
        Config.load(path, env={f"SDCLUSTER_{name}": raw})


@FAST
@given(n=st.integers(min_value=1, max_value=10**6), power=st.integers(min_value=0, max_value=5))
def test_binary_si_quantities(n: int, power: int) -> None:
    suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi"][power]

    assert quantity_value(f"{n}{suffix}") == n * 1024**power


@pytest.mark.parametrize(
    ("machine", "gpu", "ok"),
    [
        ("n1-standard-8", "nvidia-tesla-t4", True),
        ("n2-standard-8", "nvidia-tesla-t4", False),
        ("g2-standard-8", "nvidia-l4", True),
        ("n1-standard-8", "nvidia-l4", False),
        ("a2-highgpu-1g", "nvidia-tesla-a100", True),
    ],
)
def test_accelerators_need_a_matching_machine_family(machine: str, gpu: str, ok: bool) -> None:
    build = lambda: Config.build(  # noqa: E731
        project="demo-proj",
        user="user:a@example.com",
        cluster={"machine_type": machine, "accelerator_type": gpu, "accelerator_count": 1},
    )
    if ok:
        assert build().cluster.accelerator_type == gpu
    else:
        with pytest.raises(ConfigError, match=r"cluster\.accelerator_type") as err:
            build()
        assert "machine type" in str(err.value) and "machine_type" in err.value.hint


@pytest.mark.parametrize(
    ("resource_id", "project"),
    [
        ("projects/demo-proj/services/iam.googleapis.com", "demo-proj"),
        ("gke-admin@demo-proj.iam.gserviceaccount.com", "demo-proj"),
        ("gs://demo-proj-bucket", None),
        # A Workload Identity principal: the project number in its path is not another project's id.
        (
            "gs://b roles/storage.objectViewer principal://iam.googleapis.com/projects/100906691060/"
            "locations/global/workloadIdentityPools/demo-proj.svc.id.goog/subject/ns/default/sa/tf-serving",
            "demo-proj",
        ),
        (
            "projects/prod/serviceAccounts/x@prod.iam.gserviceaccount.com roles/r principal://iam.googleapis"
            ".com/projects/1/locations/global/workloadIdentityPools/demo-proj.svc.id.goog/subject/ns/a/sa/b",
            "prod",
        ),
    ],
)
def test_the_project_a_resource_id_names(resource_id: str, project: str | None) -> None:
    from sdcluster.config.names import project_of

    assert project_of(resource_id) == project
