"""The emulated Cloud Billing Catalog through google-cloud-billing's own clients (gRPC and REST)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.cloud import billing_v1

from sdcluster.gcp.clients import emulator_credentials
from sdcluster.protocol import price_snapshot

from ..helpers import factory

COMPUTE = "services/6F81-5844-456A"


def test_services_and_skus_page_through_the_snapshot(emu: Any) -> None:
    client = factory(emu).billing_catalog()
    # page_size 1: the client's pager follows next_page_token until it is empty.
    names = [s.display_name for s in client.list_services(request={"page_size": 1})]
    assert names == ["Compute Engine", "Networking", "Kubernetes Engine", "Cloud Storage"]
    pages = list(client.list_skus(request={"parent": COMPUTE, "page_size": 5}).pages)
    skus = [s for p in pages for s in p.skus]
    assert len(pages) > 1 and all(len(p.skus) <= 5 for p in pages)
    shipped = [s for s in price_snapshot()["skus"] if s["name"].startswith(COMPUTE + "/")]
    assert [s.name for s in skus] == [s["name"] for s in shipped]
    n2 = next(s for s in skus if s.description == "Spot Preemptible N2 Instance Core running in Americas")
    assert n2.category.usage_type == "Preemptible" and list(n2.service_regions) == ["us-central1"]
    assert n2.pricing_info[0].pricing_expression.tiered_rates[0].unit_price.nanos == 14_990_000
    with pytest.raises(gexc.InvalidArgument):
        list(client.list_skus(parent="projects/demo-proj"))


def test_anyone_authenticated_reads_prices_and_nobody_else(emu: Any) -> None:
    stranger = factory(emu, "user:stranger@example.org").billing_catalog()  # no role anywhere
    assert len(list(stranger.list_services())) == 4
    opts = ClientOptions(api_endpoint=emu.address)
    import grpc

    channel = grpc.secure_channel(
        emu.address, grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    anonymous = billing_v1.CloudCatalogClient(
        transport=billing_v1.services.cloud_catalog.transports.CloudCatalogGrpcTransport(channel=channel),
        client_options=opts,
    )
    with pytest.raises(gexc.Unauthenticated):
        list(anonymous.list_services())


def test_the_rest_paths_serve_the_same_catalog(emu: Any) -> None:
    opts = ClientOptions(api_endpoint=f"http://{emu.http_address}/cloudbilling")
    client = billing_v1.CloudCatalogClient(
        credentials=emulator_credentials("user:demo@example.com"), client_options=opts, transport="rest"
    )
    skus = list(client.list_skus(parent="services/CCD8-9BF1-090E"))
    assert [s.description for s in skus] == ["Zonal Kubernetes Clusters"]
    assert (
        json.loads(billing_v1.Sku.to_json(skus[0]))["pricingInfo"][0]["pricingExpression"]["usageUnit"] == "h"
    )


def test_an_unreachable_catalog_answers_unavailable(make_emu: Any) -> None:
    emu = make_emu(billing_catalog=False)
    with pytest.raises(gexc.ServiceUnavailable):
        list(factory(emu).billing_catalog().list_services())
