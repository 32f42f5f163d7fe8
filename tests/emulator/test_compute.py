"""Compute Engine on the emulator, through google-cloud-compute's REST clients (what sdcluster will
read quotas, machine types, networks and load balancers with).

Quotas' usage comes from what the emulated world runs: GKE node pools (vCPUs per family, boot
disks, node IPs, GPUs) and the forwarding rules of LoadBalancer Services.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.cloud import compute_v1

from sdcluster.emulator import compute
from sdcluster.gcp.clients import emulator_credentials

from ..helpers import factory

PROJECT = "demo-proj"
OWNER = "user:demo@example.com"
REGION = "us-central1"
ZONE = "us-central1-c"


def clients(emu: Any, member: str = OWNER) -> Any:
    """``clients(emu).regions`` ...: google-cloud-compute REST clients pointed at the emulator."""
    opts = ClientOptions(api_endpoint=f"http://{emu.http_address}/compute")
    creds = emulator_credentials(member)

    class Clients:
        def __getattr__(self, name: str) -> Any:
            cls = {
                "regions": compute_v1.RegionsClient,
                "projects": compute_v1.ProjectsClient,
                "zones": compute_v1.ZonesClient,
                "machine_types": compute_v1.MachineTypesClient,
                "networks": compute_v1.NetworksClient,
                "forwarding_rules": compute_v1.ForwardingRulesClient,
                "addresses": compute_v1.AddressesClient,
            }[name]
            return cls(credentials=creds, client_options=opts, transport="rest")

    return Clients()


def quotas(region: Any) -> dict[str, tuple[float, float]]:
    return {q.metric: (q.limit, q.usage) for q in region.quotas}


def run_cluster(emu: Any, name: str, location: str, pools: list[dict[str, Any]]) -> str:
    """A RUNNING GKE cluster (through the official gRPC client); returns its key."""

    gke = factory(emu, OWNER).cluster_manager()
    parent = f"projects/{PROJECT}/locations/{location}"
    op = gke.create_cluster(parent=parent, cluster={"name": name, "node_pools": pools})
    emu_wait(emu, gke, f"{parent}/operations/{op.name}")
    return f"{parent}/clusters/{name}"


def emu_wait(emu: Any, gke: Any, op_name: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while gke.get_operation(name=op_name).status.name != "DONE":
        assert time.monotonic() < deadline, "operation did not finish"
        time.sleep(0.05)


def pool(name: str, machine: str, nodes: int = 1, **config: Any) -> dict[str, Any]:
    return {"name": name, "initial_node_count": nodes, "config": {"machine_type": machine, **config}}


def test_quotas_count_what_the_world_runs(emu: Any) -> None:
    c = clients(emu)
    fresh = quotas(c.regions.get(project=PROJECT, region=REGION))
    assert fresh["N2_CPUS"] == (8.0, 0.0) and fresh["CPUS"] == (24.0, 0.0)

    emu.world.project(PROJECT)["quotas"]["GPUS_ALL_REGIONS"] = 1.0
    t4 = {"accelerators": [{"accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}]}
    run_cluster(
        emu,
        "mixed",
        ZONE,
        [
            pool("n2", "n2-standard-4", nodes=1),  # 4 N2 vCPUs, 100 GB pd-balanced (SSD quota)
            pool("e2", "e2-standard-2", nodes=2, disk_type="pd-standard", disk_size_gb=50),  # CPUS
            pool("gpu", "n1-standard-4", nodes=1, **t4),  # N1 counts under CPUS too
        ],
    )
    compute.allocate_lb(emu.world, PROJECT, REGION, "k", "0b1e2c3d-aaaa-bbbb-cccc-111122223333")

    used = quotas(c.regions.get(project=PROJECT, region=REGION))
    assert used["N2_CPUS"] == (8.0, 4.0)
    assert used["CPUS"] == (24.0, 8.0)  # 2 x e2-standard-2 + 1 x n1-standard-4
    assert used["SSD_TOTAL_GB"][1] == 200.0  # pd-balanced boot disks of the n2 and gpu nodes
    assert used["DISKS_TOTAL_GB"][1] == 100.0  # 2 x 50 GB pd-standard
    assert used["IN_USE_ADDRESSES"][1] == 5.0  # four nodes and one load balancer
    assert used["NVIDIA_T4_GPUS"][1] == 1.0
    other = quotas(c.regions.get(project=PROJECT, region="europe-west4"))
    assert other["CPUS"] == (24.0, 0.0) and other["IN_USE_ADDRESSES"][1] == 0.0
    project = {q.metric: (q.limit, q.usage) for q in c.projects.get(project=PROJECT).quotas}
    assert project["CPUS_ALL_REGIONS"] == (32.0, 12.0)
    assert project["GPUS_ALL_REGIONS"] == (1.0, 1.0)


def test_zones_and_machine_types_as_compute_answers(emu: Any) -> None:
    c = clients(emu)
    zone = c.zones.get(project=PROJECT, zone=ZONE)
    assert zone.region.endswith(f"/regions/{REGION}") and zone.status == "UP"
    assert ZONE in {z.name for z in c.zones.list(project=PROJECT)}
    with pytest.raises(gexc.NotFound):
        c.zones.get(project=PROJECT, zone="us-central1-z")

    mt = c.machine_types.get(project=PROJECT, zone=ZONE, machine_type="n2-standard-4")
    assert (mt.guest_cpus, mt.memory_mb) == (4, 16384)
    with pytest.raises(gexc.NotFound) as err:  # a typo is a 404 naming the resource
        c.machine_types.get(project=PROJECT, zone=ZONE, machine_type="n2-standart-4")
    assert f"'projects/{PROJECT}/zones/{ZONE}/machineTypes/n2-standart-4' was not found" in str(err.value)
    listed = {m.name for m in c.machine_types.list(project=PROJECT, zone=ZONE)}
    assert {"n2-standard-4", "e2-medium", "g2-standard-4"} <= listed
    # A2 machines carry A100 GPUs, which us-central1-c has but us-east1-c does not.
    assert "a2-highgpu-1g" not in {m.name for m in c.machine_types.list(project=PROJECT, zone="us-east1-c")}


def test_a_project_has_a_default_network_unless_its_organisation_skips_it(
    make_emu: Callable[..., Any],
) -> None:
    emu = make_emu()
    (net,) = clients(emu).networks.list(project=PROJECT)
    assert (net.name, net.auto_create_subnetworks) == ("default", True)
    assert (
        clients(emu)
        .networks.get(project=PROJECT, network="default")
        .self_link.endswith(f"/projects/{PROJECT}/global/networks/default")
    )

    bare = make_emu(default_network=False)
    assert list(clients(bare).networks.list(project=PROJECT)) == []
    with pytest.raises(gexc.NotFound, match="global/networks/default' was not found"):
        clients(bare).networks.get(project=PROJECT, network="default")


def test_a_load_balancer_rule_outlives_its_cluster_unless_its_service_went_first(emu: Any) -> None:
    fr = clients(emu).forwarding_rules
    key = run_cluster(emu, "lb", ZONE, [pool("p", "e2-medium")])
    kept, released = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    ip = compute.allocate_lb(emu.world, PROJECT, REGION, key, kept, service_name="default/tf-serving")
    assert compute.allocate_lb(emu.world, PROJECT, REGION, key, kept) == ip  # idempotent
    compute.allocate_lb(emu.world, PROJECT, REGION, key, released)
    compute.release_lb(emu.world, PROJECT, REGION, key, released)  # its Service was deleted

    gke = factory(emu, OWNER).cluster_manager()
    op = gke.delete_cluster(name=key)
    emu_wait(emu, gke, f"projects/{PROJECT}/locations/{ZONE}/operations/{op.name}")

    (rule,) = fr.list(project=PROJECT, region=REGION)
    assert rule.I_p_address == ip and '"kubernetes.io/service-name":"default/tf-serving"' in rule.description
    assert fr.get(project=PROJECT, region=REGION, forwarding_rule=rule.name).name == rule.name
    scopes = {scope: [r.name for r in v.forwarding_rules] for scope, v in fr.aggregated_list(project=PROJECT)}
    assert scopes[f"regions/{REGION}"] == [rule.name] and scopes["regions/europe-west4"] == []
    assert list(clients(emu).addresses.list(project=PROJECT, region=REGION)) == []  # ephemeral IPs only

    fr.delete(project=PROJECT, region=REGION, forwarding_rule=rule.name).result(timeout=10)
    assert list(fr.list(project=PROJECT, region=REGION)) == []
    with pytest.raises(gexc.NotFound):
        fr.delete(project=PROJECT, region=REGION, forwarding_rule=rule.name)


def test_callers_need_compute_permissions_and_the_api(make_emu: Callable[..., Any]) -> None:
    emu = make_emu()
    with pytest.raises(
        gexc.Forbidden,
        match=re.escape(
            "Required 'compute.regions.get' permission for 'projects/demo-proj/regions/us-central1'"
        ),
    ):
        clients(emu, "user:stranger@example.com").regions.get(project=PROJECT, region=REGION)
    emu.world.project(PROJECT)["enabled_services"].remove("compute.googleapis.com")
    with pytest.raises(gexc.Forbidden, match="Compute Engine API has not been used in project") as err:
        clients(emu).regions.get(project=PROJECT, region=REGION)
    assert err.value.reason == "SERVICE_DISABLED"
