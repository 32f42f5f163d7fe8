"""Prices of what sdcluster runs: Cloud Billing Catalog SKUs, from the API or from the shipped snapshot.

The Catalog lists every public SKU of a service (``CloudCatalogClient.list_services`` / ``list_skus``);
sdcluster keeps the SKUs an estimate can use (machine families' Core/Ram, GPUs, PD capacity, node
external IPs, forwarding rules, GKE's cluster fee, Cloud Storage's Standard Storage) in the
Catalog's own JSON shape. When the API does not answer (no network, the Cloud Billing API not
enabled, no credentials), the price snapshot shipped with sdcluster stands in, and the book says so.

Example::

    book = price_book(factory)                   # the API, else the snapshot
    book.source                                  # 'Cloud Billing Catalog API' or 'price snapshot of 2026-12-01'
    book.price(vcpu("N2", spot=True, region="us-central1"))   # Price(usd=0.01499, unit='h', ...)
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import retry
from ..errors import SdclusterError, translate
from ..protocol import price_snapshot

if TYPE_CHECKING:
    from .clients import ClientFactory

CATALOG = "Cloud Billing Catalog API"
# The Catalog's services whose SKUs an estimate uses, by display name (ListServices gives the ids).
SERVICES = ("Compute Engine", "Networking", "Kubernetes Engine", "Cloud Storage")
# One Catalog call must not hold a plan up for long: a dead API falls back to the snapshot.
CALL_TIMEOUT_S = 60.0
CALL_ATTEMPTS = 2

# How the Catalog names each machine family's Core/Ram SKUs ("N2 Instance Core running in Americas").
FAMILY_WORDS = {
    "N1": "N1 Predefined",
    "N2": "N2",
    "N2D": "N2D AMD",
    "N4": "N4",
    "E2": "E2",
    "C2": "Compute optimized",
    "C2D": "C2D AMD",
    "C3": "C3",
    "T2D": "T2D AMD",
    "G2": "G2",
    "A2": "A2",
}
# ... and each GPU's ("Nvidia Tesla T4 GPU running in Americas", "... GPU attached to Spot ...").
GPU_WORDS = {
    "nvidia-tesla-t4": "Nvidia Tesla T4",
    "nvidia-tesla-v100": "Nvidia Tesla V100",
    "nvidia-tesla-p4": "Nvidia Tesla P4",
    "nvidia-tesla-p100": "Nvidia Tesla P100",
    "nvidia-l4": "Nvidia L4",
    "nvidia-tesla-a100": "Nvidia Tesla A100",
    "nvidia-a100-80gb": "Nvidia Tesla A100 80GB",
}
DISK_WORDS = {
    "pd-balanced": "Balanced PD Capacity",
    "pd-standard": "Storage PD Capacity",
    "pd-ssd": "SSD backed PD Capacity",
}
GLOBAL = "global"


@dataclass(frozen=True)
class Want:
    """Which SKU prices an item: its description (``re.match``), usage type, and the service
    regions to look in, best first (e.g. the region, then "global")."""

    pattern: str
    usage: str = "OnDemand"
    regions: tuple[str, ...] = (GLOBAL,)
    group: str | None = None  # the category's resourceGroup, when the description is not enough


@dataclass(frozen=True)
class Price:
    usd: float  # per usage unit
    unit: str  # the SKU's usageUnit: "h", "GiBy.h", "GiBy.mo"
    sku: str  # its resource name, services/.../skus/...
    description: str
    region: str  # the service region it matched in


def _usage(spot: bool) -> str:
    return "Preemptible" if spot else "OnDemand"


def vcpu(family: str, *, spot: bool, region: str) -> Want | None:
    word = FAMILY_WORDS.get(family)
    if word is None:
        return None
    prefix = "Spot Preemptible " if spot else ""
    return Want(rf"{prefix}{re.escape(word)} Instance Core running in ", _usage(spot), (region,))


def memory(family: str, *, spot: bool, region: str) -> Want | None:
    word = FAMILY_WORDS.get(family)
    if word is None:
        return None
    prefix = "Spot Preemptible " if spot else ""
    return Want(rf"{prefix}{re.escape(word)} Instance Ram running in ", _usage(spot), (region,))


def gpu(accelerator: str, *, spot: bool, region: str) -> Want | None:
    word = GPU_WORDS.get(accelerator)
    if word is None:
        return None
    how = "attached to Spot" if spot else "running"
    return Want(rf"{re.escape(word)} GPU {how}", _usage(spot), (region,))


def disk(disk_type: str, *, region: str) -> Want | None:
    word = DISK_WORDS.get(disk_type)
    return Want(re.escape(word), "OnDemand", (region,)) if word else None


def external_ip(*, spot: bool) -> Want:
    vm = "Spot Preemptible VM" if spot else "Standard VM"
    return Want(rf"External IP Charge on a {vm}", "OnDemand")


def forwarding_rule(*, region: str) -> list[Want]:
    """The regional rule's SKU; the global one's rate when the book has no regional price."""
    return [
        Want(
            r"(Cloud Load Balancer Forwarding Rule Minimum|Network Load Balancing: Forwarding Rule Minimum)",
            regions=(region,),
        ),
        Want(r"Cloud Load Balancer Forwarding Rule Minimum Global"),
    ]


def gke_fee(*, zonal: bool) -> Want:
    return Want("Zonal Kubernetes Clusters" if zonal else "Regional Kubernetes Clusters")


def bucket_storage(location: str) -> Want:
    """Standard Storage in a bucket location (a region, or a multi-region such as US)."""
    loc = location.lower()
    group = "RegionalStorage" if "-" in loc else "MultiRegionalStorage"
    return Want("Standard Storage", regions=(loc,), group=group)


# What a book keeps of a service's SKUs: anything one of the Wants above can match.
_KEEP = re.compile(
    "|".join(
        [
            r"(Spot Preemptible )?("
            + "|".join(re.escape(w) for w in FAMILY_WORDS.values())
            + r") Instance (Core|Ram) running in ",
            "(" + "|".join(re.escape(w) for w in GPU_WORDS.values()) + ") GPU (running|attached to Spot)",
            "(" + "|".join(re.escape(w) for w in DISK_WORDS.values()) + ")",
            r"External IP Charge on a ",
            r".*Forwarding Rule Minimum",
            r"(Zonal|Regional) Kubernetes Clusters",
            r"Standard Storage",
        ]
    )
)


def kept(sku: dict[str, Any]) -> bool:
    return bool(_KEEP.match(str(sku.get("description", ""))))


def unit_price(sku: dict[str, Any]) -> float | None:
    """The list price per usage unit: the first tier with a price (a free first tier is skipped)."""
    infos = sku.get("pricingInfo") or []
    if not infos:
        return None
    rates = (infos[-1].get("pricingExpression") or {}).get("tieredRates") or []
    money = [r.get("unitPrice") or {} for r in rates]
    prices = [int(m.get("units") or 0) + float(m.get("nanos") or 0) / 1e9 for m in money]
    paid = [p for p in prices if p > 0]
    if paid:
        return paid[0]
    return 0.0 if prices else None


@dataclass
class PriceBook:
    """Catalog SKUs (JSON shape), where they came from and when; ``price(want)`` finds one."""

    skus: list[dict[str, Any]]
    source: str  # "Cloud Billing Catalog API" or "price snapshot of YYYY-MM-DD"
    as_of: str  # YYYY-MM-DD
    why_snapshot: str = ""  # why the API was not used (empty when it was)

    def price(self, want: Want) -> Price | None:
        pattern = re.compile(want.pattern)
        for region in want.regions:
            for s in self.skus:
                category = s.get("category") or {}
                if (
                    region in (s.get("serviceRegions") or [])
                    and category.get("usageType") == want.usage
                    and (want.group is None or category.get("resourceGroup") == want.group)
                    and pattern.match(str(s.get("description", "")))
                ):
                    usd = unit_price(s)
                    if usd is None:
                        continue
                    unit = str(
                        ((s.get("pricingInfo") or [{}])[-1].get("pricingExpression") or {}).get(
                            "usageUnit", ""
                        )
                    )
                    return Price(usd, unit, str(s.get("name", "")), str(s.get("description", "")), region)
        return None

    def first(self, wants: Iterable[Want | None]) -> tuple[Want, Price] | None:
        for w in wants:
            if w is not None:
                p = self.price(w)
                if p is not None:
                    return w, p
        return None


def from_snapshot(why: str = "") -> PriceBook:
    doc = price_snapshot()
    as_of = str(doc["as_of"])
    return PriceBook(list(doc["skus"]), f"price snapshot of {as_of}", as_of, why)


def fetch_catalog(
    factory: ClientFactory, services: Iterable[str] = SERVICES
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(services, kept SKUs) from the Cloud Billing Catalog API, in its JSON shape."""
    from google.cloud import billing_v1

    client = factory.billing_catalog()
    wanted = set(services)

    def list_services() -> list[Any]:
        return [s for s in client.list_services(timeout=CALL_TIMEOUT_S) if s.display_name in wanted]

    found = retry.call(list_services, attempts=CALL_ATTEMPTS)

    def service_skus(parent: str) -> list[dict[str, Any]]:
        def list_skus() -> list[Any]:
            request = billing_v1.ListSkusRequest(parent=parent, currency_code="USD")
            return list(client.list_skus(request=request, timeout=CALL_TIMEOUT_S))

        return [
            j
            for j in (_json(billing_v1.Sku, s) for s in retry.call(list_skus, attempts=CALL_ATTEMPTS))
            if kept(j)
        ]

    # One service's pages follow each other; the services' do not wait for one another.
    with ThreadPoolExecutor(max_workers=max(1, len(found)), thread_name_prefix="prices") as pool:
        skus = [sku for chunk in pool.map(service_skus, [s.name for s in found]) for sku in chunk]
    return [_json(billing_v1.Service, s) for s in found], skus


def _json(cls: Any, message: Any) -> dict[str, Any]:
    """A Catalog message as the REST API writes it (camelCase, fields at their defaults left out)."""
    return json.loads(cls.to_json(message, always_print_fields_with_no_presence=False, indent=None))  # type: ignore[no-any-return]


def from_catalog(factory: ClientFactory) -> PriceBook:
    _services, skus = fetch_catalog(factory)
    return PriceBook(skus, CATALOG, dt.datetime.now(dt.UTC).date().isoformat())


def price_book(factory: ClientFactory) -> PriceBook:
    """The Catalog API's prices, else the snapshot's, naming why."""
    try:
        return from_catalog(factory)
    except Exception as e:  # whatever the client raises: an estimate never breaks a plan
        reason = (e if isinstance(e, SdclusterError) else translate(e)).message.splitlines()[0].rstrip(".")
        return from_snapshot(f"the {CATALOG} did not answer: {reason}")
