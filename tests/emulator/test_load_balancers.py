"""The service controller of an emulated cluster: each LoadBalancer Service gets a forwarding rule (and
its address) in the project's Compute Engine; deleting the Service releases it, deleting the cluster
does not (GKE: https://cloud.google.com/kubernetes-engine/docs/how-to/deleting-a-cluster). Through
the official Kubernetes client and google-cloud-compute."""

from __future__ import annotations

import json
import time
from typing import Any

from google.cloud import compute_v1
from kubernetes import client as k8s

from ..helpers import factory
from .test_compute import OWNER, PROJECT, REGION, ZONE, clients, emu_wait, pool, run_cluster


def core_api(emu: Any, key: str) -> k8s.CoreV1Api:
    cluster = factory(emu, OWNER).cluster_manager().get_cluster(name=key)
    f = factory(emu, OWNER)
    api = f.kubernetes(cluster.endpoint, cluster.master_auth.cluster_ca_certificate, f.user_credentials())
    return k8s.CoreV1Api(api)


def load_balancer(core: k8s.CoreV1Api, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]},
    }
    core.create_namespaced_service("default", body)
    deadline = time.monotonic() + 10
    while True:
        svc = json.loads(core.read_namespaced_service(name, "default", _preload_content=False).data)
        if (svc.get("status", {}).get("loadBalancer") or {}).get("ingress"):
            return svc  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "no load balancer"
        time.sleep(0.05)


def rules(emu: Any) -> list[compute_v1.ForwardingRule]:
    return list(clients(emu).forwarding_rules.list(project=PROJECT, region=REGION))


def test_a_services_forwarding_rule_goes_with_the_service_not_with_the_cluster(emu: Any) -> None:
    key = run_cluster(emu, "lb", ZONE, [pool("p", "e2-medium")])
    core = core_api(emu, key)
    released = load_balancer(core, "released")
    kept = load_balancer(core, "kept")
    by_name = {r.name: r for r in rules(emu)}
    for svc in (released, kept):
        rule = by_name[("a" + svc["metadata"]["uid"].replace("-", ""))[:32]]
        assert rule.I_p_address == svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        assert (
            json.loads(rule.description)["kubernetes.io/service-name"] == f"default/{svc['metadata']['name']}"
        )

    core.delete_namespaced_service("released", "default")  # its load balancer is released ...
    deadline = time.monotonic() + 10
    while len(rules(emu)) != 1:
        assert time.monotonic() < deadline, "the rule of a deleted Service stayed"
        time.sleep(0.05)

    gke = factory(emu, OWNER).cluster_manager()  # ... the cluster's deletion releases nothing
    op = gke.delete_cluster(name=key)
    emu_wait(emu, gke, f"projects/{PROJECT}/locations/{ZONE}/operations/{op.name}")
    (left,) = rules(emu)
    assert left.name == ("a" + kept["metadata"]["uid"].replace("-", ""))[:32]
    in_use = {q.metric: q.usage for q in clients(emu).regions.get(project=PROJECT, region=REGION).quotas}
    assert in_use["IN_USE_ADDRESSES"] == 1.0  # and its address still counts against the quota
