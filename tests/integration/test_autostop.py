"""Autostop on the emulator: with serving.idle_stop_minutes the cluster pauses itself, from inside
(the CronJob runs sdcluster's shipped script against the emulated API with its own service-account
token, no sdcluster process involved), only when no predict request came; the Role lets the script
do nothing else; TF Serving's Prometheus endpoint counts the predicts."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s

import sdcluster
from sdcluster import retry
from sdcluster.emulator import kuberbac
from sdcluster.gcp.resources import autostop, serving
from sdcluster.ui.demo import make_demo_model

from .test_pause import deployment, serving_nodes
from .test_serving import KEY

MINUTE_S = 0.5  # one emulated cron minute
IDLE_MINUTES = 3
KNOBS = {"scale_down_s": 0.3, "cron_minute_s": MINUTE_S}
METRICS = "/monitoring/prometheus/metrics"


def applied(setup: Any, tmp_path: Path) -> tuple[Any, Any, str]:
    emu, ws = setup(knobs=KNOBS, serving={"idle_stop_minutes": IDLE_MINUTES})
    sdcluster.apply(sdcluster.plan(ws))
    sdcluster.upload_model(ws, make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024))
    return emu, ws, str(sdcluster.status(ws)["outputs"]["endpoint"])


def runs(emu: Any) -> list[dict[str, Any]]:
    with emu.world.lock:
        kept = emu.world.data["kube"][KEY].get("cron_runs", {}).get("default/sdcluster-autostop", [])
        return [dict(r) for r in kept]


def finished(emu: Any) -> int:
    """How many runs of the CronJob have finished so far."""
    with emu.world.lock:
        return int(
            emu.world.data["kube"][KEY]
            .get("cron", {})
            .get("default/sdcluster-autostop", {})
            .get("finished", 0)
        )


def paused_note(emu: Any) -> str:
    """The autostop's note, in its own ConfigMap (it may not annotate the Deployment)."""
    with emu.world.lock:
        cms = emu.world.data["kube"][KEY]["objects"]["configmaps"]
        return str((cms.get(f"default/{serving.AUTOSTOP_STATE}", {}).get("data") or {}).get("paused") or "")


def predict(endpoint: str) -> None:
    body = {
        "instances": [
            {"tokens": [0] * 77, "negative_prompt_tokens": [0] * 77, "num_steps": 1, "batch_size": 1}
        ]
    }
    r = requests.post(f"{endpoint}:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text


def test_an_idle_cluster_pauses_itself_with_no_sdcluster_process(setup: Any, tmp_path: Path) -> None:
    emu, ws, _ = applied(setup, tmp_path)
    # Nothing of sdcluster runs from here on: only the emulator (its CronJob runs the shipped script).
    retry.until(lambda: paused_note(emu) or None, timeout_s=60, what="the cluster to pause itself")
    assert re.fullmatch(rf"\S+Z by autostop after {IDLE_MINUTES} idle minute\(s\)", paused_note(emu))
    assert deployment(emu)["spec"]["replicas"] == 0
    retry.until(lambda: True if not serving_nodes(emu) else None, timeout_s=30, what="no serving node")
    outputs = [r["output"] for r in runs(emu)]
    assert all(r["code"] == 0 for r in runs(emu)), outputs
    assert any("idle for" in o for o in outputs) and any("autostop: paused: " in o for o in outputs)
    # The laptop sees the same pause as `sdcluster pause` makes: not drift, resumable.
    p = sdcluster.plan(ws)
    assert {c.action for c in p.changes} == {"noop"}, str(p)
    assert sdcluster.status(ws)["deployment"]["paused"] == paused_note(emu)
    assert sdcluster.resume(ws)["ready"] == "1/1"
    assert paused_note(emu) == "" and deployment(emu)["spec"]["replicas"] == 1


def test_a_cluster_that_gets_requests_stays_up_and_pauses_once_they_stop(setup: Any, tmp_path: Path) -> None:
    emu, _, endpoint = applied(setup, tmp_path)
    before = finished(emu)
    # Requests more often than the idle limit, for more checks than it takes to go idle.
    while finished(emu) < before + 2 * IDLE_MINUTES + 2:
        predict(endpoint)
        assert paused_note(emu) == "", [r["output"] for r in runs(emu)]
        time.sleep(MINUTE_S / 4)
    assert deployment(emu)["spec"]["replicas"] == 1
    assert any("idle clock restarted" in r["output"] for r in runs(emu))
    retry.until(lambda: paused_note(emu) or None, timeout_s=60, what="the pause once requests stopped")


def test_tf_serving_counts_predicts_on_its_prometheus_endpoint(setup: Any, tmp_path: Path) -> None:
    emu, _, endpoint = applied(setup, tmp_path)
    base = endpoint.split("/v1/", 1)[0]
    assert f"--monitoring_config_file=/etc/tfserving/{serving.MONITORING_FILE}" in str(
        deployment(emu)["spec"]
    )

    def predicts() -> int:
        text = requests.get(base + METRICS, timeout=10).text
        m = re.search(
            r'^:tensorflow:serving:request_latency_count\{model_name="stable-diffusion",API="predict",'
            r'entrypoint="REST"\} (\d+)$',
            text,
            re.M,
        )
        assert ":tensorflow:serving:request_count{" in text  # every REST request, probes included
        return int(m.group(1)) if m else 0

    first = predicts()
    predict(endpoint)
    predict(endpoint)
    assert predicts() == first + 2


@pytest.fixture
def autostop_token(setup: Any, tmp_path: Path) -> tuple[Any, k8s.ApiClient]:
    """The cluster with autostop applied, and a client holding the autostop service account's token
    (as the emulator hands it to the CronJob's pod)."""
    emu, ws = setup(knobs={**KNOBS, "cron_minute_s": 3600.0}, serving={"idle_stop_minutes": IDLE_MINUTES})
    sdcluster.apply(sdcluster.plan(ws))
    with emu.world.lock:
        rec = emu.world.data["kube"][KEY]
        token = kuberbac.mint(rec, "default", autostop.NAME)
        endpoint, ca = rec["endpoint"], rec["ca_cert"]
    ca_file = Path(tempfile.mkdtemp()) / "ca.crt"
    ca_file.write_text(ca)
    conf = k8s.Configuration(host=f"https://{endpoint}")
    conf.api_key = {"authorization": f"Bearer {token}"}
    conf.ssl_ca_cert = str(ca_file)
    return emu, k8s.ApiClient(conf)


def test_the_role_lets_the_script_touch_its_deployment_and_nothing_else(autostop_token: Any) -> None:
    _, api = autostop_token
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    # What the script does: read the Deployment, keep its clock in its ConfigMap, scale it.
    assert apps.read_namespaced_deployment("stable-diffusion", "default").metadata.name == "stable-diffusion"
    core.patch_namespaced_config_map(serving.AUTOSTOP_STATE, "default", {"data": {"since": "1"}})
    apps.patch_namespaced_deployment_scale("stable-diffusion", "default", {"spec": {"replicas": 1}})
    live = json.loads(
        apps.read_namespaced_deployment("stable-diffusion", "default", _preload_content=False).data
    )
    another = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": live["spec"]}
    template = {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}}}
    refused = [
        # Not the Deployment itself: a new pod template would run anything as tf-serving.
        lambda: apps.patch_namespaced_deployment("stable-diffusion", "default", template),
        lambda: apps.patch_namespaced_deployment(
            "stable-diffusion", "default", {"metadata": {"annotations": {"a": "b"}}}
        ),
        lambda: core.patch_namespaced_config_map(autostop.NAME, "default", {"data": {"autostop.py": ""}}),
        lambda: apps.delete_namespaced_deployment("stable-diffusion", "default"),
        lambda: apps.list_namespaced_deployment("default"),
        lambda: apps.create_namespaced_deployment("default", another),
        lambda: core.list_namespaced_secret("default"),
        lambda: core.read_namespaced_config_map("tfserving-configs", "default"),
        lambda: k8s.RbacAuthorizationV1Api(api).patch_namespaced_role(
            autostop.NAME, "default", {"rules": []}
        ),
    ]
    for call in refused:
        with pytest.raises(k8s.ApiException) as info:
            call()
        assert info.value.status == 403
        message = json.loads(info.value.body)["message"]
        assert 'User "system:serviceaccount:default:sdcluster-autostop" cannot' in message


def test_the_configmap_carries_the_shipped_script_and_its_names_match_sdclusters(
    autostop_token: Any,
) -> None:
    emu, _ = autostop_token
    with emu.world.lock:
        cm = emu.world.data["kube"][KEY]["objects"]["configmaps"]["default/sdcluster-autostop"]
    shipped = Path(sdcluster.__file__).parent / "data" / "autostop.py"
    assert cm["data"]["autostop.py"] == shipped.read_text(encoding="utf-8")
    text = shipped.read_text(encoding="utf-8")
    # The script cannot import sdcluster: the annotation names it writes must be sdcluster's own.
    assert f'PAUSED = "{serving.PAUSED}"' in text and f'default="{serving.AUTOSTOP_STATE}"' in text
    assert f'"{serving.METRICS_PATH}"' in text
