"""Prices in the plan and in status, on the emulator: the Cloud Billing Catalog API when it answers,
the shipped snapshot (named) when it does not; README's figures are the plan's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sdcluster
from sdcluster import retry
from sdcluster.gcp.cost import HOURS_PER_MONTH
from sdcluster.protocol import price_snapshot
from sdcluster.ui.cli import app

from ..helpers import factory

README = Path(__file__).resolve().parents[2] / "README.md"
PARENT = "projects/demo-proj/locations/us-central1-c"


def cli(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_plan_json_prices_the_plan_from_the_catalog_api(project: Callable[..., Any]) -> None:
    emu = project()
    r = cli(["plan", "--json"])
    assert r.exit_code == 0, r.output
    cost = json.loads(r.output)["cost"]
    assert {"hourly_usd", "monthly_usd", "items", "prices_as_of", "source"} <= set(cost)
    assert cost["source"] == "Cloud Billing Catalog API" and cost["source_note"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cost["prices_as_of"])
    assert cost["monthly_usd"] == pytest.approx(cost["hourly_usd"] * HOURS_PER_MONTH, abs=0.01)
    assert cost["max"]["nodes"] == 3 and cost["max"]["hourly_usd"] > cost["hourly_usd"] > 0
    names = [i["name"] for i in cost["items"]]
    assert names == [
        "vCPU",
        "memory",
        "boot disks",
        "node external IPv4 addresses",
        "system pool vCPU",
        "system pool memory",
        "system pool boot disks",
        "system pool node external IPv4 addresses",
        "load balancer forwarding rule",
        "GKE cluster management fee",
        "model storage",
    ]
    # The SKUs are the ones the emulated Catalog served (it serves the snapshot).
    served = {s["name"] for s in price_snapshot()["skus"]}
    assert {i["sku"] for i in cost["items"] if i["sku"]} <= served
    assert any(e.service == "cloudbilling" and e.method == "ListSkus" for e in emu.log.entries())
    text = cli(["plan"]).output
    assert "Cost: $" in text and "/hour while running ($" in text
    assert "Prices: Cloud Billing Catalog API, read " in text


def test_the_snapshot_stands_in_and_is_named_when_the_catalog_api_is_off(project: Callable[..., Any]) -> None:
    project(billing_catalog=False)
    r = cli(["plan"])
    assert r.exit_code == 0, r.output
    assert (
        "Prices: price snapshot of 2026-12-01, because the Cloud Billing Catalog API did not answer: "
        "The service is currently unavailable." in r.output
    )
    cost = json.loads(cli(["plan", "--json"]).output)["cost"]
    assert cost["source"] == "price snapshot of 2026-12-01" and cost["prices_as_of"] == "2026-12-01"
    assert cost["hourly_usd"] > 0


def test_status_shows_what_runs_now_and_at_what_rate(setup: Callable[..., Any]) -> None:
    emu, ws = setup()
    before = sdcluster.status(ws)["cost"]
    assert before["hourly_usd"] == 0 and before["nodes"] == 0  # nothing runs yet
    sdcluster.apply(sdcluster.plan(ws))
    now = sdcluster.status(ws)["cost"]
    planned = sdcluster.plan(ws).cost
    assert planned is not None
    # One serving node runs (the initial count) and the system pool's, with the Service's
    # forwarding rule and the cluster fee.
    assert now["nodes"] == 2
    assert now["hourly_usd"] == pytest.approx(planned["hourly_usd"], abs=1e-6)
    fee = next(i for i in now["items"] if i["name"] == "GKE cluster management fee")
    assert fee["hourly_usd"] == 0.10
    # What GKE reports is what status prices: two serving nodes cost more than one.
    pool = "projects/demo-proj/locations/us-central1-c/clusters/sd-cluster/nodePools/sd-node-pool"
    gke = factory(emu).cluster_manager()
    op = gke.set_node_pool_size(request={"name": pool, "node_count": 2})
    retry.until(
        lambda: (
            True if gke.get_operation(name=f"{PARENT}/operations/{op.name}").status.name == "DONE" else None
        ),
        timeout_s=30,
        what="the resize",
    )
    higher = sdcluster.status(ws)["cost"]
    assert higher["nodes"] == 3
    assert higher["hourly_usd"] == pytest.approx(planned["max"]["hourly_usd"], abs=1e-6)


def test_status_prints_the_rate(project: Callable[..., Any]) -> None:
    project()
    r = cli(["status"])
    assert r.exit_code == 0, r.output
    assert "Cost now: $0.0000/hour ($0.00/month) with 0 nodes" in r.output
    assert json.loads(cli(["status", "--json"]).output)["cost"]["hourly_usd"] == 0


def test_the_regenerated_snapshot_is_what_the_catalog_lists(
    make_emu: Callable[..., Any], tmp_path: Path
) -> None:
    emu = make_emu()
    out = tmp_path / "snapshot.json"
    r = subprocess.run(
        [sys.executable, "-m", "sdcluster.gcp.prices_snapshot", "--out", str(out), "--emulator", emu.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    shipped = price_snapshot()
    assert doc["skus"] == shipped["skus"] and doc["services"] == shipped["services"]
    assert doc["source"].startswith("Cloud Billing Catalog API")


def test_readme_shows_the_default_clusters_figures_as_the_plan_prints_them(
    project: Callable[..., Any],
) -> None:
    project(billing_catalog=False)  # README shows the snapshot's figures, as a plan without the API does
    printed = cli(["plan"]).output
    block = printed[printed.index("Cost: $") :].rstrip("\n")
    readme = README.read_text(encoding="utf-8")
    assert block in readme, block
