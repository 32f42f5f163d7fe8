"""The first real apply serves the model (issue 12): one test per finding, each through what a user
runs (the CLI, ``sdcluster.plan/apply``) against the emulator, which reads the model as the pod's
identity and starts TF Serving like TF Serving 2.11 does.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from typer.testing import CliRunner

import sdcluster
from sdcluster.ui.cli import app
from sdcluster.ui.demo import make_demo_model

from ..helpers import factory

PROJECT = "demo-proj"
USER = "user:demo@example.com"
BUCKET = f"{PROJECT}-bucket"
KEY = f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster"
DEPLOYMENT = "k8s.deployment.default/stable-diffusion"


def cli(emu: Any, workdir: Path, *args: str) -> Any:
    """Run ``sdcluster ARGS`` in ``workdir`` (its sdcluster.toml) against the emulator."""
    return CliRunner().invoke(
        app,
        ["--emulator", emu.address, "--config", str(workdir / "sdcluster.toml"), *args],
        catch_exceptions=False,
    )


def init(emu: Any, workdir: Path, **settings: Any) -> None:
    """An sdcluster.toml for demo-proj, with ``serving``/``cluster`` settings, state in workdir."""
    lines = [
        f'project = "{PROJECT}"',
        f'user = "{USER}"',
        "",
        "[state]",
        f'path = "{workdir / "state.json"}"',
    ]
    for section, values in settings.items():
        lines += ["", f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    (workdir / "sdcluster.toml").write_text("\n".join(lines) + "\n")


def endpoint(workdir: Path) -> str:
    state = json.loads((workdir / "state.json").read_text())
    return str(state["outputs"]["endpoint"])


def model_status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def served(url: str, version: int, within_s: float = 10.0) -> bool:
    """Whether TF Serving at ``url`` reports ``version`` AVAILABLE within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        doc = model_status(url) or {}
        if any(
            v["version"] == str(version) and v["state"] == "AVAILABLE"
            for v in doc.get("model_version_status", [])
        ):
            return True
        time.sleep(0.1)
    return False


def kube(emu: Any) -> k8s.ApiClient:
    cluster = factory(emu).cluster_manager().get_cluster(name=KEY)
    clients = factory(emu)
    return clients.kubernetes(
        cluster.endpoint, cluster.master_auth.cluster_ca_certificate, clients.user_credentials()
    )


def tf_pod(emu: Any) -> Any:
    (pod,) = (
        k8s.CoreV1Api(kube(emu)).list_namespaced_pod("default", label_selector="app=stable-diffusion").items
    )
    return pod


# ---- 1. the pods read the bucket as their Kubernetes service account --------------------------------


def test_pods_read_the_model_as_their_ksa_whose_bucket_grant_is_managed(
    make_emu: Any, tmp_path: Path
) -> None:
    emu = make_emu()
    init(emu, tmp_path, serving={"rollout_timeout_s": 20})
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    model = make_demo_model(tmp_path / "model", shards=2, shard_bytes=4096)
    cli(emu, tmp_path, "upload-model", str(model))

    url = endpoint(tmp_path)
    assert served(url, 1)  # TF Serving read gs://.../1/ as its pod's identity
    number = emu.world.project(PROJECT)["number"]
    principal = (
        f"principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
        f"{PROJECT}.svc.id.goog/subject/ns/default/sa/tf-serving"
    )
    readers = {
        e.caller
        for e in emu.log.entries()
        if e.service == "storage" and "stable_diffusion_model" in e.resource
    }
    assert principal in readers
    bucket = factory(emu).storage(PROJECT).bucket(BUCKET)
    viewers = next(
        b["members"]
        for b in bucket.get_iam_policy(requested_policy_version=3).bindings
        if b["role"] == "roles/storage.objectViewer"
    )
    assert viewers == {principal}  # the KSA reads the model; the node account reads nothing
    assert tf_pod(emu).spec.service_account_name == "tf-serving"

    # The grant is a managed resource: drift is seen by plan and restored by apply.
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings = [b for b in policy.bindings if b["role"] != "roles/storage.objectViewer"]
    bucket.set_iam_policy(policy)
    plan = cli(emu, tmp_path, "plan", "--json")
    changes = {c["address"]: c["action"] for c in json.loads(plan.output)["changes"]}
    address = f"storage.bucket_member.{BUCKET}/objectViewer/default.tf-serving"
    assert changes[address] == "create"
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    restored = bucket.get_iam_policy(requested_policy_version=3)
    assert any(
        principal in b["members"] for b in restored.bindings if b["role"] == "roles/storage.objectViewer"
    )


# ---- 2. TF Serving listens only after a model loads --------------------------------------------------


def test_apply_on_an_empty_model_path_finishes_and_upload_model_waits_until_served(
    make_emu: Any, tmp_path: Path
) -> None:
    # Loading takes longer than the old liveness allowance (60 s + 6 x 20 s of probes, 1.8 s here).
    emu = make_emu(model_load_s=2.5)
    init(emu, tmp_path, serving={"rollout_timeout_s": 20})
    applied = cli(emu, tmp_path, "apply", "-y")
    assert applied.exit_code == 0, applied.output
    assert "Apply complete!" in applied.output
    assert "Deployment stable-diffusion is waiting for a model" in applied.output
    assert "sdcluster upload-model" in applied.output

    model = make_demo_model(tmp_path / "model", shards=2, shard_bytes=4096)
    uploaded = cli(emu, tmp_path, "upload-model", str(model))
    assert uploaded.exit_code == 0, uploaded.output
    assert f"TF Serving serves version 1 of stable-diffusion at {endpoint(tmp_path)}" in uploaded.output
    assert served(endpoint(tmp_path), 1, within_s=0.5)  # it returned once the version was AVAILABLE
    assert tf_pod(emu).status.container_statuses[0].restart_count == 0  # the startup probe waited


# ---- 3. a version is published whole -----------------------------------------------------------------


def test_upload_model_publishes_a_version_whole_with_saved_model_pb_last(
    make_emu: Any, tmp_path: Path
) -> None:
    # TF Serving polls as often as the emulator ticks and gives up on a version after its 5 retries,
    # 0.12 s apart here: far less than the seconds these 18 MiB take to upload.
    emu = make_emu(tfserving_scale=0.002)
    init(emu, tmp_path, serving={"rollout_timeout_s": 20})
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    model = make_demo_model(tmp_path / "model", shards=3, shard_bytes=6 * 1024 * 1024)
    emu.log.clear()
    assert cli(emu, tmp_path, "upload-model", str(model)).exit_code == 0
    assert served(endpoint(tmp_path), 1)

    # TF Serving never met a half-written version: it did not give up on one, nor restart.
    pod = tf_pod(emu)
    log = k8s.CoreV1Api(kube(emu)).read_namespaced_pod_log(pod.metadata.name, "default")
    assert "exhausted max_num_load_retries" not in log and "No such file or directory" not in log
    assert pod.status.container_statuses[0].restart_count == 0
    # The version was assembled by server-side copies from the staging area, the graph last...
    copies = [
        e for e in emu.log.entries() if e.service == "storage" and "/copyTo/" in e.method and e.code == "OK"
    ]
    files = [p for p in model.rglob("*") if p.is_file()]
    assert len(copies) == len(files)
    assert all("/stable_diffusion_model/_staging/1/" in e.resource for e in copies)
    assert copies[-1].resource.endswith("/saved_model.pb")
    # ...and the staging area is cleaned up.
    names = [
        b.name for b in factory(emu).storage(PROJECT).list_blobs(BUCKET, prefix="stable_diffusion_model/")
    ]
    assert sorted(n.removeprefix("stable_diffusion_model/1/") for n in names) == sorted(
        p.relative_to(model).as_posix() for p in files
    )


# ---- 4. a failed update is a failure -----------------------------------------------------------------


def test_a_failed_update_exits_1_with_the_pods_reason_while_the_old_pod_serves(
    make_emu: Any, tmp_path: Path
) -> None:
    emu = make_emu()
    init(emu, tmp_path, serving={"rollout_timeout_s": 20})
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    cli(emu, tmp_path, "upload-model", str(make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024)))
    assert served(endpoint(tmp_path), 1)

    init(emu, tmp_path, serving={"rollout_timeout_s": 20, "image": "tensorflw/serving:2.11.0"})
    failed = cli(emu, tmp_path, "apply", "-y")
    assert failed.exit_code == 1
    assert "Apply complete!" not in failed.output
    assert "ErrImagePull" in failed.output or "ImagePullBackOff" in failed.output
    assert "serving.image" in failed.output  # the hint
    assert served(endpoint(tmp_path), 1, within_s=1)  # the old pod serves on
    replan = cli(emu, tmp_path, "plan", "--detailed-exitcode")
    assert replan.exit_code == 2  # the update is still to be made


# ---- 5. waiting for the autoscaler is not being stuck -------------------------------------------------


def test_a_pod_waiting_for_a_new_node_is_not_stuck_and_system_pods_count_in_capacity(
    make_emu: Any, tmp_path: Path
) -> None:
    # Two replicas of 3 CPU: one per n2-standard-4 node, so the second waits for the autoscaler,
    # longer than the grace period before a reason counts as final (a tenth of 5 s).
    emu = make_emu(autoscale_s=1.5)
    init(emu, tmp_path, serving={"replicas": 2, "rollout_timeout_s": 5})
    applied = cli(emu, tmp_path, "apply", "-y")
    assert applied.exit_code == 0, applied.output
    core = k8s.CoreV1Api(kube(emu))
    serving = [n for n in core.list_node().items if "sd-node-pool" in n.metadata.name]
    assert len(serving) == 2  # besides the system pool's node
    stale = [e for e in core.list_namespaced_event("default").items if e.reason == "FailedScheduling"]
    assert stale and "Insufficient cpu" in stale[0].message  # still listed: events live for an hour
    assert cli(emu, tmp_path, "plan", "--detailed-exitcode").exit_code == 0

    # Capacity counts what GKE runs on every node: 1.8 CPU does not fit an n2-standard-2 next to it.
    small = sdcluster.Config.build(
        project=PROJECT, user=USER, cluster={"machine_type": "n2-standard-2"}, serving={"cpu": "1.8"}
    )
    from sdcluster.gcp.resources.serving import capacity_warnings

    (warning,) = capacity_warnings(small)
    assert "serving.cpu = 1.8 exceeds what a n2-standard-2 node leaves to pods" in warning


# ---- 6. generate's 504, the impersonated token's email scope, the grace period on Spot ---------------


@pytest.mark.timeout(60)
def test_a_request_over_the_rest_timeout_is_said_as_such_and_gke_sees_gke_admin_by_email(
    make_emu: Any, tmp_path: Path
) -> None:
    emu = make_emu(predict_s_per_step=0.02)  # 5 steps: 100 ms of synthetic compute
    init(emu, tmp_path, serving={"rollout_timeout_s": 20, "rest_api_timeout_ms": 50})
    emu.log.clear()
    assert cli(emu, tmp_path, "apply", "-y").exit_code == 0
    writers = {e.caller for e in emu.log.entries() if e.service == "k8s" and e.mutating}
    assert writers == {f"serviceAccount:gke-admin@{PROJECT}.iam.gserviceaccount.com"}
    pod = tf_pod(emu)
    assert pod.spec.termination_grace_period_seconds <= 15  # what GKE gives ordinary pods on Spot preemption

    cli(emu, tmp_path, "upload-model", str(make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024)))
    out = tmp_path / "images"
    generated = cli(emu, tmp_path, "generate", "a cat", "--steps", "5", "--out", str(out))
    assert generated.exit_code == 1
    text = " ".join(generated.output.split())
    assert "longer than TF Serving's REST timeout (50 ms, serving.rest_api_timeout_ms)" in text
    assert "not still loading" in text
    for option in ("fewer steps", "--batch-size 1", "GPU", "serving.rest_api_timeout_ms"):
        assert option in text
