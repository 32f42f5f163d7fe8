"""Helpers shared by the tests of the emulated Kubernetes API (clusters started on an emulator's hub)."""

from __future__ import annotations

import base64
import json
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sdcluster.gcp.clients import ClientFactory, emulator_credentials

from ..helpers import factory

KEY = "projects/demo-proj/locations/us-central1-c/clusters/sd-cluster"
OWNER = "user:demo@example.com"
POOL = {
    "name": "sd-node-pool",
    "machine_type": "n2-standard-4",
    "node_count": 1,
    "cpus": 4,
    "memory_mib": 16384,
    "accelerators": 0,
}
APPLY = "application/apply-patch+yaml"


def api_client(emu: Any, endpoint: str, ca_pem: str, member: str | None = OWNER) -> k8s.ApiClient:
    """The client sdcluster itself builds (ClientFactory.kubernetes), or a token-less one."""
    if member is not None:
        factory = ClientFactory(user=member, emulator=emu.address)
        ca_b64 = base64.b64encode(ca_pem.encode()).decode()
        return factory.kubernetes(endpoint, ca_b64, emulator_credentials(member))
    conf = k8s.Configuration()
    conf.host = f"https://{endpoint}"
    conf.ssl_ca_cert = _pem_file(ca_pem)
    conf.verify_ssl = True
    return k8s.ApiClient(conf)


def _pem_file(pem: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(pem)
    return f.name


def deployment(
    name: str = "tf-serving", image: str = "nginx:1.27", cpu: str = "1", replicas: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "serving",
                            "image": image,
                            "args": ["--model_name=stable-diffusion"],
                            "ports": [{"containerPort": 8501}],
                            "resources": {"requests": {"cpu": cpu, "memory": "2Gi"}},
                        }
                    ]
                },
            },
        },
    }


def apply_deployment(
    apps: k8s.AppsV1Api, body: dict[str, Any], manager: str = "sdcluster", force: bool = False
) -> Any:
    return apps.patch_namespaced_deployment(
        body["metadata"]["name"], "default", body, field_manager=manager, force=force, _content_type=APPLY
    )


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    return body


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def available(apps: k8s.AppsV1Api, name: str) -> bool:
    d = apps.read_namespaced_deployment(name, "default")
    conditions = {c.type: c.status for c in d.status.conditions or []}
    return d.status.observed_generation == d.metadata.generation and conditions.get("Available") == "True"


def managed(obj: Any, manager: str, operation: str) -> dict[str, Any] | None:
    for entry in obj.metadata.managed_fields or []:
        if entry.manager == manager and entry.operation == operation:
            return entry.fields_v1  # type: ignore[no-any-return]
    return None


def get_json(url: str) -> Any:
    """The JSON body at ``url``, or None when nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


# ---- a model in the emulated Cloud Storage, and TF Serving reading it --------------------------------

MODEL = "stable-diffusion"
BUCKET = "model-bucket"
MODEL_PATH = f"gs://{BUCKET}/stable_diffusion_model"
SAVED_MODEL = {
    "saved_model.pb": b"\x08\x01",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"weights",
}
VIEWER = "roles/storage.objectViewer"


def model_bucket(emu: Any) -> Any:
    """The (new) model bucket, owned by the project owner."""
    client = factory(emu, OWNER).storage("demo-proj")
    return client.lookup_bucket(BUCKET) or client.create_bucket(BUCKET, location="us-central1")


def upload_version(emu: Any, version: int, files: dict[str, bytes] | None = None) -> None:
    bucket = model_bucket(emu)
    prefix = MODEL_PATH.split("/", 3)[3]
    for name, data in (SAVED_MODEL if files is None else files).items():
        bucket.blob(f"{prefix}/{version}/{name}").upload_from_string(data)


def grant_reader(emu: Any, member: str) -> None:
    bucket = model_bucket(emu)
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": VIEWER, "members": {member}})
    bucket.set_iam_policy(policy)


def node_account(emu: Any) -> str:
    """The Compute Engine default service account: what pods act as on nodes without GKE_METADATA."""
    return f"serviceAccount:{emu.world.project('demo-proj')['number']}-compute@developer.gserviceaccount.com"


def ksa_principal(emu: Any, ksa: str = "default", ns: str = "default") -> str:
    number = emu.world.project("demo-proj")["number"]
    return (
        f"principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
        f"demo-proj.svc.id.goog/subject/ns/{ns}/sa/{ksa}"
    )


def tf_deployment(
    name: str = "tf-serving", probes: dict[str, Any] | None = None, sa: str | None = None, replicas: int = 1
) -> dict[str, Any]:
    """TF Serving reading MODEL_PATH, readiness on the metadata route (as sdcluster configures it)."""
    body = deployment(name, image="tensorflow/serving:2.11.0", replicas=replicas)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [
        f"--model_name={MODEL}",
        f"--model_base_path={MODEL_PATH}",
        "--port=8500",
        "--rest_api_port=8501",
    ]
    container.update(
        probes
        if probes is not None
        else {"readinessProbe": {"httpGet": {"path": f"/v1/models/{MODEL}/metadata", "port": 8501}}}
    )
    if sa:
        body["spec"]["template"]["spec"]["serviceAccountName"] = sa
    return body


def pods_of(core: k8s.CoreV1Api, app: str = "tf-serving") -> list[Any]:
    return list(core.list_namespaced_pod("default", label_selector=f"app={app}").items)


def log_of(core: k8s.CoreV1Api, pod: Any, **kw: Any) -> str:
    return str(core.read_namespaced_pod_log(pod.metadata.name, "default", **kw))
