"""Load balancers that must not outlive their cluster. On the emulator, as on GKE, each LoadBalancer
Service owns a forwarding rule in Compute Engine that survives the cluster's deletion unless the
Service went first; sdcluster deletes its Services and waits for their rules (read through Compute)
before any cluster delete or replace, and records a Service as soon as it is applied."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s

import sdcluster
from sdcluster.errors import ApplyError, WaitTimeout

from ..helpers import SDCLUSTER_APIS, factory

PROJECT = "demo-proj"
REGION = "us-central1"
KEY = f"projects/{PROJECT}/locations/us-central1-c/clusters/sd-cluster"
SERVICE = "k8s.service.default/stable-diffusion"
APIS = {"enabled_services": SDCLUSTER_APIS}


def rules(emu: Any) -> list[Any]:
    """The project's forwarding rules in the region, through google-cloud-compute."""
    return list(factory(emu).compute("forwarding_rules").list(project=PROJECT, region=REGION))


def service(emu: Any, key: str = KEY) -> dict[str, Any]:
    cluster = factory(emu).cluster_manager().get_cluster(name=key)
    f = factory(emu)
    api = f.kubernetes(cluster.endpoint, cluster.master_auth.cluster_ca_certificate, f.user_credentials())
    raw = k8s.CoreV1Api(api).read_namespaced_service("stable-diffusion", "default", _preload_content=False)
    return json.loads(raw.data)  # type: ignore[no-any-return]


def set_status(emu: Any, status: str, key: str = KEY) -> None:
    """What GKE does on its own: a cluster turns DEGRADED or ERROR (its Services keep running)."""
    with emu.world.lock:
        emu.world.data["container"]["clusters"][key]["status"] = status


def test_each_load_balancer_service_owns_a_forwarding_rule(setup: Any) -> None:
    emu, ws = setup(knobs=APIS)
    sdcluster.apply(sdcluster.plan(ws))
    svc = service(emu)
    (rule,) = rules(emu)
    assert rule.name == ("a" + svc["metadata"]["uid"].replace("-", ""))[:32]
    assert rule.I_p_address == svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert json.loads(rule.description)["kubernetes.io/service-name"] == "default/stable-diffusion"
    sdcluster.destroy(ws)
    assert rules(emu) == []


def test_a_zone_change_deletes_the_old_clusters_load_balancer_before_the_cluster(setup: Any) -> None:
    emu, ws = setup(knobs=APIS)
    sdcluster.apply(sdcluster.plan(ws))
    (old,) = rules(emu)
    moved = ws.config.model_copy(
        update={"cluster": ws.config.cluster.model_copy(update={"zone": "us-central1-a"})}
    )
    ws2 = sdcluster.Workspace.open(moved, state=ws.backend, emulator=emu.address)
    sdcluster.apply(sdcluster.plan(ws2))
    (new,) = rules(emu)  # the old cluster's rule went with its Service, not left billing
    assert new.name != old.name
    assert (
        new.name == ("a" + service(emu, KEY.replace("-c/", "-a/"))["metadata"]["uid"].replace("-", ""))[:32]
    )


def test_an_error_cluster_is_replaced_without_leaving_its_load_balancer(setup: Any) -> None:
    emu, ws = setup(knobs=APIS)
    sdcluster.apply(sdcluster.plan(ws))
    (old,) = rules(emu)
    set_status(emu, "ERROR")
    plan = sdcluster.plan(ws)
    assert {c.address: c.action for c in plan.changes}["gke.cluster.sd-cluster"] == "replace"
    sdcluster.apply(plan)
    (new,) = rules(emu)
    assert new.name != old.name


def test_a_degraded_clusters_services_are_still_seen_and_deleted(setup: Any) -> None:
    emu, ws = setup(knobs=APIS)
    sdcluster.apply(sdcluster.plan(ws))
    set_status(emu, "DEGRADED")
    actions = {c.address: c.action for c in sdcluster.plan(ws).changes}
    assert actions[SERVICE] == "noop"  # reached: not taken for gone (nor planned again)
    sdcluster.destroy(ws)
    assert rules(emu) == []


def test_a_service_whose_load_balancer_did_not_come_is_recorded_and_destroyed(setup: Any) -> None:
    # The load balancer takes 2 s; apply waits 0.5 s for it.
    emu, ws = setup(knobs={**APIS, "lb_s": 2.0}, serving={"lb_timeout_s": 0.5})
    with pytest.raises(ApplyError) as err:
        sdcluster.apply(sdcluster.plan(ws))
    assert err.value.address == SERVICE and isinstance(err.value.cause, WaitTimeout)
    saved = ws.backend.read()
    assert saved is not None and SERVICE in saved.resources  # recorded as soon as it was applied
    patient = ws.config.model_copy(
        update={"serving": ws.config.serving.model_copy(update={"lb_timeout_s": 60})}
    )
    sdcluster.destroy(sdcluster.Workspace.open(patient, state=ws.backend, emulator=emu.address))
    assert rules(emu) == []
    assert (
        list(factory(emu).cluster_manager().list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters)
        == []
    )
