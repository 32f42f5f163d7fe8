"""The emulated GKE Kubernetes API, driven with the official ``kubernetes`` client over verified TLS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sdcluster.emulator import Emulator

from .kube_helpers import (
    APPLY,
    KEY,
    MODEL,
    OWNER,
    POOL,
    api_client,
    apply_deployment,
    available,
    deployment,
    get_json,
    grant_reader,
    managed,
    node_account,
    status_of,
    tf_deployment,
    upload_version,
    wait_for,
)


@pytest.fixture
def cluster(emu: Any) -> tuple[Any, str, str]:
    """A running cluster API on the emulator's own hub (the one its tick loop drives)."""
    endpoint, ca_pem = emu.world.kube.start_cluster(KEY, [POOL])
    return emu, endpoint, ca_pem


@pytest.fixture
def api(cluster: tuple[Any, str, str]) -> k8s.ApiClient:
    emu, endpoint, ca_pem = cluster
    return api_client(emu, endpoint, ca_pem)


# --------------------------------------------------------------------------------------------------
# Transport, identity, permission


def test_tls_is_verified_against_the_cluster_ca_and_another_ca_is_refused(
    cluster: tuple[Any, str, str],
) -> None:
    import trustme

    emu, endpoint, ca_pem = cluster
    assert k8s.VersionApi(api_client(emu, endpoint, ca_pem)).get_code().git_version.startswith("v1.")

    stranger = api_client(emu, endpoint, trustme.CA().cert_pem.bytes().decode())
    stranger.configuration.retries = 0
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        k8s.CoreV1Api(stranger).list_namespace()


def test_request_without_token_is_401_unauthorized(cluster: tuple[Any, str, str]) -> None:
    emu, endpoint, ca_pem = cluster
    with pytest.raises(ApiException) as err:
        k8s.CoreV1Api(api_client(emu, endpoint, ca_pem, member=None)).list_namespaced_config_map("default")
    assert err.value.status == 401
    assert status_of(err.value)["reason"] == "Unauthorized"


def test_member_without_iam_permission_is_forbidden_until_granted_container_admin(
    cluster: tuple[Any, str, str],
) -> None:
    emu, endpoint, ca_pem = cluster
    member = "serviceAccount:gke-admin@demo-proj.iam.gserviceaccount.com"
    apps = k8s.AppsV1Api(api_client(emu, endpoint, ca_pem, member=member))
    with pytest.raises(ApiException) as err:
        apply_deployment(apps, deployment())
    body = status_of(err.value)
    assert err.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith(
        'deployments.apps "tf-serving" is forbidden: User "gke-admin@demo-proj.iam.gserviceaccount.com" cannot '
        'patch resource "deployments" in API group "apps" in the namespace "default"'
    )
    # What sdcluster's IAM step grants gke-admin (written through the world: IAM is another module's test).
    policy = emu.world.policy("projects/demo-proj")
    emu.world.set_policy(
        "projects/demo-proj",
        [*policy["bindings"], {"role": "roles/container.admin", "members": [member]}],
        b"",
    )
    assert apply_deployment(apps, deployment()).metadata.name == "tf-serving"


# --------------------------------------------------------------------------------------------------
# Server-side apply and field ownership


def test_apply_creates_records_owner_and_reapply_of_same_config_changes_nothing(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    created, http_status, _ = apps.patch_namespaced_deployment_with_http_info(
        "tf-serving", "default", deployment(), field_manager="sdcluster", _content_type=APPLY
    )
    assert http_status == 201
    fields = managed(created, "sdcluster", "Apply")
    assert fields is not None and fields["f:spec"]["f:replicas"] == {}
    assert created.metadata.generation == 1 and created.metadata.uid
    wait_for(lambda: available(apps, "tf-serving"))

    before = apps.read_namespaced_deployment("tf-serving", "default")
    again = apply_deployment(apps, deployment())
    assert again.metadata.resource_version == before.metadata.resource_version
    assert again.metadata.generation == 1


def test_conflicting_apply_by_another_manager_is_409_until_forced(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    apply_deployment(apps, deployment())
    with pytest.raises(ApiException) as err:
        apply_deployment(apps, deployment(replicas=2), manager="other")
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert (
        body["message"]
        == 'Apply failed with 1 conflict: conflict with "sdcluster" using apps/v1: .spec.replicas'
    )
    assert body["details"]["causes"][0]["field"] == ".spec.replicas"

    forced = apply_deployment(apps, deployment(replicas=2), manager="other", force=True)
    assert forced.spec.replicas == 2 and forced.metadata.generation == 2
    assert "f:replicas" in managed(forced, "other", "Apply")["f:spec"]  # type: ignore[index]
    assert "f:replicas" not in managed(forced, "sdcluster", "Apply")["f:spec"]  # type: ignore[index]


def test_field_set_by_merge_patch_of_another_manager_survives_our_reapply(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    apply_deployment(apps, deployment())
    apps.patch_namespaced_deployment(
        "tf-serving",
        "default",
        {"metadata": {"labels": {"team": "ml"}}},
        field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )
    after = apply_deployment(apps, deployment())
    assert after.metadata.labels == {"app": "tf-serving", "team": "ml"}
    assert "f:team" not in managed(after, "sdcluster", "Apply")["f:metadata"]["f:labels"]  # type: ignore[index]
    assert managed(after, "kubectl-edit", "Update") == {"f:metadata": {"f:labels": {"f:team": {}}}}


def test_fields_a_manager_stops_applying_are_removed(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}}
    core.patch_namespaced_config_map("cfg", "default", cm, field_manager="sdcluster", _content_type=APPLY)
    cm["data"] = {"a": "1"}
    after = core.patch_namespaced_config_map(
        "cfg", "default", cm, field_manager="sdcluster", _content_type=APPLY
    )
    assert after.data == {"a": "1"}


def test_strategic_merge_patch_merges_containers_by_name(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    apply_deployment(apps, deployment())
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "serving", "image": "tensorflow/serving:2.12.0"}]}}
        }
    }
    after = apps.patch_namespaced_deployment(
        "tf-serving", "default", patch
    )  # the client's default: strategic merge
    (container,) = after.spec.template.spec.containers
    assert container.image == "tensorflow/serving:2.12.0" and container.args == [
        "--model_name=stable-diffusion"
    ]
    assert after.metadata.generation == 2


# --------------------------------------------------------------------------------------------------
# Validation and error bodies


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["spec"].update(replicas="x"), "spec.replicas"),
        (
            lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "other"}),
            "spec.template.metadata.labels",
        ),
    ],
    ids=["wrong-type", "selector-mismatch"],
)
def test_invalid_deployment_is_422_invalid(
    api: k8s.ApiClient, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    body = deployment()
    mutate(body)
    with pytest.raises(ApiException) as err:
        apply_deployment(k8s.AppsV1Api(api), body)
    status = status_of(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith(f'Deployment.apps "tf-serving" is invalid: {field}')
    assert status["details"]["causes"][0]["field"] == field
    with pytest.raises(ApiException):
        k8s.AppsV1Api(api).read_namespaced_deployment("tf-serving", "default")


def test_an_unknown_field_in_server_side_apply_is_upstreams_500(api: k8s.ApiClient) -> None:
    # Structured merge types the applied configuration whatever fieldValidation says, and the
    # apiserver answers its error as a plain 500 (kubernetes/kubernetes#139253).
    body = deployment()
    body["spec"]["replicaz"] = 1
    with pytest.raises(ApiException) as err:
        apply_deployment(k8s.AppsV1Api(api), body)
    assert err.value.status == 500
    assert status_of(err.value)["message"] == (
        "failed to create typed patch object (default/tf-serving; apps/v1, Kind=Deployment): "
        ".spec.replicaz: field not declared in schema"
    )
    with pytest.raises(ApiException):
        k8s.AppsV1Api(api).read_namespaced_deployment("tf-serving", "default")


def test_not_found_already_exists_and_stale_update_status_bodies(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", "default")
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'configmaps "missing" not found'
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_config_map("missing", "default")
    assert err.value.status == 404

    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    assert err.value.status == 409 and status_of(err.value)["reason"] == "AlreadyExists"

    cm.data = {"a": "2"}
    core.replace_namespaced_config_map("cfg", "default", cm)
    cm.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", "default", cm)
    assert err.value.status == 409 and "the object has been modified" in status_of(err.value)["message"]


# --------------------------------------------------------------------------------------------------
# Controllers: nodes, rollouts, scheduling, images, load balancers


def test_nodes_show_gke_allocatable_and_pool_labels(api: k8s.ApiClient) -> None:
    (node,) = k8s.CoreV1Api(api).list_node(label_selector="cloud.google.com/gke-nodepool=sd-node-pool").items
    assert node.status.capacity["cpu"] == "4" and node.status.allocatable["cpu"] == "3920m"
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "n2-standard-4"


def test_rollout_becomes_available_and_pods_run(api: k8s.ApiClient) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apply_deployment(apps, deployment(replicas=2))
    wait_for(lambda: available(apps, "tf-serving"))
    status = apps.read_namespaced_deployment("tf-serving", "default").status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 2)
    pods = core.list_namespaced_pod("default", label_selector="app=tf-serving").items
    assert len(pods) == 2 and {p.status.phase for p in pods} == {"Running"}
    assert all(
        p.metadata.name.startswith("tf-serving-") and p.status.container_statuses[0].ready for p in pods
    )


def test_pods_that_fit_no_node_stay_pending_with_failed_scheduling(api: k8s.ApiClient) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apply_deployment(apps, deployment(cpu="4"))  # 4 vCPU requested, 3920m allocatable
    (pod,) = wait_for(lambda: core.list_namespaced_pod("default", label_selector="app=tf-serving").items)
    assert pod.status.phase == "Pending"
    events = core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={pod.metadata.name}"
    ).items
    (failed,) = [e for e in events if e.reason == "FailedScheduling"]
    assert failed.type == "Warning" and failed.message.startswith(
        "0/1 nodes are available: 1 Insufficient cpu."
    )
    time.sleep(0.5)  # well past rollout_s: still not available
    assert not available(apps, "tf-serving")


def test_unknown_image_fails_to_pull(api: k8s.ApiClient) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apply_deployment(apps, deployment(image="tensorflw/serving:2.11.0"))

    def waiting_reason() -> str | None:
        pods = core.list_namespaced_pod("default", label_selector="app=tf-serving").items
        statuses = pods[0].status.container_statuses if pods else None
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None

    assert wait_for(lambda: waiting_reason() in ("ErrImagePull", "ImagePullBackOff"))
    reasons = {e.reason for e in core.list_namespaced_event("default").items}
    assert {"Failed", "BackOff"} <= reasons


def test_load_balancer_gets_ip_serves_the_model_and_is_deleted_gracefully(
    api: k8s.ApiClient, cluster: tuple[Any, str, str]
) -> None:
    emu = cluster[0]
    upload_version(emu, 1)
    grant_reader(emu, node_account(emu))  # the POOL has no GKE metadata server: pods are the node
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apply_deployment(apps, tf_deployment())
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tf-serving"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "tf-serving"},
            "ports": [{"port": 8501, "targetPort": 8501}],
        },
    }
    created = core.patch_namespaced_service(
        "tf-serving", "default", svc, field_manager="sdcluster", _content_type=APPLY
    )
    assert created.spec.cluster_ip and not created.status.load_balancer.ingress

    def ingress_ip() -> str | None:
        ingress = core.read_namespaced_service("tf-serving", "default").status.load_balancer.ingress
        return ingress[0].ip if ingress else None

    ip = wait_for(ingress_ip)
    assert ip.startswith("127.0.") and ip != "127.0.0.1"
    wait_for(lambda: available(apps, "tf-serving"))
    # The TF Serving stand-in answers at the load balancer's address, from the ready pod's process.
    model = wait_for(lambda: get_json(f"http://{ip}:8501/v1/models/{MODEL}"))
    assert model["model_version_status"][0]["state"] == "AVAILABLE"

    core.delete_namespaced_service("tf-serving", "default")
    lingering = core.read_namespaced_service("tf-serving", "default")
    assert lingering.metadata.deletion_timestamp is not None
    assert lingering.metadata.finalizers == ["service.kubernetes.io/load-balancer-cleanup"]

    def gone() -> bool:
        try:
            core.read_namespaced_service("tf-serving", "default")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone)
    wait_for(lambda: get_json(f"http://{ip}:8501/v1/models/stable-diffusion") is None)


def test_hpa_reports_replicas_of_its_deployment_and_discovery_lists_groups(api: k8s.ApiClient) -> None:
    apps, autoscaling = k8s.AppsV1Api(api), k8s.AutoscalingV2Api(api)
    apply_deployment(apps, deployment())
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "tf-serving"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tf-serving"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "tf-serving", "default", hpa, field_manager="sdcluster", _content_type=APPLY
    )
    read = lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("tf-serving", "default").status  # noqa: E731
    status = wait_for(lambda: read() if read() and read().current_replicas == 1 else None)
    assert status.desired_replicas == 1
    groups = {g.name for g in k8s.ApisApi(api).get_api_versions().groups}
    assert {"apps", "autoscaling"} <= groups


# --------------------------------------------------------------------------------------------------
# Persistence


def test_restart_from_state_file_resumes_objects_and_ca(tmp_path: Any) -> None:
    state = str(tmp_path / "state.json")
    first = Emulator(state_file=state, rollout_s=0.2, lb_s=0.2).start()
    try:
        endpoint, ca_pem = first.world.kube.start_cluster(KEY, [POOL])
        core = k8s.CoreV1Api(api_client(first, endpoint, ca_pem))
        core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"model": "sd"}})
    finally:
        first.stop()

    second = Emulator(state_file=state, rollout_s=0.2, lb_s=0.2).start()
    try:
        endpoint = second.world.kube.endpoint_of(KEY)
        assert second.world.data["kube"][KEY]["endpoint"] == endpoint
        core = k8s.CoreV1Api(api_client(second, endpoint, ca_pem))  # the CA from before the restart
        assert core.read_namespaced_config_map("cfg", "default").data == {"model": "sd"}
    finally:
        second.stop()


def test_every_request_is_in_the_request_log(api: k8s.ApiClient, cluster: tuple[Any, str, str]) -> None:
    emu = cluster[0]
    emu.log.clear()
    core = k8s.CoreV1Api(api)
    core.list_namespaced_config_map("default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    k8s_entries = [e for e in emu.log.entries() if e.service == "k8s"]
    assert [(e.method, e.mutating, e.caller) for e in k8s_entries] == [
        ("GET", False, OWNER),
        ("POST", True, OWNER),
    ]
