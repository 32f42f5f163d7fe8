"""The cost model (gcp/cost.py) priced from the shipped snapshot: what a user reads in the estimate."""

from __future__ import annotations

from typing import Any

import pytest

import sdcluster
from sdcluster.engine.display import cost_lines
from sdcluster.gcp import prices
from sdcluster.gcp.cost import HOURS_PER_MONTH, Running, estimate, plan_estimate


def config(**cluster: Any) -> sdcluster.Config:
    return sdcluster.Config.build(project="demo-proj", user="user:demo@example.com", cluster=cluster)


def item(est: dict[str, Any], name: str) -> dict[str, Any]:
    return next(i for i in est["items"] if i["name"] == name)


BOOK = prices.from_snapshot()
RUNNING = Running({"sd-node-pool": 1}, forwarding_rule=True, model_bytes=5 * 2**30)


def test_spot_nodes_are_priced_below_on_demand_ones() -> None:
    spot = estimate(config(spot=True), RUNNING, BOOK)
    regular = estimate(config(spot=False), RUNNING, BOOK)
    for name in ("vCPU", "memory"):
        assert 0 < item(spot, name)["hourly_usd"] < item(regular, name)["hourly_usd"]
        assert item(spot, name)["sku"] != item(regular, name)["sku"]
    assert "Spot" in item(spot, "vCPU")["description"] and "on-demand" in item(regular, "vCPU")["description"]
    assert spot["hourly_usd"] < regular["hourly_usd"]
    # Legacy preemptible VMs are priced by the same "Spot Preemptible" SKUs as Spot VMs.
    legacy = estimate(config(spot=False, preemptible=True), RUNNING, BOOK)
    assert item(legacy, "vCPU")["sku"] == item(spot, "vCPU")["sku"]


def test_items_add_up_to_the_totals_at_the_initial_and_the_maximum_node_count() -> None:
    est = plan_estimate(config(initial_nodes=1, max_nodes=3), BOOK, model_bytes=5 * 2**30)
    priced = [i for i in est["items"] if i["hourly_usd"] is not None]
    assert sum(i["hourly_usd"] for i in priced) == pytest.approx(est["hourly_usd"], abs=1e-5)
    assert sum(i["max_hourly_usd"] for i in priced) == pytest.approx(est["max"]["hourly_usd"], abs=1e-5)
    assert est["monthly_usd"] == pytest.approx(est["hourly_usd"] * HOURS_PER_MONTH, abs=0.01)
    # The serving pool's 1..3 nodes, and the system pool's one node (its size is fixed).
    assert (est["nodes"], est["max"]["nodes"]) == (2, 4)
    system = item(est, "system pool vCPU")
    assert system["max_hourly_usd"] == system["hourly_usd"] > 0 and "e2-medium" in system["description"]
    # Per-node items triple at three nodes; the cluster fee and the forwarding rule do not.
    assert item(est, "vCPU")["max_hourly_usd"] == pytest.approx(3 * item(est, "vCPU")["hourly_usd"])
    fee = item(est, "GKE cluster management fee")
    assert fee["max_hourly_usd"] == fee["hourly_usd"] == 0.10
    assert "free tier" in fee["note"] and "one zonal cluster" in fee["note"]
    # Each priced item says what it is priced at, from which SKU.
    assert item(est, "boot disks")["unit_price_usd"] == 0.10 and item(est, "boot disks")["sku"]
    assert item(est, "model storage")["quantity"] == 5
    assert est["source"] == "price snapshot of 2026-12-01" and est["prices_as_of"] == "2026-12-01"
    assert est["not_estimated"] and "egress" in est["not_estimated"][0]


def test_what_has_no_price_is_named_and_left_out_of_the_total() -> None:
    cfg = config(machine_type="n1-standard-8", accelerator_type="nvidia-tesla-t4", accelerator_count=1)
    est = estimate(cfg, RUNNING, BOOK)
    assert "GPUs" in est["not_priced"]
    assert item(est, "GPUs")["note"] == "the price snapshot of 2026-12-01 has no price for it"
    assert item(est, "vCPU")["hourly_usd"] is not None  # the N1 cores still are
    # Spot VMs' external IPs have no published price in the snapshot either.
    assert "node external IPv4 addresses" in est["not_priced"]
    text = "\n".join(t for _, t in cost_lines(est, now=True))
    assert "not priced  GPUs: 1 nvidia-tesla-t4 per node (Spot)" in text
    unknown = estimate(config(machine_type="g2-standard-8"), RUNNING, BOOK)
    assert (
        item(unknown, "vCPU")["note"] == "the vCPUs and memory of g2-standard-8 are not known to the estimate"
    )


def test_what_does_not_run_costs_nothing() -> None:
    idle = estimate(
        config(), Running({"sd-node-pool": 0}, forwarding_rule=False, model_bytes=0, cluster=False), BOOK
    )
    assert idle["hourly_usd"] == 0 and idle["nodes"] == 0
    assert item(idle, "GKE cluster management fee")["description"] == "no cluster"
