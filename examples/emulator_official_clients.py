"""Drive the sdcluster emulator with Google's and Kubernetes' official client libraries only.

    sdcluster emulator serve --iam-propagation-s 2 &     # prints: export SDCLUSTER_EMULATOR=127.0.0.1:N
    python examples/emulator_official_clients.py 127.0.0.1:N

On a new project (only the APIs Google enables by default are on) it first enables the APIs it uses
with Service Usage, then creates a service account, binds roles, mints a token for it once IAM has propagated, creates a
cluster and waits for its operation, reaches its Kubernetes API over TLS with the CA from
master_auth, and stores an object in a bucket. No sdcluster code is imported: this is what any
program using the client libraries sees.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time

import grpc
from google.api_core import exceptions
from google.auth import credentials as ga_credentials
from google.auth.transport import grpc as ga_grpc
from google.auth.transport import requests as ga_requests
from google.cloud import (
    container_v1,
    iam_admin_v1,
    iam_credentials_v1,
    resourcemanager_v3,
    service_usage_v1,
    storage,
)
from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.iam_credentials_v1.services.iam_credentials.transports import IAMCredentialsGrpcTransport
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.cloud.service_usage_v1.services.service_usage.transports import ServiceUsageGrpcTransport
from google.iam.v1 import iam_policy_pb2
from kubernetes import client as k8s

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"


class Bearer(ga_credentials.Credentials):
    """A fixed bearer token (the emulator's identities are ``emulator:<member>``)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request: object) -> None:
        pass


def channel(address: str, token: str) -> grpc.Channel:
    local = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    call = grpc.metadata_call_credentials(ga_grpc.AuthMetadataPlugin(Bearer(token), ga_requests.Request()))
    return grpc.secure_channel(address, grpc.composite_channel_credentials(local, call))


APIS = [
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "container.googleapis.com",
    "compute.googleapis.com",
]


def main(address: str) -> None:
    owner = f"emulator:{OWNER}"
    usage = service_usage_v1.ServiceUsageClient(
        transport=ServiceUsageGrpcTransport(channel=channel(address, owner))
    )
    usage.batch_enable_services(request={"parent": f"projects/{PROJECT}", "service_ids": APIS}).result()
    print("enabled:", ", ".join(APIS))
    iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel(address, owner)))
    rm = resourcemanager_v3.ProjectsClient(transport=ProjectsGrpcTransport(channel=channel(address, owner)))
    creds = iam_credentials_v1.IAMCredentialsClient(
        transport=IAMCredentialsGrpcTransport(channel=channel(address, owner))
    )

    sa = iam.create_service_account(
        request={
            "name": f"projects/{PROJECT}",
            "account_id": "script-admin",
            "service_account": {"display_name": "x"},
        }
    )
    print("service account:", sa.email)
    policy = rm.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=f"projects/{PROJECT}"))
    policy.bindings.add(role="roles/container.admin", members=[f"serviceAccount:{sa.email}"])
    policy.bindings.add(role="roles/iam.serviceAccountUser", members=[f"serviceAccount:{sa.email}"])
    policy.bindings.add(role="roles/iam.serviceAccountTokenCreator", members=[OWNER])
    rm.set_iam_policy(
        request=iam_policy_pb2.SetIamPolicyRequest(resource=f"projects/{PROJECT}", policy=policy)
    )
    print("bound roles/container.admin, roles/iam.serviceAccountUser, token creator")

    name = f"projects/-/serviceAccounts/{sa.email}"
    denied = 0
    for _ in range(200):
        try:
            token = creds.generate_access_token(
                name=name, scope=["https://www.googleapis.com/auth/cloud-platform"]
            )
            break
        except exceptions.PermissionDenied:
            denied += 1
            time.sleep(0.2)  # IAM propagation
    else:
        raise SystemExit("the token creator binding never propagated")
    print(f"minted a token for {sa.email} after {denied} denied attempt(s)")

    gke = container_v1.ClusterManagerClient(
        transport=ClusterManagerGrpcTransport(channel=channel(address, token.access_token))
    )
    op = gke.create_cluster(
        parent=f"projects/{PROJECT}/locations/us-central1-c",
        cluster=container_v1.Cluster(
            name="script-cluster",
            node_pools=[
                container_v1.NodePool(
                    name="pool",
                    initial_node_count=1,
                    config=container_v1.NodeConfig(machine_type="e2-standard-4", service_account=sa.email),
                )
            ],
        ),
    )
    op_name = f"projects/{PROJECT}/locations/us-central1-c/operations/{op.name}"
    while gke.get_operation(name=op_name).status != container_v1.Operation.Status.DONE:
        time.sleep(0.2)
    cluster = gke.get_cluster(name=f"projects/{PROJECT}/locations/us-central1-c/clusters/script-cluster")
    print("cluster:", cluster.status.name, cluster.endpoint)

    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as ca:
        ca.write(base64.b64decode(cluster.master_auth.cluster_ca_certificate))
    conf = k8s.Configuration()
    conf.host = f"https://{cluster.endpoint}"
    conf.ssl_ca_cert = ca.name
    conf.api_key = {"authorization": token.access_token}
    conf.api_key_prefix = {"authorization": "Bearer"}
    core = k8s.CoreV1Api(k8s.ApiClient(conf))
    nodes = core.list_node()
    print("kubernetes nodes over TLS:", [n.metadata.name for n in nodes.items])

    # Cloud Storage: the emulator's control service tells where its JSON API listens.
    control = grpc.secure_channel(address, grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP))
    info = control.unary_unary(
        "/sdcluster.emulator.v1.Control/Info",
        request_serializer=lambda d: json.dumps(d).encode(),
        response_deserializer=lambda b: json.loads(b),
    )({})
    gcs = storage.Client(
        project=PROJECT,
        credentials=Bearer(owner),
        client_options={"api_endpoint": f"http://{info['storage']}"},
    )
    bucket = gcs.create_bucket("demo-proj-script", location="us-central1")
    bucket.blob("hello.txt").upload_from_string(b"hello from the official clients")
    print("object:", bucket.blob("hello.txt").download_as_bytes().decode())


if __name__ == "__main__":
    main(sys.argv[1])
