"""What the emulator holds, as plain data to compare runs field by field, and as state addresses.

``world_view(emu)`` keeps everything a user would notice (service accounts, every policy's bindings,
clusters and pools with their config, operations by kind, buckets with their IAM policy, Kubernetes
objects) and drops what legitimately differs between two correct runs: ids, timestamps, etags,
resource versions, endpoints/CAs and load balancer IPs (allocated per emulator).

``world_addresses(view)`` names what exists with sdcluster's resource addresses, so a test can say
"the state records exactly what exists" (nothing orphaned, no lost entry).

Example::

    assert world_view(emu) == reference.applied
    assert set(state.resources) == world_addresses(world_view(emu))
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcluster.gcp.resources.iam import REQUIRED_SERVICES

from ..helpers import factory

PROJECT = "demo-proj"
USER = "user:demo@example.com"

# Keys whose values differ between two correct runs (ids, times, etags, per-run addresses).
VOLATILE = frozenset(
    {
        "unique_id",
        "oauth2_client_id",
        "etag",
        "id",
        "uid",
        "create_time",
        "enabled_at",  # when an API was enabled
        "creationTimestamp",
        "resourceVersion",
        "time",
        "lastTransitionTime",
        "lastUpdateTime",
        "lockedTime",
        "endpoint",
        "ca_pem",
        "ca.crt",  # the cluster CA again, as the root CA publisher copies it into kube-root-ca.crt
        "ip",  # load balancer IPs are allocated machine-wide, so two emulators get different ones
        "instance_group_urls",
        "cluster_ipv4_cidr",  # GKE picks a free pod range at random
        # GKE makes the Workload Identity pool when the project's first WI cluster is up; nobody deletes
        # it: whether an interrupted creation got that far decides whether it exists.
        "workload_pools",
    }
)


@dataclass(frozen=True)
class Reference:
    """The emulator after a fault-free apply and after the destroy that follows, and the state's addresses."""

    applied: dict[str, Any]
    applied_addresses: frozenset[str]
    destroyed: dict[str, Any]
    destroyed_addresses: frozenset[str]
    creates: dict[str, int]  # successful create calls by method, over the apply and the destroy


def strip(obj: Any) -> Any:
    """``obj`` without VOLATILE keys, recursively: ``strip({"id": 1, "a": {"etag": 2}}) == {"a": {}}``."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(x) for x in obj]
    return obj


def _bindings(bindings: Any) -> dict[str, list[str]]:
    """Role -> sorted members, for emulator policies and storage client policies alike."""
    out: dict[str, set[str]] = {}
    for b in bindings:
        members = b["members"]
        if members:
            out.setdefault(b["role"], set()).update(members)
    return {role: sorted(ms) for role, ms in sorted(out.items())}


def world_view(emu: Any, project: str = PROJECT) -> dict[str, Any]:
    """The emulator's whole state, normalized. Call it with faults off (it reads buckets via the API)."""
    snap = emu.world.snapshot()
    container = snap.get("container", {})
    view: dict[str, Any] = {
        "projects": {
            name: {**strip(p), "enabled_services": sorted(p.get("enabled_services", []))}
            for name, p in snap.get("projects", {}).items()
        },
        # A load balancer's forwarding rule (named after its Service's UID) outlives a cluster
        # deleted before its Service: counted per region, so a leaked one shows.
        "forwarding_rules": {
            region: len(rules)
            for region, rules in sorted(
                snap.get("compute", {}).get("forwarding_rules", {}).get(project, {}).items()
            )
            if rules
        },
        "service_accounts": strip(snap.get("iam", {}).get("service_accounts", {})),
        # An emulator policy is created empty on first read; only bindings matter.
        "policies": {
            resource: _bindings(p["bindings"])
            for resource, p in sorted(snap.get("policies", {}).items())
            if any(b["members"] for b in p["bindings"])
        },
        "clusters": {
            key: strip({k: c.get(k) for k in ("cluster", "pools", "status", "status_message", "busy")})
            for key, c in container.get("clusters", {}).items()
        },
        "operations": sorted(
            Counter(
                (op["type"], op["status"], op.get("error", ""))
                for op in container.get("operations", {}).values()
            ).items()
        ),
        "kube": {key: strip(rec.get("objects", {})) for key, rec in snap.get("kube", {}).items()},
        "buckets": {},
    }
    client = factory(emu).storage(project)
    for bucket in client.list_buckets():
        view["buckets"][bucket.name] = strip(
            {
                "location": bucket.location,
                "storage_class": bucket.storage_class,
                "labels": dict(bucket.labels or {}),
                "iam_configuration": dict(bucket.iam_configuration),
                "versioning": bucket.versioning_enabled,
                "iam": _bindings(bucket.get_iam_policy(requested_policy_version=3).bindings),
            }
        )
    return view


def world_addresses(view: dict[str, Any], project: str = PROJECT) -> set[str]:
    """The sdcluster addresses of what exists in ``view`` (what a complete state must record)."""
    out = {
        f"project.service.{s}"
        for s in REQUIRED_SERVICES
        if s in view["projects"][project]["enabled_services"]
    }
    accounts = {email.split("@")[0]: email for email in view["service_accounts"]}
    out |= {f"iam.service_account.{a}" for a in accounts}
    ours = {f"serviceAccount:{email}": a for a, email in accounts.items()}
    for role, members in view["policies"].get(f"projects/{project}", {}).items():
        out |= {f"iam.project_member.{ours[m]}/{role.removeprefix('roles/')}" for m in members if m in ours}
    for account, email in accounts.items():
        for role, members in view["policies"].get(f"projects/{project}/serviceAccounts/{email}", {}).items():
            # Addresses name a member of the project's accounts by its id, a user by its email.
            short = {m: ours.get(m) or m.partition(":")[2] for m in members}
            out |= {f"iam.sa_member.{account}/{role.removeprefix('roles/')}/{short[m]}" for m in members}
    for cluster in view["clusters"].values():
        out.add(f"gke.cluster.{cluster['cluster']['name']}")
        for pool in cluster["pools"].values():
            label = pool["pool"]["config"].get("labels", {}).get("sdcluster-pool")
            out.add(f"gke.node_pool.{label or pool['pool']['name']}")
    for name, bucket in view["buckets"].items():
        out.add(f"storage.bucket.{name}")
        for role, members in bucket["iam"].items():
            brole = role.removeprefix("roles/storage.")
            out |= {f"storage.bucket_member.{name}/{brole}/{ours[m]}" for m in members if m in ours}
            # A Kubernetes service account's Workload Identity principal: .../subject/ns/NS/sa/KSA
            principals = (m.split("/subject/ns/", 1)[1].split("/sa/") for m in members if "/subject/ns/" in m)
            out |= {f"storage.bucket_member.{name}/{brole}/{ns}.{ksa}" for ns, ksa in principals}
    for objects in view["kube"].values():
        for kind_objects in objects.values():
            for oid, obj in kind_objects.items():
                managers = {f["manager"] for f in obj["metadata"].get("managedFields", [])}
                if "sdcluster" in managers:
                    out.add(f"k8s.{obj['kind'].lower()}.{oid}")
    return out


def creates(emu: Any) -> dict[str, int]:
    """Successful create calls by method (the same count as the reference means nothing was created twice)."""
    return dict(Counter(e.method for e in emu.log.mutating() if e.method.startswith(("Create", "POST"))))


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Readable field-by-field differences (for assertion messages), e.g. ``["clusters.x: 1 != 2"]``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{k}" if path else str(k)
            if k not in actual:
                out.append(f"{where}: missing")
            elif k not in expected:
                out.append(f"{where}: unexpected {json.dumps(actual[k], default=str)[:200]}")
            else:
                out += differences(expected[k], actual[k], where)
        return out
    if expected != actual:
        return [
            f"{path}: expected {json.dumps(expected, default=str)[:200]}, got {json.dumps(actual, default=str)[:200]}"
        ]
    return []


def state_document(path: Path) -> dict[str, Any]:
    """The state file as JSON (raises if it is not parseable)."""
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def token_leaks(text: str) -> list[str]:
    """Lines that carry an emulator-minted token (``emulator:...``) or a Google access token (``ya29.``)."""
    return [line for line in text.splitlines() if "emulator:" in line or "ya29." in line]
