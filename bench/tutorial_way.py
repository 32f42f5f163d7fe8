"""The tutorial's way of standing the cluster up, replayed with the official clients (no sdcluster engine).

It is the baseline sdcluster's apply is compared with in ``bench/run.py``: the same end state (two
service accounts, their roles, a zonal cluster with the ``sd-node-pool`` pool, the model bucket, the
TF Serving ConfigMap, Deployment and LoadBalancer Service), reached the way the Terraform + kubectl
tutorial reaches it:

1. create ``gke-admin`` and ``gke-node``;
2. **authoritative** project bindings (``google_project_iam_binding``: the role's member list is
   replaced), including ``roles/iam.serviceAccountUser`` project-wide, and the token-creator binding
   on ``gke-admin`` for the user;
3. a **fixed sleep** for IAM propagation (``sleep 60`` in the tutorial, scaled by the caller);
4. CreateCluster with a default pool (``initial_node_count``), wait; DeleteNodePool ``default-pool``,
   wait; CreateNodePool ``sd-node-pool``, wait (``remove_default_node_pool = true``);
5. the bucket, and ``roles/storage.objectViewer`` for ``gke-node`` on it;
6. with ``model`` (a SavedModel directory): its files copied into ``<model_path>/1/`` one after
   another, as ``gsutil cp -r`` without ``-m`` does;
7. the Kubernetes objects, **created** (not server-side applied) with the kubernetes client, all at
   once, then a wait for the pods to start and the load balancer (without ``model`` the bucket has
   no model yet, as in sdcluster's apply: TF Serving becomes ready only once one is uploaded), and
   with ``model`` until TF Serving reports version 1 AVAILABLE.

Every wait is polled every ``poll_s`` (0.1 s by default), which is generous to the tutorial: its only
avoidable delay left is the fixed sleep and the default-pool detour, which is what we measure.

Example::

    stages = run_tutorial(emu.address, project="demo-proj", user="user:demo@example.com", sleep_s=3.0)
    sum(stages.values())  # wall time, seconds
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcluster.tfserving import model_url

POLL_S = 0.1
TIMEOUT_S = 300.0


def _wait(what: str, probe: Callable[[], bool], poll_s: float) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"tutorial way: timed out waiting for {what}")
        time.sleep(poll_s)


def _authoritative_bindings(rm: Any, project: str, roles: dict[str, list[str]]) -> None:
    """``google_project_iam_binding`` for each role: its member list becomes exactly ``roles[role]``."""
    from google.iam.v1 import iam_policy_pb2

    resource = f"projects/{project}"
    policy = rm.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    kept = [b for b in policy.bindings if b.role not in roles]
    del policy.bindings[:]
    policy.bindings.extend(kept)
    for role, members in roles.items():
        policy.bindings.add(role=role, members=members)
    rm.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy))


def _sa_binding(iam: Any, project: str, email: str, role: str, member: str) -> None:
    """``google_service_account_iam_binding``: authoritative for ``role`` on the account."""
    from google.iam.v1 import iam_policy_pb2

    resource = f"projects/{project}/serviceAccounts/{email}"
    policy = iam.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    kept = [b for b in policy.bindings if b.role != role]
    del policy.bindings[:]
    policy.bindings.extend(kept)
    policy.bindings.add(role=role, members=[member])
    iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy))


def _wait_operation(gke: Any, location: str, op: Any, poll_s: float) -> None:
    from google.cloud import container_v1

    name = f"{location}/operations/{op.name}"

    def done() -> bool:
        current = gke.get_operation(name=name)
        if current.status == container_v1.Operation.Status.DONE:
            if current.status_message:
                raise RuntimeError(f"tutorial way: operation {op.name} failed: {current.status_message}")
            return True
        return False

    _wait(f"operation {op.operation_type.name}", done, poll_s)


def _manifests(cfg: Any) -> list[dict[str, Any]]:
    """The same objects sdcluster applies, minus sdcluster's node selector (the tutorial has one pool)."""
    from sdcluster.gcp.resources import serving

    deployment = serving.deployment_manifest(cfg)
    deployment["spec"]["template"]["spec"].pop("nodeSelector", None)
    deployment["spec"]["template"]["spec"].pop("serviceAccountName", None)  # the namespace's default KSA
    return [serving.configmap_manifest(cfg), deployment, serving.service_manifest(cfg)]


def run_tutorial(
    emulator: str,
    *,
    project: str,
    user: str,
    sleep_s: float,
    poll_s: float = POLL_S,
    model: Path | None = None,
) -> dict[str, float]:
    """Stand the stack up the tutorial's way on the emulator at ``emulator``; seconds per stage."""
    from google.cloud import container_v1, iam_admin_v1
    from kubernetes import client as k8s

    import sdcluster
    from sdcluster.gcp.clients import ClientFactory

    cfg = sdcluster.Config.build(project=project, user=user)
    factory = ClientFactory(user=user, emulator=emulator)
    stages: dict[str, float] = {}
    mark = time.monotonic()

    def stage(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        stages[name] = now - mark
        mark = now

    iam = factory.iam_admin()
    for account in (cfg.iam.admin_account, cfg.iam.node_account):
        iam.create_service_account(
            request=iam_admin_v1.CreateServiceAccountRequest(
                name=f"projects/{project}",
                account_id=account,
                service_account=iam_admin_v1.ServiceAccount(display_name=account),
            )
        )
    stage("create service accounts")

    admin, node = f"serviceAccount:{cfg.admin_email}", f"serviceAccount:{cfg.node_email}"
    _authoritative_bindings(
        factory.projects(),
        project,
        {
            "roles/container.admin": [admin],
            "roles/compute.viewer": [admin],
            "roles/iam.serviceAccountUser": [admin],  # project-wide, as in the tutorial
            "roles/container.nodeServiceAccount": [node],
        },
    )
    _sa_binding(iam, project, cfg.admin_email, "roles/iam.serviceAccountTokenCreator", user)
    stage("IAM bindings (authoritative)")

    time.sleep(sleep_s)
    stage("fixed sleep for IAM propagation")

    gke = factory.cluster_manager(factory.impersonated(cfg.admin_email))
    location = f"projects/{project}/locations/{cfg.cluster.zone}"
    cluster_name = f"{location}/clusters/{cfg.cluster.name}"
    op = gke.create_cluster(
        parent=location, cluster=container_v1.Cluster(name=cfg.cluster.name, initial_node_count=1)
    )
    _wait_operation(gke, location, op, poll_s)
    stage("CreateCluster with default-pool")

    op = gke.delete_node_pool(name=f"{cluster_name}/nodePools/default-pool")
    _wait_operation(gke, location, op, poll_s)
    stage("DeleteNodePool default-pool")

    pool = container_v1.NodePool(
        name=cfg.cluster.node_pool,
        initial_node_count=cfg.cluster.initial_nodes,
        autoscaling=container_v1.NodePoolAutoscaling(
            enabled=True, min_node_count=cfg.cluster.min_nodes, max_node_count=cfg.cluster.max_nodes
        ),
        config=container_v1.NodeConfig(
            machine_type=cfg.cluster.machine_type,
            preemptible=True,
            service_account=cfg.node_email,
            oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
        ),
    )
    op = gke.create_node_pool(parent=cluster_name, node_pool=pool)
    _wait_operation(gke, location, op, poll_s)
    stage("CreateNodePool sd-node-pool")

    storage = factory.storage(project)
    bucket = storage.create_bucket(cfg.bucket_name, location=cfg.region)
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {node}})
    bucket.set_iam_policy(policy)
    stage("bucket + reader binding")

    if model is not None:
        base = cfg.model_path.removeprefix(f"gs://{cfg.bucket_name}/").strip("/")
        for f in sorted(p for p in model.rglob("*") if p.is_file()):
            bucket.blob(f"{base}/1/{f.relative_to(model).as_posix()}").upload_from_filename(str(f))
        stage("upload the model, one file at a time (gsutil cp -r)")

    cluster = gke.get_cluster(name=cluster_name)
    api = factory.kubernetes(
        cluster.endpoint, cluster.master_auth.cluster_ca_certificate, factory.impersonated(cfg.admin_email)
    )
    # Any: the client takes plain dicts for bodies, which its annotations do not say.
    core: Any = k8s.CoreV1Api(api)
    apps: Any = k8s.AppsV1Api(api)
    ns = cfg.serving.namespace
    configmap, deployment, service = _manifests(cfg)
    core.create_namespaced_config_map(ns, configmap)
    apps.create_namespaced_deployment(ns, deployment)
    core.create_namespaced_service(ns, service)
    stage("create Kubernetes objects")

    name = deployment["metadata"]["name"]

    def serving() -> bool:
        pods = core.list_namespaced_pod(ns, label_selector=f"app={name}").items
        started = [
            p
            for p in pods
            if p.status.container_statuses and all(c.state.running for c in p.status.container_statuses)
        ]
        s = core.read_namespaced_service_status(name, ns).status
        return len(started) >= deployment["spec"]["replicas"] and bool(
            s.load_balancer and s.load_balancer.ingress
        )

    _wait("pods started and load balancer", serving, poll_s)
    stage("wait pods + load balancer")
    if model is not None:
        ip = core.read_namespaced_service_status(name, ns).status.load_balancer.ingress[0].ip
        _wait("version 1 AVAILABLE", lambda: _available(model_url(ip, cfg.serving.model_name)), poll_s)
        stage("wait until TF Serving serves version 1")
    return stages


def _available(url: str) -> bool:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read())
    except OSError:
        return False
    return any(v["state"] == "AVAILABLE" for v in doc.get("model_version_status", []))
