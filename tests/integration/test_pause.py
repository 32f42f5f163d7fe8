"""Pause and resume on the emulator: a paused cluster has no serving pod and (once the autoscaler
removed them) no serving node, costs less in status, is not drift for plan and apply, can be
destroyed; resume serves the model again; generate wakes a paused cluster unless --no-wake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sdcluster
from sdcluster import retry
from sdcluster.generate import generate
from sdcluster.ui.demo import make_demo_model

from .test_cost import cli
from .test_serving import kube_api, raw

KNOBS = {"scale_down_s": 0.3}


def deployment(emu: Any) -> dict[str, Any]:
    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(kube_api(emu))
    return raw(apps.read_namespaced_deployment("stable-diffusion", "default", _preload_content=False))


def serving_nodes(emu: Any) -> list[str]:
    from kubernetes import client as k8s

    nodes = k8s.CoreV1Api(kube_api(emu)).list_node().items
    return [n.metadata.name for n in nodes if "sd-node-pool" in n.metadata.name]


def until_serving_nodes(emu: Any, count: int) -> None:
    retry.until(
        lambda: True if len(serving_nodes(emu)) == count else None,
        timeout_s=30,
        what=f"{count} serving node(s)",
    )


def test_pause_scales_to_zero_lowers_the_rate_is_not_drift_and_resume_serves_again(
    setup: Any, tmp_path: Path
) -> None:
    emu, ws = setup(knobs=KNOBS)
    sdcluster.apply(sdcluster.plan(ws))
    sdcluster.upload_model(ws, make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024))
    running = sdcluster.status(ws)
    assert running["cost"]["nodes"] == 2 and len(serving_nodes(emu)) == 1  # serving + system
    endpoint = running["outputs"]["endpoint"]

    got = sdcluster.pause(ws)
    assert got["paused"].endswith("by sdcluster pause") and got["serving_nodes_kept"] == 0
    assert deployment(emu)["spec"]["replicas"] == 0
    until_serving_nodes(emu, 0)
    paused = sdcluster.status(ws)
    assert paused["deployment"]["paused"] == got["paused"]
    assert paused["cost"]["nodes"] == 1  # the system pool's node
    assert paused["cost"]["hourly_usd"] < running["cost"]["hourly_usd"]
    assert paused["outputs"]["endpoint"] == endpoint  # the address stays
    # Paused is not drift: plan changes nothing, says why, and apply keeps it paused.
    p = sdcluster.plan(ws)
    assert {c.action for c in p.changes} == {"noop"}, str(p)
    dep = next(c for c in p.changes if c.address == "k8s.deployment.default/stable-diffusion")
    assert "paused since" in dep.reason and "sdcluster resume" in dep.reason
    assert any("the cluster is paused" in w for w in p.warnings)
    emu.log.clear()
    sdcluster.apply(p)
    assert [e for e in emu.log.mutating() if e.service == "k8s"] == []
    assert sdcluster.pause(ws)["paused"] == got["paused"]  # pausing twice changes nothing

    resumed = sdcluster.resume(ws)
    assert resumed["ready"] == "1/1" and resumed["paused"] == ""
    assert len(serving_nodes(emu)) == 1
    result = generate(ws.config, "a cat", endpoint=endpoint, steps=2)
    assert len(result.images) == 1
    assert "sdcluster.dev/paused" not in (deployment(emu)["metadata"].get("annotations") or {})


def test_apply_of_a_change_keeps_a_paused_cluster_paused_and_destroy_works(setup: Any) -> None:
    emu, ws = setup(knobs=KNOBS)
    sdcluster.apply(sdcluster.plan(ws))
    sdcluster.pause(ws)
    _, changed = setup(knobs=KNOBS, serving={"rest_api_timeout_ms": 1000})
    changed = sdcluster.Workspace.open(changed.config, emulator=emu.address)
    p = sdcluster.plan(changed)
    dep = next(c for c in p.changes if c.address == "k8s.deployment.default/stable-diffusion")
    assert dep.action == "update" and any("stays paused" in w for w in dep.warnings)
    sdcluster.apply(p)
    live = deployment(emu)
    assert live["spec"]["replicas"] == 0 and "--rest_api_timeout_in_ms=1000" in str(live["spec"])
    until_serving_nodes(emu, 0)
    sdcluster.destroy(changed)
    assert sdcluster.status(changed)["cluster"] == {}


def test_generate_wakes_a_paused_cluster_and_no_wake_refuses(project: Any, tmp_path: Path) -> None:
    emu = project(**KNOBS)
    assert cli(["apply", "-y"]).exit_code == 0
    r = cli(["upload-model", str(make_demo_model(tmp_path / "model", shards=1, shard_bytes=1024))])
    assert r.exit_code == 0, r.output
    r = cli(["pause"])
    assert r.exit_code == 0, r.output
    assert "Paused (" in r.output and "sdcluster resume" in r.output
    r = cli(["status"])
    assert "Paused: since " in r.output
    r = cli(["generate", "a cat", "--steps", "2", "--out", str(tmp_path / "img"), "--no-wake"])
    assert r.exit_code == 1
    assert "the cluster is paused" in r.output and "Hint: resume it first: sdcluster resume" in r.output
    assert deployment(emu)["spec"]["replicas"] == 0
    r = cli(["generate", "a cat", "--steps", "2", "--out", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert "The cluster is paused (" in r.output and "resuming it first; usually a few minutes" in r.output
    assert "1 image(s)" in r.output
    # The next wake-up says how long the last one took here.
    assert cli(["pause"]).exit_code == 0
    r = cli(["generate", "a cat", "--steps", "2", "--out", str(tmp_path / "img")])
    assert r.exit_code == 0, r.output
    assert "the last resume of this cluster took " in r.output


def kube_dns_nodes(emu: Any) -> set[str]:
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(kube_api(emu))
    pods = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    return {p.spec.node_name or "" for p in pods}


def serving_pods(emu: Any) -> list[Any]:
    from kubernetes import client as k8s

    return list(
        k8s.CoreV1Api(kube_api(emu))
        .list_namespaced_pod("default", label_selector="app=stable-diffusion")
        .items
    )


def placed_kube_dns(emu: Any) -> Any:
    """A probe: the nodes of the two kube-dns pods once both are placed again (None before)."""

    def probe() -> set[str] | None:
        from kubernetes import client as k8s

        core = k8s.CoreV1Api(kube_api(emu))
        pods = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
        nodes = [p.spec.node_name for p in pods]
        return set(nodes) if len(nodes) == 2 and all(nodes) else None

    return probe


def delete_kube_dns(emu: Any) -> None:
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(kube_api(emu))
    for p in core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items:
        core.delete_namespaced_pod(p.metadata.name, "kube-system")


def test_the_serving_pool_is_tainted_so_gke_pods_leave_it_and_an_untainted_one_is_fixed_and_said(
    project: Any, tmp_path: Path
) -> None:
    """GKE's kube-dns runs wherever it is admitted and keeps its node up: on an untainted serving
    pool (a cluster made before the taint) pause cannot reach zero nodes, and says what to do."""
    from google.cloud import container_v1 as gke

    from ..helpers import factory
    from .test_serving import KEY

    emu = project(scale_down_s=5.0)  # an empty serving node lives 5 s: time to place kube-dns on it
    assert cli(["apply", "-y"]).exit_code == 0
    system = {n for n in kube_dns_nodes(emu) if "sd-system-pool" in n}
    assert kube_dns_nodes(emu) == system and len(system) == 1  # both kube-dns pods on the system node

    # As a cluster an earlier sdcluster made: no taint, and kube-dns placed on the serving node.
    manager = factory(emu).cluster_manager()
    pool = manager.get_node_pool(name=f"{KEY}/nodePools/sd-node-pool")
    assert [(t.key, t.value, t.effect.name) for t in pool.config.taints] == [
        ("sdcluster.dev/serving", "true", "NO_SCHEDULE")
    ]
    manager.update_node_pool(
        request=gke.UpdateNodePoolRequest(
            name=f"{KEY}/nodePools/sd-node-pool",
            node_version=pool.version,
            image_type=pool.config.image_type,
            taints=gke.NodeTaints(taints=[]),
        )
    )
    # Paused, the serving node is empty, so it has the most room: a kube-dns placed now goes there.
    assert cli(["pause"]).exit_code == 0
    retry.until(lambda: True if not serving_pods(emu) else None, timeout_s=30, what="no serving pod")
    delete_kube_dns(emu)
    placed = retry.until(placed_kube_dns(emu), timeout_s=10, what="kube-dns placed again")
    assert any("sd-node-pool" in n for n in placed), placed
    r = cli(["pause"])
    assert r.exit_code == 0, r.output
    assert "keeps its serving node up" in r.output and "run sdcluster apply" in r.output, r.output

    # apply puts the taint back in place (an update of the pool, not a new pool).
    r = cli(["plan"])
    assert "gke.node_pool.sd-node-pool will be updated in-place" in r.output, r.output
    assert '+ "sdcluster.dev/serving=true:NoSchedule"' in r.output, r.output
    emu.log.clear()
    assert cli(["apply", "-y"]).exit_code == 0
    assert [e.method for e in emu.log.mutating() if e.service == "container"] == ["UpdateNodePool"]
    # Pausing again names the pods to delete; deleted, they come back on the system pool.
    r = cli(["pause"])
    assert "kubectl -n kube-system delete pod kube-dns-" in r.output, r.output
    delete_kube_dns(emu)
    until_serving_nodes(emu, 0)
    retry.until(
        lambda: True if all("sd-system-pool" in n for n in kube_dns_nodes(emu) or {""}) else None,
        timeout_s=10,
        what="kube-dns on the system pool",
    )
