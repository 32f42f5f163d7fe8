"""The emulator's REST transport: the same services and world as gRPC, reached through the official
clients' REST transports (and raw HTTP where only the wire shape is the point).

Routes come from Google's discovery documents; each API lives under its own prefix of the HTTP
address (``/container/``, ``/serviceusage/`` ...) and answers there as ``<api>.googleapis.com``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.cloud import container_v1, iam_credentials_v1, resourcemanager_v3, service_usage_v1

from sdcluster.gcp.clients import emulator_credentials

from ..helpers import factory

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
ZONE = "us-central1-c"
PARENT = f"projects/{PROJECT}/locations/{ZONE}"


def rest_client(emu: Any, cls: Any, prefix: str, member: str = OWNER) -> Any:
    opts = ClientOptions(api_endpoint=f"http://{emu.http_address}/{prefix}")
    return cls(credentials=emulator_credentials(member), client_options=opts, transport="rest")


def call(emu: Any, method: str, path: str, member: str | None = OWNER, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer emulator:{member}"} if member else {}
    return requests.request(method, f"http://{emu.http_address}{path}", headers=headers, timeout=10, **kw)


def test_gke_over_rest_is_the_service_grpc_serves(emu: Any) -> None:
    gke = rest_client(emu, container_v1.ClusterManagerClient, "container")
    spec = {"name": "c1", "initial_node_count": 1, "node_config": {"machine_type": "e2-medium", "spot": True}}
    op = gke.create_cluster(parent=PARENT, cluster=spec)
    assert op.operation_type == container_v1.Operation.Type.CREATE_CLUSTER
    deadline = time.monotonic() + 20
    while gke.get_operation(name=f"{PARENT}/operations/{op.name}").status.name != "DONE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The gRPC client sees what REST made: one world behind two transports.
    cluster = factory(emu, OWNER).cluster_manager().get_cluster(name=f"{PARENT}/clusters/c1")
    assert cluster.status.name == "RUNNING" and cluster.node_pools[0].config.spot
    with pytest.raises(gexc.Conflict):  # REST errors map by HTTP status
        gke.create_cluster(parent=PARENT, cluster=spec)
    with pytest.raises(gexc.NotFound, match=f"{PARENT}/clusters/nope"):
        gke.get_cluster(name=f"{PARENT}/clusters/nope")
    # The v1 zonal paths (projects/P/zones/Z/clusters) reach the same clusters.
    body = call(emu, "GET", f"/container/v1/projects/{PROJECT}/zones/{ZONE}/clusters").json()
    assert [c["name"] for c in body["clusters"]] == ["c1"]
    config = body["clusters"][0]["nodePools"][0]["config"]
    assert config["machineType"] == "e2-medium"  # camelCase
    # What the request left unset comes back with GKE's defaults.
    assert (config["diskSizeGb"], config["diskType"], config["imageType"]) == (
        100,
        "pd-balanced",
        "COS_CONTAINERD",
    )
    other = {
        "name": "c2",
        "initialNodeCount": 1,
        "workloadIdentityConfig": {"workloadPool": "other.svc.id.goog"},
    }
    refused = call(emu, "POST", f"/container/v1/{PARENT}/clusters", json={"cluster": other})
    assert refused.status_code == 400 and f"{PROJECT}.svc.id.goog" in refused.json()["error"]["message"]


def test_errors_have_googles_rest_body(emu: Any) -> None:
    clusters = f"/container/v1/{PARENT}/clusters"
    unknown = call(emu, "POST", clusters, json={"cluster": {"name": "x", "initialNodeCount": 1, "bogus": 1}})
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": {
            "code": 400,
            "message": "Invalid JSON payload received. Unknown name \"bogus\" at 'cluster': Cannot find field.",
            "status": "INVALID_ARGUMENT",
        }
    }
    anonymous = call(emu, "GET", clusters, member=None)
    assert (anonymous.status_code, anonymous.json()["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert call(emu, "GET", f"/container/v2/{PARENT}/clusters").status_code == 404
    unmodelled = call(emu, "POST", f"/container/v1/{PARENT}/clusters/x:setMaintenancePolicy", json={})
    assert (unmodelled.status_code, unmodelled.json()["error"]["status"]) == (501, "UNIMPLEMENTED")


def test_disabled_api_over_rest_carries_googles_error_info(make_emu: Callable[..., Any]) -> None:
    emu = make_emu(enabled_services=["serviceusage.googleapis.com"])
    rm = rest_client(emu, resourcemanager_v3.ProjectsClient, "cloudresourcemanager")
    with pytest.raises(gexc.Forbidden) as err:
        rm.get_project(name=f"projects/{PROJECT}")
    assert err.value.reason == "SERVICE_DISABLED"
    assert err.value.metadata["service"] == "cloudresourcemanager.googleapis.com"

    # Enabling is a long-running operation in its REST shape (the response packed with its @type).
    su = rest_client(emu, service_usage_v1.ServiceUsageClient, "serviceusage")
    service = f"projects/{PROJECT}/services/cloudresourcemanager.googleapis.com"
    done = su.enable_service(request={"name": service}).result(timeout=10)
    assert done.service.state == service_usage_v1.State.ENABLED
    assert rm.get_project(name=f"projects/{PROJECT}").project_id == PROJECT


def test_impersonation_over_rest_mints_a_token_for_token_creators_only(emu: Any) -> None:
    iam = factory(emu, OWNER).iam_admin()
    sa = iam.create_service_account(name=f"projects/{PROJECT}", account_id="gke-admin")
    creds = rest_client(emu, iam_credentials_v1.IAMCredentialsClient, "iamcredentials")
    name = f"projects/-/serviceAccounts/{sa.email}"
    scope = ["https://www.googleapis.com/auth/cloud-platform"]
    with pytest.raises(gexc.Forbidden, match=r"iam\.serviceAccounts\.getAccessToken"):
        creds.generate_access_token(name=name, scope=scope)
    policy = iam.get_iam_policy(resource=sa.name)
    policy.bindings.add(role="roles/iam.serviceAccountTokenCreator", members=[OWNER])
    iam.set_iam_policy(request={"resource": sa.name, "policy": policy})
    token = creds.generate_access_token(name=name, scope=scope)
    assert token.access_token.startswith(f"emulator:serviceAccount:{sa.email}#")
    assert token.expire_time.microsecond == 0  # whole seconds, as Google answers
