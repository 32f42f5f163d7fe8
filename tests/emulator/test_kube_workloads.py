"""What runs on the emulated cluster: TF Serving reading its model as the pod's identity and starting
like TF Serving 2.11, probes, rolling updates, ServiceAccounts, the cluster autoscaler, system pods
and events that outlive their cause. Driven with the official ``kubernetes`` client.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ..helpers import factory
from .kube_helpers import (
    APPLY,
    KEY,
    MODEL,
    MODEL_PATH,
    POOL,
    api_client,
    apply_deployment,
    available,
    deployment,
    get_json,
    grant_reader,
    ksa_principal,
    log_of,
    model_bucket,
    node_account,
    pods_of,
    tf_deployment,
    upload_version,
    wait_for,
)

GKE_METADATA_POOL = {**POOL, "workload_metadata": "GKE_METADATA"}
LB = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "tf-serving"},
    "spec": {
        "type": "LoadBalancer",
        "selector": {"app": "tf-serving"},
        "ports": [{"port": 8501, "targetPort": 8501}],
    },
}


def start(emu: Any, *pools: dict[str, Any]) -> k8s.ApiClient:
    """A cluster started on the hub directly (as GKE's CreateCluster does once its operation ends)."""
    if any(p.get("workload_metadata") == "GKE_METADATA" for p in pools):
        emu.world.add_workload_pool(
            "demo-proj.svc.id.goog"
        )  # what GKE's cluster with Workload Identity makes
    endpoint, ca_pem = emu.world.kube.start_cluster(KEY, list(pools) or [POOL])
    return api_client(emu, endpoint, ca_pem)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def the_pod(core: k8s.CoreV1Api) -> Any:
    return wait_for(lambda: (pods_of(core) or [None])[0])


def log_has(core: k8s.CoreV1Api, text: str, **kw: Any) -> str | None:
    """The log of the (one) TF Serving pod once ``text`` shows in it."""
    for pod in pods_of(core):
        try:
            log = log_of(core, pod, **kw)
        except ApiException:
            continue
        if text in log:
            return log
    return None


def events(core: k8s.CoreV1Api, reason: str, ns: str = "default") -> list[Any]:
    return [e for e in core.list_namespaced_event(ns).items if e.reason == reason]


def ingress_ip(core: k8s.CoreV1Api) -> str:
    def ip() -> str | None:
        ingress = core.read_namespaced_service("tf-serving", "default").status.load_balancer.ingress
        return ingress[0].ip if ingress else None

    return str(wait_for(ip))


# ---- TF Serving reads its model as the pod's identity ------------------------------------------------


def test_on_gke_metadata_nodes_tf_serving_reads_as_its_ksa_principal_and_a_403_keeps_it_unready(
    make_emu: Any,
) -> None:
    emu = make_emu()
    api = start(emu, GKE_METADATA_POOL)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    upload_version(emu, 1)
    grant_reader(emu, node_account(emu))  # the node's grant is not the pod's
    core.create_namespaced_service_account("default", {"metadata": {"name": "tf-serving"}})
    apply_deployment(apps, tf_deployment(sa="tf-serving"))

    denied = wait_for(lambda: log_has(core, "HTTP response code 403"))
    assert (
        f"Could not find base path {MODEL_PATH} for servable {MODEL} with error PERMISSION_DENIED" in denied
    )
    assert f"{ksa_principal(emu, 'tf-serving')} does not have storage.objects.list access" in denied
    assert not ready(the_pod(core)) and not available(apps, "tf-serving")

    grant_reader(emu, ksa_principal(emu, "tf-serving"))
    wait_for(lambda: available(apps, "tf-serving"))
    assert f"Successfully loaded servable version {{name: {MODEL} version: 1}}" in log_of(core, the_pod(core))
    callers = {
        e.caller
        for e in emu.log.entries()
        if e.service == "storage" and "stable_diffusion_model" in e.resource
    }
    assert ksa_principal(emu, "tf-serving") in callers


def test_elsewhere_pods_act_as_the_node_service_account_within_the_pools_scopes(make_emu: Any) -> None:
    emu = make_emu()
    logging_only = {**POOL, "oauth_scopes": ["https://www.googleapis.com/auth/logging.write"]}
    api = start(emu, logging_only)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    upload_version(emu, 1)
    grant_reader(emu, node_account(emu))
    apply_deployment(apps, tf_deployment())
    refused = wait_for(lambda: log_has(core, "HTTP response code 403"))
    assert "Provided scope(s) are not authorized" in refused

    # With a storage scope on the pool, the pod made after it (a restart by hand) reads the model.
    emu.world.kube.update_nodes(
        KEY, [{**POOL, "oauth_scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}]
    )
    core.delete_namespaced_pod(the_pod(core).metadata.name, "default")
    wait_for(lambda: available(apps, "tf-serving"))


# ---- TF Serving 2.11's start-up, polling and load retries --------------------------------------------


def test_nothing_listens_until_a_version_loads_then_the_highest_serves_and_new_ones_are_polled(
    make_emu: Any,
) -> None:
    emu = make_emu()
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    model_bucket(emu).blob("stable_diffusion_model/README").upload_from_string(
        b"versions go in numbered dirs"
    )
    grant_reader(emu, node_account(emu))
    apply_deployment(apps, tf_deployment())
    core.patch_namespaced_service("tf-serving", "default", LB, field_manager="t", _content_type=APPLY)
    ip = ingress_ip(core)
    assert wait_for(
        lambda: log_has(core, f"No versions of servable {MODEL} found under base path {MODEL_PATH}")
    )
    assert get_json(f"http://{ip}:8501/v1/models/{MODEL}") is None  # refused: no ready endpoint
    assert not ready(the_pod(core))
    unhealthy = [e.message for e in events(core, "Unhealthy")]
    assert any(m.startswith("Readiness probe failed: Get ") and "connection refused" in m for m in unhealthy)

    upload_version(emu, 3)
    upload_version(emu, 1)  # a lower version is never aspired
    wait_for(lambda: available(apps, "tf-serving"))
    status = wait_for(lambda: get_json(f"http://{ip}:8501/v1/models/{MODEL}"))
    assert [(v["version"], v["state"]) for v in status["model_version_status"]] == [("3", "AVAILABLE")]

    upload_version(emu, 4)

    def versions() -> list[tuple[str, str]] | None:
        doc = get_json(f"http://{ip}:8501/v1/models/{MODEL}") or {}
        got = [(v["version"], v["state"]) for v in doc.get("model_version_status", [])]
        return got if got and got[0] == ("4", "AVAILABLE") else None

    assert wait_for(versions) == [("4", "AVAILABLE"), ("3", "END")]  # 3 unloaded once 4 serves
    log = log_of(core, the_pod(core))
    assert log.index("Running gRPC ModelServer at 0.0.0.0:8500") < log.index("version: 4}")


def test_a_version_without_saved_model_pb_fails_after_tf_servings_retries(make_emu: Any) -> None:
    emu = make_emu(tfserving_scale=0.002)  # retries 0.12 s apart
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    grant_reader(emu, node_account(emu))
    upload_version(emu, 1, {"variables/variables.index": b"i"})  # no saved_model.pb
    apply_deployment(apps, tf_deployment())

    # The first version failing for good fails the server's start: it exits and is restarted.
    def crash_looping() -> Any:
        pod = the_pod(core)
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].restart_count >= 1 else None

    pod = wait_for(crash_looping)
    previous = log_of(core, pod, previous=True)
    assert (
        f"Loading servable: {{name: {MODEL} version: 1}} failed: NOT_FOUND: Could not find SavedModel .pb or "
        f".pbtxt at supplied export directory path: {MODEL_PATH}/1"
    ) in previous
    assert "retry: 5" in previous and "exhausted max_num_load_retries: 5" in previous
    assert "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available" in previous
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 255

    # With a complete version serving, a broken newer one ends in END and the old one keeps serving.
    upload_version(emu, 1)
    wait_for(lambda: available(apps, "tf-serving"))
    core.patch_namespaced_service("tf-serving", "default", LB, field_manager="t", _content_type=APPLY)
    ip = ingress_ip(core)
    upload_version(emu, 2, {"variables/variables.index": b"i"})

    def settled() -> Any:
        doc = get_json(f"http://{ip}:8501/v1/models/{MODEL}") or {}
        states = {v["version"]: v for v in doc.get("model_version_status", [])}
        return states if states.get("2", {}).get("state") == "END" else None

    states = wait_for(settled)
    assert states["1"]["state"] == "AVAILABLE"
    assert states["2"]["status"]["error_code"] == "NOT_FOUND"
    assert "Could not find SavedModel .pb or .pbtxt" in states["2"]["status"]["error_message"]


def test_a_liveness_probe_kills_a_slow_load_and_a_startup_probe_waits_for_it(make_emu: Any) -> None:
    emu = make_emu(model_load_s=2.5)  # longer than 60 s + 6 x 20 s of probes (1.8 s at this scale)
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    upload_version(emu, 1)
    grant_reader(emu, node_account(emu))
    liveness = {
        "tcpSocket": {"port": 8500},
        "initialDelaySeconds": 60,
        "periodSeconds": 20,
        "failureThreshold": 6,
    }
    apply_deployment(apps, tf_deployment(probes={"livenessProbe": liveness}))
    killing = wait_for(lambda: events(core, "Killing"))
    assert killing[0].message == "Container serving failed liveness probe, will be restarted"

    apps.delete_namespaced_deployment("tf-serving", "default")
    startup = {"tcpSocket": {"port": 8500}, "periodSeconds": 10, "failureThreshold": 60}
    apply_deployment(apps, tf_deployment("slow", probes={"startupProbe": startup, "livenessProbe": liveness}))
    wait_for(lambda: available(apps, "slow"), timeout=15)
    (pod,) = pods_of(core, "slow")
    assert pod.status.container_statuses[0].restart_count == 0


# ---- Deployments, ReplicaSets, ServiceAccounts ------------------------------------------------------


def test_a_rolling_update_keeps_the_old_pod_serving_and_reports_status_like_the_controller(
    make_emu: Any,
) -> None:
    emu = make_emu()
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    apply_deployment(apps, deployment())
    wait_for(lambda: available(apps, "tf-serving"))
    (old,) = pods_of(core)

    apply_deployment(apps, deployment(image="nginxx:1.27"))  # a typo: the new pod cannot pull

    def rolling() -> Any:
        d = apps.read_namespaced_deployment("tf-serving", "default")
        return d if d.status.replicas == 2 and d.status.updated_replicas == 1 else None

    d = wait_for(rolling)
    s = d.status
    assert (s.observed_generation, d.metadata.generation) == (2, 2)
    assert (s.ready_replicas, s.available_replicas, s.unavailable_replicas) == (1, 1, None)
    conditions = {c.type: (c.status, c.reason) for c in s.conditions}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }
    pods = {p.metadata.name: p for p in pods_of(core)}
    assert ready(pods[old.metadata.name])  # the old pod serves on
    waiting = [
        p.status.container_statuses[0].state.waiting
        for p in pods.values()
        if p.metadata.name != old.metadata.name
    ]
    assert waiting[0].reason in ("ErrImagePull", "ImagePullBackOff", "ContainerCreating")
    sets = {rs.metadata.name: rs.spec.replicas for rs in apps.list_namespaced_replica_set("default").items}
    assert sorted(sets.values()) == [1, 1]

    apply_deployment(apps, deployment(image="nginx:1.28"))
    done = wait_for(
        lambda: (
            lambda d: (
                d
                if d.status.replicas == 1 and d.status.updated_replicas == 1 and available(apps, "tf-serving")
                else None
            )
        )(apps.read_namespaced_deployment("tf-serving", "default"))
    )
    assert {c.type: c.reason for c in done.status.conditions}["Progressing"] == "NewReplicaSetAvailable"
    assert old.metadata.name not in {p.metadata.name for p in pods_of(core)}
    scaled = [e.message for e in events(core, "ScalingReplicaSet")]
    assert any(
        m.startswith("Scaled down replica set tf-serving-") and m.endswith("from 1 to 0") for m in scaled
    )


def test_service_accounts_exist_and_a_pod_needs_the_one_it_names(make_emu: Any) -> None:
    emu = make_emu()
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    assert core.read_namespaced_service_account("default", "default").metadata.name == "default"
    core.create_namespace({"metadata": {"name": "serving"}})
    assert [sa.metadata.name for sa in core.list_namespaced_service_account("serving").items] == ["default"]

    body = deployment()
    body["spec"]["template"]["spec"]["serviceAccountName"] = "tf-serving"
    apply_deployment(apps, body)

    def failure() -> Any:
        d = apps.read_namespaced_deployment("tf-serving", "default")
        return next((c for c in d.status.conditions or [] if c.type == "ReplicaFailure"), None)

    cond = wait_for(failure)
    assert (cond.status, cond.reason) == ("True", "FailedCreate")
    assert (
        'error looking up service account default/tf-serving: serviceaccount "tf-serving" not found'
        in cond.message
    )
    assert events(core, "FailedCreate")[0].message.startswith('Error creating: pods "tf-serving-')
    assert pods_of(core) == []

    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tf-serving"}}
    core.patch_namespaced_service_account("tf-serving", "default", sa, field_manager="t", _content_type=APPLY)
    wait_for(lambda: available(apps, "tf-serving"))
    assert the_pod(core).spec.service_account_name == "tf-serving"
    core.delete_namespaced_service_account("tf-serving", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service_account("tf-serving", "default")
    assert err.value.status == 404


# ---- nodes: GKE's system pods, the cluster autoscaler, events ----------------------------------------


def test_gke_system_pods_take_their_share_of_every_node(make_emu: Any) -> None:
    emu = make_emu()
    api = start(emu, GKE_METADATA_POOL)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    (node,) = core.list_node().items
    system = {
        p.metadata.name.rsplit("-", 1)[0] if "proxy" not in p.metadata.name else "kube-proxy": p
        for p in core.list_namespaced_pod("kube-system").items
        if p.metadata.owner_references[0].kind != "ReplicaSet"
    }
    assert set(system) == {"kube-proxy", "fluentbit-gke", "ip-masq-agent", "gke-metadata-server"}
    assert all(p.spec.node_name == node.metadata.name for p in system.values())
    # The cluster-wide ones too: one kube-dns on a one-node cluster, and its autoscaler.
    addons = wait_for(lambda: _addons(core))
    assert sorted(addons) == ["kube-dns", "kube-dns-autoscaler"]
    assert {p.spec.node_name for p in addons.values()} == {node.metadata.name}
    # 3920m allocatable - 315m of per-node system pods - 260m kube-dns - 20m its autoscaler = 3325m.
    apply_deployment(apps, deployment(cpu="3330m"))
    pending = wait_for(lambda: events(core, "FailedScheduling"))
    assert pending[0].message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    apply_deployment(apps, deployment(cpu="3320m"))
    wait_for(lambda: available(apps, "tf-serving"))


def _addons(core: k8s.CoreV1Api) -> dict[str, Any]:
    """GKE's cluster-wide kube-system pods (Deployments' pods, not DaemonSets') that run, by
    ``k8s-app`` (empty while one is Pending)."""
    pods = core.list_namespaced_pod("kube-system").items
    found = [p for p in pods if p.metadata.owner_references[0].kind == "ReplicaSet"]
    if not found or any(p.status.phase != "Running" for p in found):
        return {}
    return {p.metadata.labels["k8s-app"]: p for p in found}


AUTOSCALED = {
    **POOL,
    "zones": ["us-central1-c"],
    "autoscaling": {"enabled": True, "min_node_count": 0, "max_node_count": 2},
    "instance_group": "https://www.googleapis.com/compute/v1/projects/demo-proj/zones/us-central1-c/instanceGroupManagers/gke-sd-grp",
}


# A small fixed pool beside the autoscaled one, as sdcluster's system pool: GKE's own pods need a node.
SYSTEM = {**POOL, "name": "sd-system-pool", "machine_type": "e2-medium", "cpus": 2, "memory_mib": 4096}
SERVING_TAINT = {"key": "sdcluster.dev/serving", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": "sdcluster.dev/serving", "operator": "Exists", "effect": "NoSchedule"}


def tolerating(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["template"]["spec"]["tolerations"] = [TOLERATION]
    return body


def test_the_autoscaler_adds_a_node_for_a_pod_that_fits_and_removes_idle_nodes_down_to_zero(
    make_emu: Any,
) -> None:
    emu = make_emu(scale_down_s=0.3)
    # The serving pool starts empty (an empty node would go after scale_down_s anyway).
    api = start(emu, {**AUTOSCALED, "node_count": 0, "taints": [SERVING_TAINT]}, SYSTEM)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)

    def serving_nodes() -> list[Any]:
        return [n for n in core.list_node().items if "sd-node-pool" in n.metadata.name]

    apply_deployment(apps, tolerating(deployment(cpu="2", replicas=2)))  # one per node
    wait_for(lambda: available(apps, "tf-serving") and len(serving_nodes()) == 2)
    # Both pods fit only new nodes: one scale-up to 2, each pod's event names it.
    triggered = events(core, "TriggeredScaleUp")
    assert len(triggered) == 2 and {e.message for e in triggered} == {
        "pod triggered scale-up: [{https://www.googleapis.com/compute/v1/projects/demo-proj/zones/"
        "us-central1-c/instanceGroups/gke-sd-grp 0->2 (max: 2)}]"
    }
    # The scheduler's verdict from before the scale-up is still listed (events live for an hour),
    # while the pod it was about is scheduled and running: the system node does not fit 2 CPUs.
    stale, _ = events(core, "FailedScheduling")
    assert stale.message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    pod = next(p for p in pods_of(core) if p.metadata.name == stale.involved_object.name)
    assert {c.type: c.status for c in pod.status.conditions}["PodScheduled"] == "True"

    apply_deployment(apps, tolerating(deployment(cpu="2", replicas=0)))
    wait_for(lambda: serving_nodes() == [])
    removed = [e.message for e in events(core, "ScaleDownEmpty")]
    assert len(removed) == 2 and all(
        m.startswith('Scale-down: removing empty node "gke-sd-cluster-sd-node-pool-') for m in removed
    )
    apply_deployment(apps, tolerating(deployment(cpu="2", replicas=1)))  # scale from zero
    wait_for(lambda: available(apps, "tf-serving") and len(serving_nodes()) == 1)


@pytest.mark.parametrize("tainted", [False, True], ids=["untainted", "tainted"])
def test_gke_pods_keep_an_untainted_node_up_and_a_taint_keeps_them_off(make_emu: Any, tainted: bool) -> None:
    """kube-dns and its autoscaler go to the node with the most room (the serving one, if it admits
    them); a node running one is never removed. With the serving pool tainted they run on the
    system pool, and the serving pool reaches zero."""
    taints = [SERVING_TAINT] if tainted else []
    emu = make_emu(scale_down_s=0.3)
    api = start(emu, {**AUTOSCALED, "taints": taints}, SYSTEM)
    core = k8s.CoreV1Api(api)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    serving = next(n for n in nodes if "sd-node-pool" in n)
    assert (nodes[serving].spec.taints or []) == [k8s.V1Taint(**t) for t in taints]
    addons = wait_for(lambda: _addons(core))
    # Two nodes: kube-dns runs two pods (preventSinglePointFailure), on different nodes if it can.
    dns = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    assert len(dns) == 2
    hosts = {p.spec.node_name for p in dns} | {addons["kube-dns-autoscaler"].spec.node_name}
    if tainted:
        assert hosts == {next(n for n in nodes if "system" in n)}
        wait_for(lambda: all("sd-node-pool" not in n.metadata.name for n in core.list_node().items))
        return
    assert serving in hosts
    # Idle for far longer than scale_down_s, the serving node stays: kube-dns runs there.
    since = nodes[serving].metadata.creation_timestamp.timestamp()
    wait_for(lambda: core.list_node().items and emu.world.now() > since + 5 * 0.3)
    assert serving in {n.metadata.name for n in core.list_node().items}
    assert not events(core, "ScaleDownEmpty")


def test_a_pod_that_does_not_tolerate_a_taint_is_told_so(make_emu: Any) -> None:
    emu = make_emu()
    api = start(emu, {**POOL, "taints": [SERVING_TAINT]})
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    apply_deployment(apps, deployment(cpu="1"))
    (pending,) = wait_for(lambda: events(core, "FailedScheduling"))
    assert pending.message == (
        "0/1 nodes are available: 1 node(s) had untolerated taint {sdcluster.dev/serving: true}. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
    # GKE's own pods do not tolerate it either: with no other node, they wait too.
    dns = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    assert [p.status.phase for p in dns] == ["Pending"]
    apply_deployment(apps, tolerating(deployment(cpu="1")))
    wait_for(lambda: available(apps, "tf-serving"))


def test_pods_that_cannot_fit_or_meet_the_pool_maximum_do_not_trigger_a_scale_up(make_emu: Any) -> None:
    emu = make_emu()
    api = start(emu, AUTOSCALED)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    apply_deployment(apps, deployment("huge", cpu="5"))
    (huge,) = wait_for(lambda: events(core, "NotTriggerScaleUp"))
    assert (
        huge.message
        == "pod didn't trigger scale-up (it wouldn't fit if a new node is added): 1 Insufficient cpu"
    )
    assert huge.source.component == "cluster-autoscaler"

    apps.delete_namespaced_deployment("huge", "default")
    apply_deployment(apps, deployment(cpu="2", replicas=3))  # two nodes at most: the third pod waits
    at_max = wait_for(
        lambda: [e for e in events(core, "NotTriggerScaleUp") if "max node group size reached" in e.message]
    )
    assert at_max[0].message == "pod didn't trigger scale-up: 1 max node group size reached"


# ---- who GKE thinks a service account is -------------------------------------------------------------


def _token_client(emu: Any, token: str) -> k8s.ApiClient:
    conf = k8s.Configuration()
    conf.host = f"https://{emu.world.kube.endpoint_of(KEY)}"
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(emu.world.data["kube"][KEY]["ca_cert"])
    conf.ssl_ca_cert = f.name
    conf.api_key = {"authorization": f"Bearer {token}"}
    return k8s.ApiClient(conf)


def test_gke_names_a_service_account_by_email_only_with_the_userinfo_email_scope(make_emu: Any) -> None:
    emu = make_emu()
    start(emu)
    admin = factory(emu).iam_admin()
    sa = admin.create_service_account(name="projects/demo-proj", account_id="deployer", service_account={})
    policy = emu.world.policy("projects/demo-proj")
    emu.world.set_policy(
        "projects/demo-proj",
        [*policy["bindings"], {"role": "roles/container.admin", "members": [f"serviceAccount:{sa.email}"]}],
        b"",
    )
    cloud = ["https://www.googleapis.com/auth/cloud-platform"]
    for scopes in (cloud, [*cloud, "https://www.googleapis.com/auth/userinfo.email"]):
        token, _ = emu.world.mint_token(f"serviceAccount:{sa.email}", 600, scopes)
        k8s.CoreV1Api(_token_client(emu, token)).list_namespaced_config_map("default")
    callers = [e.caller for e in emu.log.entries() if e.service == "k8s" and e.method == "GET"][-2:]
    assert callers == [f"serviceAccount:{sa.unique_id}", f"serviceAccount:{sa.email}"]


def test_an_env_var_from_a_missing_configmap_holds_the_container(make_emu: Any) -> None:
    emu = make_emu()
    api = start(emu)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    body = deployment()
    ref = {"configMapKeyRef": {"name": "tfserving-configs", "key": "MODEL_NAME"}}
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODEL_NAME", "valueFrom": ref}]
    apply_deployment(apps, body)

    def waiting() -> Any:
        statuses = the_pod(core).status.container_statuses or []
        return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None

    held = wait_for(
        lambda: (lambda w: w if w and w.reason == "CreateContainerConfigError" else None)(waiting())
    )
    assert held.message == 'configmap "tfserving-configs" not found'
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "tfserving-configs"}, "data": {"MODEL_NAME": "sd"}}
    )
    wait_for(lambda: available(apps, "tf-serving"))
