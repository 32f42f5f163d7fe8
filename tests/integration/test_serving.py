"""TF Serving on the emulated cluster: server-side apply, drift by field manager, rollout failures,
destroy ordering, and the endpoint answering like TF Serving."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client as k8s

import sdcluster
from sdcluster.errors import ApplyError, RolloutStuck
from sdcluster.gcp.resources import rollout, serving
from sdcluster.ui.demo import make_demo_model

from ..helpers import factory

PROJECT = "demo-proj"
USER = "user:demo@example.com"
KEY = f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster"


def kube_api(emu: Any) -> Any:
    cluster = factory(emu).cluster_manager().get_cluster(name=KEY)
    clients = factory(emu)
    return clients.kubernetes(
        cluster.endpoint, cluster.master_auth.cluster_ca_certificate, clients.user_credentials()
    )


def raw(resp: Any) -> dict[str, Any]:
    return json.loads(resp.data)  # type: ignore[no-any-return]


def test_apply_creates_valid_objects_noop_replan_and_a_working_endpoint(setup: Any, tmp_path: Path) -> None:
    emu, ws = setup(serving={"batching": True, "autoscaling": True})
    state = sdcluster.apply(sdcluster.plan(ws))
    assert state.resources["k8s.deployment.default/stable-diffusion"].attributes["model"] == "none"
    # Once the cluster's operation ended: one GetCluster (the cluster's own), whose endpoint, CA and
    # node pools the rest use; one write per object, no read of it before (the plan saw none) nor
    # after (the write's answer is the object), but for the waits of the Deployment and Service.
    log = emu.log.entries()
    ended = max(e.time for e in log if e.method == "GetOperation")
    after = [e for e in log if e.time > ended]
    assert [e.method for e in after if e.service == "container"] == ["GetCluster"], after
    for path in ("configmaps/tfserving-configs", "serviceaccounts/tf-serving", "horizontalpodautoscalers/"):
        assert [e.method for e in after if e.service == "k8s" and path in e.resource] == ["PATCH"], path
    deployment = [e.method for e in after if e.resource.endswith("deployments/stable-diffusion")]
    assert deployment[0] == "PATCH", deployment
    published = sdcluster.upload_model(ws, make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024))
    assert published.served == f"version 1 of stable-diffusion at {state.outputs['endpoint']}"
    api = kube_api(emu)
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    dep = raw(apps.read_namespaced_deployment("stable-diffusion", "default", _preload_content=False))
    svc = raw(core.read_namespaced_service("stable-diffusion", "default", _preload_content=False))
    cm = raw(core.read_namespaced_config_map("tfserving-configs", "default", _preload_content=False))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "tensorflow/serving:2.11.0"
    assert "--model_name=stable-diffusion" in container["args"]
    assert f"--model_base_path=gs://{PROJECT}-bucket/stable_diffusion_model" in container["args"]
    assert "--enable_batching" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/stable-diffusion/metadata"
    assert container["resources"]["requests"] == {"cpu": "3", "memory": "12Gi"}
    assert dep["status"]["readyReplicas"] == 1
    assert svc["spec"]["type"] == "LoadBalancer" and {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
    assert "batching_parameters.txt" in cm["data"]
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "sdcluster" in managers
    # Every object we send, and every object the server stores, passes the upstream schemas.
    for manifest in (
        serving.configmap_manifest(ws.config),
        serving.service_account_manifest(ws.config),
        serving.deployment_manifest(ws.config),
        serving.service_manifest(ws.config),
        serving.hpa_manifest(ws.config),
        dep,
        svc,
        cm,
    ):
        kubernetes_validate.validate(manifest, "1.30", strict=True)
    ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert state.outputs["endpoint"] == f"http://{ip}:8501/v1/models/stable-diffusion"
    with urllib.request.urlopen(state.outputs["endpoint"], timeout=10) as r:
        status = json.loads(r.read())
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    emu.log.clear()
    again = sdcluster.plan(ws)
    assert {c.action for c in again.changes} == {"noop"}, str(again)
    sdcluster.apply(again)
    assert [e for e in emu.log.mutating() if e.service == "k8s"] == []


def test_a_rollout_wait_follows_watches_and_polls_only_as_their_backup(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    ctx = ws.stack.context(None)
    deployment = serving.Deployment(ws.config, serving.deployment_manifest(ws.config), ())
    with rollout.watching(ctx, deployment, "deployment", "pods") as wake:
        for _ in range(3000):  # a hang guard: the watches connect in milliseconds
            if wake.watched:
                break
            threading.Event().wait(0.01)
        assert wake.watched
        assert wake.is_set()  # connected: look once (a change before the watch began is no event of it)
        wake.clear()
        patch = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
        k8s.AppsV1Api(kube_api(emu)).patch_namespaced_deployment("stable-diffusion", "default", patch)
        assert wake.wait(30)  # the change arrives as an event, not at the next poll


def test_other_managers_fields_are_not_drift_ours_are_and_apply_restores(setup: Any) -> None:
    emu, ws = setup()
    sdcluster.apply(sdcluster.plan(ws))
    apps = k8s.AppsV1Api(kube_api(emu))
    # Another manager sets a field sdcluster does not manage: not drift.
    apps.patch_namespaced_deployment(
        "stable-diffusion",
        "default",
        {"spec": {"revisionHistoryLimit": 3}, "metadata": {"annotations": {"team": "ml"}}},
        field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )
    assert {c.action for c in sdcluster.plan(ws).changes} == {"noop"}
    # ...and one of ours changed out of band (kubectl scale): drift, shown attribute by attribute.
    apps.patch_namespaced_deployment(
        "stable-diffusion",
        "default",
        {"spec": {"replicas": 2}},
        field_manager="kubectl-scale",
        _content_type="application/merge-patch+json",
    )
    p = sdcluster.plan(ws)
    dep = next(c for c in p.changes if c.address == "k8s.deployment.default/stable-diffusion")
    assert dep.action == "update"
    assert [(d.path, d.before, d.after) for d in dep.diffs] == [("spec.replicas", 2, 1)]
    sdcluster.apply(p)
    live = raw(apps.read_namespaced_deployment("stable-diffusion", "default", _preload_content=False))
    assert live["spec"]["replicas"] == 1 and live["spec"]["revisionHistoryLimit"] == 3
    assert live["metadata"]["annotations"]["team"] == "ml"


def test_stuck_rollout_names_the_reason(setup: Any) -> None:
    _emu, ws = setup(serving={"cpu": "8", "rollout_timeout_s": 20})
    p = sdcluster.plan(ws)
    assert any("never be scheduled" in w for w in p.warnings)
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(p)
    assert err.value.address == "k8s.deployment.default/stable-diffusion"
    assert isinstance(err.value.cause, RolloutStuck)
    assert "Insufficient cpu" in str(err.value) and "serving.cpu" in err.value.hint


def test_bad_image_rollout_names_image_pull(setup: Any) -> None:
    _emu, ws = setup(serving={"image": "example.invalid/nope/serving:1", "rollout_timeout_s": 20})
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(sdcluster.plan(ws))
    assert "ImagePull" in str(err.value) or "ErrImagePull" in str(err.value)
    assert "serving.image" in err.value.hint


def test_destroy_deletes_the_service_and_waits_before_deleting_the_cluster(setup: Any) -> None:
    emu, ws = setup(knobs={"lb_s": 0.5})
    sdcluster.apply(sdcluster.plan(ws))
    emu.log.clear()
    sdcluster.destroy(ws)
    log = emu.log.entries()
    svc_path = "/api/v1/namespaces/default/services/stable-diffusion"
    delete_svc = next(i for i, e in enumerate(log) if e.method == "DELETE" and e.resource.endswith(svc_path))
    gone = next(
        i
        for i, e in enumerate(log)
        if i > delete_svc
        and e.method == "GET"
        and e.resource.endswith(svc_path)
        and e.code in ("NOT_FOUND", "404")
    )
    still_there = [
        e
        for e in log[delete_svc + 1 : gone]
        if e.method == "GET" and e.resource.endswith(svc_path) and e.code == "OK"
    ]
    delete_cluster = next(i for i, e in enumerate(log) if e.method == "DeleteCluster")
    assert delete_svc < gone < delete_cluster
    assert still_there  # the Service lingered while its load balancer was released, and we waited


def test_custom_namespace_and_kubeconfig_without_token(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sdcluster.ui.cli import app

    emu, ws = setup(serving={"namespace": "diffusion"})
    sdcluster.apply(sdcluster.plan(ws))
    core = k8s.CoreV1Api(kube_api(emu))
    ns = raw(core.read_namespace("diffusion", _preload_content=False))
    assert ns["metadata"]["name"] == "diffusion"
    svc = raw(core.read_namespaced_service("stable-diffusion", "diffusion", _preload_content=False))
    assert svc["spec"]["type"] == "LoadBalancer"
    # kubeconfig for kubectl users: the GKE auth plugin, the cluster CA, and never a token.
    (tmp_path / "sdcluster.toml").write_text('project = "demo-proj"\nuser = "user:demo@example.com"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "kube" / "config"
    r = CliRunner().invoke(app, ["--emulator", emu.address, "kubeconfig", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    cluster = factory(emu).cluster_manager().get_cluster(name=KEY)
    assert doc["clusters"][0]["cluster"]["server"] == f"https://{cluster.endpoint}"
    assert (
        doc["clusters"][0]["cluster"]["certificate-authority-data"]
        == cluster.master_auth.cluster_ca_certificate
    )
    assert doc["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert "emulator:" not in out.read_text() and "token" not in out.read_text()
    emu.log.clear()
    sdcluster.destroy(ws)
    log = emu.log.entries()
    ns_delete = [
        i for i, e in enumerate(log) if e.method == "DELETE" and e.resource.endswith("/namespaces/diffusion")
    ]
    cluster_delete = [i for i, e in enumerate(log) if e.method == "DeleteCluster"]
    assert ns_delete and cluster_delete and ns_delete[0] < cluster_delete[0]
