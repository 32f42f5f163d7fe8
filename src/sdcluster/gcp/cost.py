"""What the cluster costs per hour: a pure function of the configuration, what runs, and the prices.

``estimate(cfg, running, book)`` itemises the hourly cost of ``running`` (nodes per node pool, the
Service's forwarding rule, the model's stored bytes, the cluster itself): per pool vCPU, memory and
GPUs (Spot/preemptible or on-demand), boot disks and the nodes' external IPv4 addresses; the load
balancer's forwarding rule; GKE's cluster management fee; the model's Standard Storage. ``plan``
prices the configuration at its initial and maximum node counts (``plan_estimate``), ``status``
what runs now; pause/resume can price any other ``Running``. Egress is not estimated (it depends on
traffic) and the output says so, as it names every item it could not price.

Example::

    book = prices.from_snapshot()
    est = estimate(cfg, Running(nodes={"sd-node-pool": 1}, forwarding_rule=True, model_bytes=0), book)
    est["hourly_usd"], [i["name"] for i in est["items"]]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import prices
from .preflight import machine_family

if TYPE_CHECKING:
    from ..config import Config
    from .prices import PriceBook, Want

# Google's monthly figures count 730 hours in a month (the pricing calculator's "730 hours").
HOURS_PER_MONTH = 730.0
GIB = 2**30
# kubernetes-engine/pricing: "The GKE free tier provides $74.40 in monthly credits per billing account,
# which is equivalent to one free Autopilot or zonal Standard cluster per month."
GKE_FREE_TIER = "the free tier's $74.40/month credit per billing account covers one zonal cluster"
NOT_ESTIMATED = (
    "egress (internet data transfer out, the load balancer's data processing): it depends on traffic"
)

# GiB of memory per vCPU of the predefined shapes (Compute Engine measures memory in GB of 2**30 bytes).
_GIB_PER_VCPU = {
    "N1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9},
    **{f: {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0} for f in ("N2", "N2D", "E2", "N4")},
}


# The E2 shared-core types are billed for a fraction of a vCPU (compute/vm-instance-pricing, "E2
# shared-core machine types": e2-micro 0.25, e2-small 0.5, e2-medium 1 vCPU) at the E2 vCPU rate.
_SHARED_CORE = {"e2-micro": (0.25, 1.0), "e2-small": (0.5, 2.0), "e2-medium": (1.0, 4.0)}


def machine_shape(machine_type: str) -> tuple[float, float] | None:
    """(billed vCPUs, GiB of memory) of a predefined N1/N2/N2D/N4/E2 machine type, else None."""
    if machine_type in _SHARED_CORE:
        return _SHARED_CORE[machine_type]
    m = re.fullmatch(r"([a-z0-9]+)-(standard|highmem|highcpu)-(\d+)", machine_type)
    if not m:
        return None
    ratio = _GIB_PER_VCPU.get(m.group(1).upper(), {}).get(m.group(2))
    return (int(m.group(3)), int(m.group(3)) * ratio) if ratio else None


@dataclass(frozen=True)
class Pool:
    """What one node pool's nodes are made of."""

    name: str
    machine_type: str
    spot: bool  # Spot or (legacy) preemptible: both are priced by the Catalog's "Spot Preemptible" SKUs
    disk_type: str
    disk_gb: int
    accelerator_type: str
    accelerator_count: int
    initial: int
    most: int
    label: str = ""  # how its items are named: "" (the serving pool) or "system pool "


def pools(cfg: Config) -> list[Pool]:
    """The serving pool, then the system pool (``gke.system_config``) when there is one."""
    from .resources.gke import system_config

    def pool(c: Any, label: str) -> Pool:
        return Pool(
            c.node_pool,
            c.machine_type,
            c.spot or c.preemptible,
            c.disk_type,
            c.disk_size_gb,
            c.accelerator_type or "",
            c.accelerator_count if c.accelerator_type else 0,
            c.initial_nodes,
            c.max_nodes,
            label,
        )

    out = [pool(cfg.cluster, "")]
    if cfg.cluster.system_pool:
        out.append(pool(system_config(cfg).cluster, "system pool "))
    return out


def split_nodes(cfg: Config, total: int) -> dict[str, int]:
    """GKE reports the cluster's node count: the system pool's are its fixed size, the rest serve."""
    ps = pools(cfg)
    system = {p.name: min(p.initial, total) for p in ps[1:]}
    return {ps[0].name: total - sum(system.values()), **system}


@dataclass(frozen=True)
class Running:
    """What runs (or would run): nodes per node pool, whether the Service's forwarding rule exists,
    the bytes of the model in the bucket, whether the cluster exists."""

    nodes: Mapping[str, int]
    forwarding_rule: bool
    model_bytes: int | None  # None: the bucket could not be read (or the model lives elsewhere)
    cluster: bool = True


# A usage unit, the hours one unit of it lasts (per-month units are spread over the month), its name.
_UNITS = {"h": (1.0, "hour"), "GiBy.h": (1.0, "GiB-hour"), "GiBy.mo": (HOURS_PER_MONTH, "GiB-month")}


class _Items:
    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self.items: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        description: str,
        quantity: float,
        unit: str,
        wants: list[Want | None],
        expected_unit: str,
        note: str = "",
        unpriced: str = "",
    ) -> None:
        found = self.book.first(wants)
        item: dict[str, Any] = {
            "name": name,
            "description": description,
            "quantity": round(quantity, 6),
            "unit": unit,
            "unit_price_usd": None,
            "price_unit": "",
            "hourly_usd": None,
            "sku": None,
            "note": note,
        }
        if found is not None and found[1].unit == expected_unit:
            price = found[1]
            hours, per = _UNITS[price.unit]
            item.update(
                unit_price_usd=price.usd,
                price_unit=f"{unit}-{per}" if price.unit == "h" else per,
                hourly_usd=round(quantity * price.usd / hours, 6),
                sku=price.sku,
            )
        else:
            got = f" (it is priced per {found[1].unit}, not {expected_unit})" if found else ""
            item["note"] = (unpriced or f"the {self.book.source} has no price for it") + got
        self.items.append(item)


def estimate(cfg: Config, running: Running, book: PriceBook) -> dict[str, Any]:
    """The itemised hourly cost of ``running`` under ``cfg``, priced from ``book`` (plain data)."""
    region, items = cfg.region, _Items(book)
    for pool in pools(cfg):
        n = int(running.nodes.get(pool.name, 0))
        family = machine_family(pool.machine_type)
        kind = "Spot" if pool.spot else "on-demand"
        shape = machine_shape(pool.machine_type)
        if shape is None:
            unknown = f"the vCPUs and memory of {pool.machine_type} are not known to the estimate"
            items.add(
                f"{pool.label}vCPU", f"{pool.machine_type} ({kind})", 0, "vCPU", [], "h", unpriced=unknown
            )
            items.add(f"{pool.label}memory", pool.machine_type, 0, "GiB", [], "GiBy.h", unpriced=unknown)
        else:
            cpus, gib = shape
            items.add(
                f"{pool.label}vCPU",
                f"{cpus:g} per node ({pool.machine_type}, {kind})",
                n * cpus,
                "vCPU",
                [prices.vcpu(family, spot=pool.spot, region=region)],
                "h",
            )
            items.add(
                f"{pool.label}memory",
                f"{gib:g} GiB per node",
                n * gib,
                "GiB",
                [prices.memory(family, spot=pool.spot, region=region)],
                "GiBy.h",
            )
        if pool.accelerator_count:
            items.add(
                f"{pool.label}GPUs",
                f"{pool.accelerator_count} {pool.accelerator_type} per node ({kind})",
                n * pool.accelerator_count,
                "GPU",
                [prices.gpu(pool.accelerator_type, spot=pool.spot, region=region)],
                "h",
            )
        items.add(
            f"{pool.label}boot disks",
            f"{pool.disk_gb} GiB {pool.disk_type} per node",
            n * pool.disk_gb,
            "GiB",
            [prices.disk(pool.disk_type, region=region)],
            "GiBy.mo",
        )
        items.add(
            f"{pool.label}node external IPv4 addresses",
            f"1 per node ({'Spot VMs' if pool.spot else 'standard VMs'})",
            n,
            "address",
            [prices.external_ip(spot=pool.spot)],
            "h",
        )
    rule_wants = prices.forwarding_rule(region=region)
    rule = book.first(rule_wants)
    items.add(
        "load balancer forwarding rule",
        "1 (the Service's external passthrough load balancer)" if running.forwarding_rule else "none yet",
        1 if running.forwarding_rule else 0,
        "rule",
        list(rule_wants),
        "h",
        note=f"at the global forwarding-rule rate (the {book.source} has no regional one)"
        if rule is not None and rule[0] is rule_wants[-1]
        else "",
    )
    items.add(
        "GKE cluster management fee",
        "1 zonal cluster" if running.cluster else "no cluster",
        1 if running.cluster else 0,
        "cluster",
        [prices.gke_fee(zonal=True)],
        "h",
        note=GKE_FREE_TIER,
    )
    if cfg.bucket.enabled:
        location = cfg.bucket_location.upper()
        stored = running.model_bytes
        gib = (stored or 0) / GIB
        items.add(
            "model storage",
            f"{gib:.2f} GiB Standard Storage in {location}" + ("" if stored else " (nothing stored yet)")
            if stored is not None
            else f"Standard Storage in {location}",
            gib,
            "GiB",
            [prices.bucket_storage(location)] if stored is not None else [],
            "GiBy.mo",
            unpriced="" if stored is not None else "the model's size could not be read from the bucket",
        )
    return _totals(items.items, book, sum(int(n) for n in running.nodes.values()))


def _totals(items: list[dict[str, Any]], book: PriceBook, nodes: int) -> dict[str, Any]:
    hourly = round(sum(i["hourly_usd"] for i in items if i["hourly_usd"] is not None), 6)
    return {
        "nodes": nodes,
        "hourly_usd": hourly,
        "monthly_usd": round(hourly * HOURS_PER_MONTH, 2),
        "items": items,
        "not_priced": [i["name"] for i in items if i["hourly_usd"] is None],
        "not_estimated": [NOT_ESTIMATED],
        "prices_as_of": book.as_of,
        "source": book.source,
        "source_note": book.why_snapshot,
    }


def plan_estimate(cfg: Config, book: PriceBook, model_bytes: int | None) -> dict[str, Any]:
    """The configuration's cost while running, at its initial node count and at its maximum: each
    item's ``hourly_usd`` (initial) and ``max_hourly_usd``, and both totals."""
    first = {p.name: p.initial for p in pools(cfg)}
    most = {p.name: p.most for p in pools(cfg)}
    low = estimate(cfg, Running(first, True, model_bytes), book)
    high = estimate(cfg, Running(most, True, model_bytes), book)
    for item, at_max in zip(low["items"], high["items"], strict=True):
        item["max_hourly_usd"] = at_max["hourly_usd"]
    return {**low, "max": {k: high[k] for k in ("nodes", "hourly_usd", "monthly_usd")}}
