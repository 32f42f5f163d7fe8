"""The Cloud Billing Catalog (``google.cloud.billing.v1.CloudCatalog``): ListServices and ListSkus,
served from the price snapshot shipped with sdcluster (``protocol.price_snapshot()``), on the gRPC
port and under ``/cloudbilling/`` on the REST port.

Public prices: any authenticated caller may read them (no IAM permission, no project). The knob
``billing_catalog=False`` makes the API unreachable (every call UNAVAILABLE), so the product's
fallback to its own snapshot can be seen and tested.

Example::

    client = billing_v1.CloudCatalogClient(transport=...)      # as tests/helpers.factory builds it
    [s.display_name for s in client.list_services()]           # ['Compute Engine', 'Networking', ...]
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import grpc
from google.cloud import billing_v1

from ..protocol import price_snapshot
from . import grpcutil
from .core import EmulatorError, World, invalid, not_found

# cloud_catalog.proto: "Requested page size. Defaults to 5000."; catalog-api how-to: at most 5000 a page.
DEFAULT_PAGE_SIZE = 5000
SERVICE = "google.cloud.billing.v1.CloudCatalog"


@cache
def _catalog() -> tuple[tuple[Any, ...], dict[str, tuple[Any, ...]]]:
    """(services, SKUs by service name) of the snapshot, as protos (parsed once)."""
    doc = price_snapshot()
    services = tuple(billing_v1.Service.from_json(json.dumps(s)) for s in doc["services"])
    skus: dict[str, list[Any]] = {s.name: [] for s in services}
    for raw in doc["skus"]:
        parent = raw["name"].rsplit("/skus/", 1)[0]
        skus.setdefault(parent, []).append(billing_v1.Sku.from_json(json.dumps(raw)))
    return services, {k: tuple(v) for k, v in skus.items()}


def _page(items: tuple[Any, ...], page_size: int, page_token: str) -> tuple[list[Any], str]:
    size = min(page_size or DEFAULT_PAGE_SIZE, DEFAULT_PAGE_SIZE)  # "limited to 5000 SKUs per page"
    if size < 0:
        raise invalid(f"Invalid page size: {page_size}")
    try:
        start = int(page_token or "0")
    except ValueError:
        raise invalid(f"Invalid page token: {page_token}") from None
    end = start + size
    return list(items[start:end]), (str(end) if end < len(items) else "")


def _reachable(world: World) -> None:
    if not world.knobs.billing_catalog:
        raise EmulatorError(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")


def services(world: World) -> list[grpcutil.Service]:
    """The CloudCatalog service bound to ``world`` (gRPC and REST)."""

    def list_services(request: Any, caller: str) -> Any:
        _reachable(world)
        page, token = _page(_catalog()[0], request.page_size, request.page_token)
        return billing_v1.ListServicesResponse(services=page, next_page_token=token)

    def list_skus(request: Any, caller: str) -> Any:
        _reachable(world)
        if not re.fullmatch(r"services/[^/]+", request.parent):
            raise invalid(f"Invalid resource field value in the request: parent {request.parent!r}")
        if request.currency_code not in ("", "USD"):
            raise invalid(f"currency {request.currency_code} is not emulated (the snapshot is in USD)")
        skus = _catalog()[1].get(request.parent)
        if skus is None:
            raise not_found(f"Service {request.parent} not found.")
        page, token = _page(skus, request.page_size, request.page_token)
        return billing_v1.ListSkusResponse(skus=page, next_page_token=token)

    m = grpcutil.method
    methods = {
        "ListServices": m(billing_v1.ListServicesRequest, billing_v1.ListServicesResponse, list_services),
        "ListSkus": m(billing_v1.ListSkusRequest, billing_v1.ListSkusResponse, list_skus),
    }
    return [grpcutil.Service(SERVICE, "cloudbilling", methods)]
