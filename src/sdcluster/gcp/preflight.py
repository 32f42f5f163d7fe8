"""Preflight: what the project offers against what the configuration needs. Read-only.

Every check reads the real project through Google's APIs (no guesses): Compute Engine's
``regions.get``/``projects.get`` quotas with their usage, ``machineTypes.get`` and
``acceleratorTypes.get`` in the zone, ``networks.get``/``subnetworks.get``; Service Usage for the
APIs; ``projects.testIamPermissions`` for what apply needs. ``plan`` shows the cluster's findings
(and stops on a machine type, GPU type or network the project does not have); ``sdcluster doctor``
(``doctor``) runs them all and prints a checklist with the fix for each failure.

When Compute Engine cannot be read (the API is not enabled yet on a new project, or the caller may
not read it) the quotas are compared with the ones a new project typically has (``TYPICAL_QUOTAS``,
from https://cloud.google.com/compute/resource-usage), and the finding says so.

Example::

    for f in doctor(cfg, factory):
        print(f.status, f.check, f.detail, f.fix)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

from .. import retry
from ..errors import ApiDisabled, ConfigError, NotFound, PermissionDenied, SdclusterError

if TYPE_CHECKING:
    from ..config import Config
    from .clients import ClientFactory

T = TypeVar("T")
Status = Literal["ok", "warn", "fail"]

# Quotas a new project typically has (the fallback when Compute Engine cannot be read).
TYPICAL_QUOTAS = {
    "CPUS": 24.0,
    "N2_CPUS": 8.0,
    "N2D_CPUS": 8.0,
    "C2_CPUS": 8.0,
    "C2D_CPUS": 8.0,
    "C3_CPUS": 8.0,
    "G2_CPUS": 8.0,
    "A2_CPUS": 12.0,
    "CPUS_ALL_REGIONS": 32.0,
    "GPUS_ALL_REGIONS": 0.0,
    "SSD_TOTAL_GB": 500.0,
    "DISKS_TOTAL_GB": 4096.0,
    "IN_USE_ADDRESSES": 8.0,
}
SSD_DISKS = ("pd-ssd", "pd-balanced")  # both count under SSD_TOTAL_GB
QUOTAS_URL = "https://console.cloud.google.com/iam-admin/quotas"
# What the user's own credentials do in apply (the cluster is created as gke-admin).
APPLY_PERMISSIONS = (
    "serviceusage.services.get",
    "serviceusage.services.enable",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.getIamPolicy",
    "iam.serviceAccounts.setIamPolicy",
    "resourcemanager.projects.get",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.setIamPolicy",
    "storage.buckets.create",
    "storage.buckets.get",
    "storage.buckets.getIamPolicy",
    "storage.buckets.setIamPolicy",
    "container.clusters.get",
    "compute.regions.get",
    "compute.machineTypes.get",
    "compute.networks.get",
)

_SPECIAL_VCPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}
_A2_VCPUS = {"a2-highgpu-1g": 12, "a2-highgpu-2g": 24, "a2-highgpu-4g": 48, "a2-highgpu-8g": 96}


@dataclass(frozen=True)
class Finding:
    """One check: ``status`` ok / warn (apply may still work) / fail (apply cannot), and the fix."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.check}: {self.detail}" + (f" ({self.fix})" if self.fix else "")


@dataclass(frozen=True)
class Need:
    """A quota the node pool draws on: ``per_node`` for each node, ``fixed`` once (the LB's address)."""

    metric: str
    scope: str  # the region, or "global"
    per_node: float
    fixed: float = 0.0


# --------------------------------------------------------------------------------------------------
# What the configuration draws on (pure)


def machine_vcpus(machine_type: str) -> int | None:
    """vCPUs from a predefined machine type's name (when Compute Engine cannot say)."""
    if machine_type in _SPECIAL_VCPUS:
        return _SPECIAL_VCPUS[machine_type]
    if machine_type in _A2_VCPUS:
        return _A2_VCPUS[machine_type]
    m = re.fullmatch(r"[a-z0-9]+-[a-z]+-(\d+)", machine_type)
    return int(m.group(1)) if m else None


def machine_family(machine_type: str) -> str:
    """``n2-standard-4`` -> ``N2``."""
    return machine_type.split("-", 1)[0].upper()


def cpu_metric(machine_type: str) -> str:
    """The regional vCPU quota of a machine family: N1 and E2 count under CPUS."""
    family = machine_family(machine_type)
    return "CPUS" if family in ("N1", "E2") else f"{family}_CPUS"


def gpu_metric(accelerator_type: str) -> str:
    """``nvidia-tesla-t4`` -> ``NVIDIA_T4_GPUS``; ``nvidia-l4`` -> ``NVIDIA_L4_GPUS``."""
    return accelerator_type.upper().replace("-TESLA", "").replace("-", "_") + "_GPUS"


def needs(cfg: Config, vcpus: int) -> list[Need]:
    """Every quota metric a node of the pool draws on (and the load balancer's address)."""
    c, region = cfg.cluster, cfg.region
    disk = "SSD_TOTAL_GB" if c.disk_type in SSD_DISKS else "DISKS_TOTAL_GB"
    out = [
        Need(cpu_metric(c.machine_type), region, vcpus),
        Need("CPUS_ALL_REGIONS", "global", vcpus),
        Need(disk, region, c.disk_size_gb),
        # Each node has an ephemeral external IP, and so has the Service's load balancer.
        Need("IN_USE_ADDRESSES", region, 1, fixed=1),
    ]
    if c.accelerator_type:
        out += [
            Need(gpu_metric(c.accelerator_type), region, c.accelerator_count),
            Need("GPUS_ALL_REGIONS", "global", c.accelerator_count),
        ]
    return out


def quota_findings(
    cfg: Config,
    vcpus: int,
    quotas: dict[tuple[str, str], tuple[float, float]],
    nodes_now: int | None,
    source: str,
) -> list[Finding]:
    """Pure: each needed metric against (limit, usage). ``nodes_now``: the pool's nodes when it
    exists (its usage is already counted), None when apply creates it. ``source`` says where the
    limits come from."""
    c = cfg.cluster
    out: list[Finding] = []
    for n in needs(cfg, vcpus):
        where = "all regions" if n.scope == "global" else n.scope
        check = f"quota {n.metric} ({where})"
        if (n.scope, n.metric) not in quotas:
            continue
        limit, usage = quotas[(n.scope, n.metric)]
        free = max(limit - usage, 0.0)
        if nodes_now is None:
            initial, peak = c.initial_nodes * n.per_node + n.fixed, c.max_nodes * n.per_node + n.fixed
        else:
            initial, peak = 0.0, max(c.max_nodes - nodes_now, 0) * n.per_node
        fix = (
            f"lower cluster.initial_nodes or pick a smaller cluster.machine_type, or request more {n.metric}: "
            f"{QUOTAS_URL}?project={cfg.project}"
        )
        numbers = f"needs {initial:g} at creation, {peak:g} at max_nodes; {free:g} of {limit:g} free{source}"
        if initial > free:
            out.append(Finding(check, "fail", f"{numbers}: GKE will refuse to create the nodes", fix))
        elif peak > free:
            out.append(Finding(check, "warn", f"{numbers}: the autoscaler cannot reach max_nodes", fix))
        else:
            out.append(Finding(check, "ok", numbers))
    return out


# --------------------------------------------------------------------------------------------------
# Reading the project


def _read(fn: Callable[[], T], project: str) -> T:
    return retry.call(fn, project=project)


def _unreadable(e: SdclusterError) -> str:
    if isinstance(e, ApiDisabled):
        return f"the {e.service} API is not enabled"
    return "the caller may not read it"


def project_quotas(factory: ClientFactory, cfg: Config) -> dict[tuple[str, str], tuple[float, float]]:
    """(scope, metric) -> (limit, usage) of the region and of the whole project (Compute Engine)."""
    p = cfg.project
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="quotas") as pool:
        regional = pool.submit(_read, lambda: factory.compute("regions").get(project=p, region=cfg.region), p)
        whole = pool.submit(_read, lambda: factory.compute("projects").get(project=p), p)
        region, project = regional.result(), whole.result()
    out = {(cfg.region, q.metric): (float(q.limit), float(q.usage)) for q in region.quotas}
    out.update({("global", q.metric): (float(q.limit), float(q.usage)) for q in project.quotas})
    return out


def machine_type_finding(factory: ClientFactory, cfg: Config) -> tuple[Finding, int | None]:
    """The machine type in the zone, and its vCPUs (None when unknown)."""
    c, p = cfg.cluster, cfg.project
    check = f"machine type {c.machine_type} in {c.zone}"
    try:
        mt = _read(
            lambda: factory.compute("machine_types").get(project=p, zone=c.zone, machine_type=c.machine_type),
            p,
        )
    except NotFound:
        return (
            Finding(
                check,
                "fail",
                f"Compute Engine has no machine type {c.machine_type} in zone {c.zone}",
                f"set cluster.machine_type to one of: gcloud compute machine-types list --zones {c.zone}",
            ),
            None,
        )
    except (ApiDisabled, PermissionDenied) as e:
        return Finding(check, "warn", f"not checked: {_unreadable(e)}"), machine_vcpus(c.machine_type)
    return Finding(check, "ok", f"{mt.guest_cpus} vCPUs, {mt.memory_mb / 1024:g} GB"), int(mt.guest_cpus)


def accelerator_finding(factory: ClientFactory, cfg: Config) -> Finding | None:
    c, p = cfg.cluster, cfg.project
    if not c.accelerator_type:
        return None
    check = f"GPU type {c.accelerator_type} in {c.zone}"
    try:
        _read(
            lambda: factory.compute("accelerator_types").get(
                project=p, zone=c.zone, accelerator_type=c.accelerator_type
            ),
            p,
        )
    except NotFound:
        return Finding(
            check,
            "fail",
            f"zone {c.zone} offers no {c.accelerator_type} GPUs",
            f"pick a zone that has them: gcloud compute accelerator-types list --filter=name={c.accelerator_type}",
        )
    except (ApiDisabled, PermissionDenied) as e:
        return Finding(check, "warn", f"not checked: {_unreadable(e)}")
    return Finding(check, "ok", "offered in the zone")


def network_findings(factory: ClientFactory, cfg: Config) -> list[Finding]:
    c, p = cfg.cluster, cfg.project
    check = f"network {c.network}"
    try:
        _read(lambda: factory.compute("networks").get(project=p, network=c.network), p)
    except NotFound:
        hint = (
            "projects of organisations with the policy compute.skipDefaultNetworkCreation have none"
            if c.network == "default"
            else "it does not exist"
        )
        return [
            Finding(
                check,
                "fail",
                f"project {p} has no VPC network {c.network!r} ({hint})",
                f"create it (gcloud compute networks create {c.network} --subnet-mode=auto --project {p}) or "
                'name an existing one: cluster.network = "..." (and cluster.subnetwork)',
            )
        ]
    except (ApiDisabled, PermissionDenied) as e:
        return [Finding(check, "warn", f"not checked: {_unreadable(e)}")]
    out = [Finding(check, "ok", "exists")]
    if c.subnetwork:
        sub = f"subnetwork {c.subnetwork} in {cfg.region}"
        try:
            _read(
                lambda: factory.compute("subnetworks").get(
                    project=p, region=cfg.region, subnetwork=c.subnetwork
                ),
                p,
            )
            out.append(Finding(sub, "ok", "exists"))
        except NotFound:
            out.append(
                Finding(
                    sub,
                    "fail",
                    f"network {c.network} has no subnetwork {c.subnetwork!r} in {cfg.region}",
                    f"list them: gcloud compute networks subnets list --network {c.network} --regions {cfg.region}",
                )
            )
    return out


def cluster_findings(
    factory: ClientFactory,
    cfg: Config,
    nodes_now: int | None,
    read_quotas: Callable[[], dict[tuple[str, str], tuple[float, float]]] | None = None,
) -> list[Finding]:
    """Machine type, GPU type and quotas for the node pool (``nodes_now``: see ``quota_findings``;
    ``read_quotas``: how to read them, by default ``project_quotas``). The reads do not depend on one
    another: they go at once."""
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="preflight") as pool:
        machine_read = pool.submit(machine_type_finding, factory, cfg)
        gpu_read = pool.submit(accelerator_finding, factory, cfg)
        quotas_read = pool.submit(read_quotas or (lambda: project_quotas(factory, cfg)))
        machine, vcpus = machine_read.result()
        gpu = gpu_read.result()
    out = [machine]
    if gpu is not None:
        out.append(gpu)
    if vcpus is None:
        return out
    try:
        quotas, source = quotas_read.result(), ""
    except (ApiDisabled, PermissionDenied) as e:
        quotas = {
            (cfg.region, m): (v, 0.0) for m, v in TYPICAL_QUOTAS.items() if not m.endswith("ALL_REGIONS")
        }
        quotas.update(
            {("global", m): (v, 0.0) for m, v in TYPICAL_QUOTAS.items() if m.endswith("ALL_REGIONS")}
        )
        source = f" (a new project's typical quota: the project's own could not be read, {_unreadable(e)})"
    return out + quota_findings(cfg, vcpus, quotas, nodes_now, source)


def plan_warnings(findings: list[Finding]) -> list[str]:
    """What plan shows: warnings and quota failures as warnings; a machine type, GPU type or
    network the project lacks stops the plan (ConfigError naming it, with the fix)."""
    for f in findings:
        if f.status == "fail" and not f.check.startswith("quota"):
            raise ConfigError(f"{f.check}: {f.detail}", hint=f.fix)
    return [f.line() for f in findings if f.status != "ok" and not f.detail.startswith("not checked")]


# --------------------------------------------------------------------------------------------------
# sdcluster doctor


def credentials_finding(factory: ClientFactory) -> Finding:
    if factory.emulator:
        return Finding("credentials", "ok", f"{factory.user} (on the emulator at {factory.emulator})")
    try:
        creds = factory.user_credentials()
    except SdclusterError as e:
        return Finding("credentials", "fail", str(e), e.hint)
    who = getattr(creds, "service_account_email", None) or getattr(creds, "account", None) or ""
    kind = type(creds).__module__.rsplit(".", 1)[-1]
    detail = f"Application Default Credentials ({kind}{', ' + who if who else ''})"
    quota_project = getattr(creds, "quota_project_id", None)
    return Finding(
        "credentials", "ok", detail + (f", quota project {quota_project}" if quota_project else "")
    )


def _project_finding(factory: ClientFactory, cfg: Config) -> Finding:
    p = cfg.project
    try:
        got = _read(lambda: factory.projects().get_project(name=f"projects/{p}"), p)
    except ApiDisabled as e:
        return Finding(f"project {p}", "warn", f"not checked: {_unreadable(e)}")
    except PermissionDenied as e:
        return Finding(
            f"project {p}", "fail", str(e), "check the project id (gcloud projects list) and your access"
        )
    return Finding(
        f"project {p}", "ok", f"{got.state.name.lower()}, number {got.name.removeprefix('projects/')}"
    )


def api_findings(factory: ClientFactory, cfg: Config) -> list[Finding]:
    from .resources.iam import REQUIRED_SERVICES

    p, out = cfg.project, []
    client = factory.service_usage()
    for service in REQUIRED_SERVICES:
        check = f"API {service}"
        try:
            name = f"projects/{p}/services/{service}"
            svc = _read(partial(client.get_service, request={"name": name}), p)
        except PermissionDenied as e:
            out.append(Finding(check, "fail", str(e), e.hint))
            continue
        if svc.state.name == "ENABLED":
            out.append(Finding(check, "ok", "enabled"))
        elif cfg.manage_apis:
            out.append(Finding(check, "warn", "not enabled: apply enables it first"))
        else:
            out.append(
                Finding(
                    check,
                    "fail",
                    "not enabled (manage_apis = false)",
                    f"gcloud services enable {service} --project {p}",
                )
            )
    return out


def permissions_finding(factory: ClientFactory, cfg: Config) -> Finding:
    from google.iam.v1 import iam_policy_pb2

    p = cfg.project
    request = iam_policy_pb2.TestIamPermissionsRequest(
        resource=f"projects/{p}", permissions=list(APPLY_PERMISSIONS)
    )
    try:
        held = set(_read(lambda: factory.projects().test_iam_permissions(request=request), p).permissions)
    except (ApiDisabled, PermissionDenied) as e:
        return Finding("permissions", "warn", f"not checked: {_unreadable(e)}")
    missing = [perm for perm in APPLY_PERMISSIONS if perm not in held]
    if missing:
        return Finding(
            "permissions",
            "fail",
            f"{cfg.user} lacks {', '.join(missing)} on project {p}",
            f"ask a project owner for roles/owner, or for roles that contain them (gcloud projects get-iam-policy {p})",
        )
    return Finding(
        "permissions", "ok", f"{cfg.user} holds the {len(APPLY_PERMISSIONS)} permissions apply uses"
    )


def doctor(cfg: Config, factory: ClientFactory) -> list[Finding]:
    """Every check, in the order a user fixes them. Makes no change."""
    out = [credentials_finding(factory)]
    if out[0].status == "fail":
        return out
    out += [_project_finding(factory, cfg), *api_findings(factory, cfg), permissions_finding(factory, cfg)]
    out += cluster_findings(factory, cfg, nodes_now=_running_nodes(factory, cfg))
    out += network_findings(factory, cfg)
    return out


def _running_nodes(factory: ClientFactory, cfg: Config) -> int | None:
    """The cluster's nodes when it exists (its quota usage is already counted), else None."""
    try:
        cluster = _read(lambda: factory.cluster_manager().get_cluster(name=cfg.cluster_key), cfg.project)
    except (NotFound, ApiDisabled, PermissionDenied):
        return None
    return int(cluster.current_node_count)
