"""Table-driven cases of each resource's pure logic: desired (from a config) + observed -> the change
(action, reason, diffs, warnings); plus the pure helpers the resources decide with (pool names on
replacement, the serving view of live objects, stuck-rollout reasons, quota and capacity warnings,
IAM member edits). One JSON file per case under ``tests/resources/<kind>/``; the file says what it
shows in ``description``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sdcluster
from sdcluster.gcp import preflight
from sdcluster.gcp.resources import gke, iam, rollout, serving
from sdcluster.gcp.resources.kube import KubeObject

HERE = Path(__file__).parent


def cases(kind: str) -> list[Any]:
    files = sorted((HERE / kind).glob("*.json"))
    assert files, f"no cases under tests/resources/{kind}/"
    return [pytest.param(json.loads(f.read_text()), id=f.stem) for f in files]


def config(case: dict[str, Any]) -> Any:
    return sdcluster.Config.build(project="demo-proj", user="user:demo@example.com", **case.get("config", {}))


def check_change(change: Any, expect: dict[str, Any]) -> None:
    assert change.action == expect["action"], change.reason
    if "reason" in expect:
        assert expect["reason"] in change.reason
    if "diffs" in expect:
        assert [d.path for d in change.diffs] == expect["diffs"]
    if "forces_replacement" in expect:
        assert [d.path for d in change.diffs if d.forces_replacement] == expect["forces_replacement"]
    for w in expect.get("warnings", []):
        assert any(w in x for x in change.warnings), change.warnings
    if expect.get("no_warnings"):
        assert change.warnings == []
    if "replace_order" in expect:
        assert change.replace_order == expect["replace_order"]


@pytest.mark.parametrize("case", cases("gke.cluster"))
def test_cluster(case: dict[str, Any]) -> None:
    r = gke.Cluster(config(case), ())
    check_change(r.diff(r.desired(), case["observed"]), case["expect"])


@pytest.mark.parametrize("case", cases("gke.node_pool"))
def test_node_pool(case: dict[str, Any]) -> None:
    r = gke.NodePool(config(case), ())
    observed = case["observed"]
    check_change(r.diff(r.desired(), observed), case["expect"])
    if "replacement_name" in case["expect"]:
        current = observed.get("name") if observed else None
        name = gke.replacement_name(r.pool, current, r.desired())
        assert name.startswith(case["expect"]["replacement_name"])
        assert name != current


MANIFESTS: dict[str, tuple[Callable[[Any], dict[str, Any]], type[Any]]] = {
    "ConfigMap": (serving.configmap_manifest, KubeObject),
    "Deployment": (serving.deployment_manifest, serving.Deployment),
    "Service": (serving.service_manifest, serving.Service),
    "HorizontalPodAutoscaler": (serving.hpa_manifest, KubeObject),
}


@pytest.mark.parametrize("case", cases("k8s.objects"))
def test_serving_view_of_live_objects(case: dict[str, Any]) -> None:
    cfg = config(case)
    make, cls = MANIFESTS[case["kind"]]
    manifest = make(cfg)
    r = cls(cfg, manifest, ())
    live = json.loads(json.dumps(manifest))  # what the API server returns for it, edited by the case
    for path, value in case.get("live_edits", {}).items():
        node = live
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    check_change(r.diff(r.desired(), r.view(live)), case["expect"])


@pytest.mark.parametrize("case", cases("k8s.rollout"))
def test_stuck_rollout_reason(case: dict[str, Any]) -> None:
    reason = rollout.stuck_reason(case["pods"], case["events"])
    expected = case["expect"]["reason"]
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def quota_lines(cfg: Any, case: dict[str, Any]) -> list[str]:
    """Quota findings that are not ok, against a new project's typical limits with the case's
    ``quotas`` ({metric: [limit, usage]}) on top (the project's real ones come from Compute)."""
    quotas: dict[tuple[str, str], tuple[float, float]] = {}
    for metric, limit in preflight.TYPICAL_QUOTAS.items():
        quotas[("global" if metric.endswith("ALL_REGIONS") else cfg.region, metric)] = (limit, 0.0)
    for metric, (limit, usage) in case.get("quotas", {}).items():
        quotas[("global" if metric.endswith("ALL_REGIONS") else cfg.region, metric)] = (limit, usage)
    vcpus = preflight.machine_vcpus(cfg.cluster.machine_type) or 1
    found = preflight.quota_findings(cfg, vcpus, quotas, case.get("nodes_now"), "")
    return [f.line() for f in found if f.status != "ok"]


@pytest.mark.parametrize("case", cases("warnings"))
def test_quota_and_capacity_warnings(case: dict[str, Any]) -> None:
    cfg = config(case)
    for which, found in (("quota", quota_lines(cfg, case)), ("capacity", serving.capacity_warnings(cfg))):
        expected = case["expect"].get(which, [])
        if not expected:
            assert found == [], found
        for text in expected:
            assert any(text in w for w in found), found


@pytest.mark.parametrize("case", cases("iam.policy"))
def test_iam_member_edits(case: dict[str, Any]) -> None:
    from google.iam.v1 import policy_pb2

    policy = policy_pb2.Policy()
    for b in case["bindings"]:
        binding = policy.bindings.add(role=b["role"], members=b["members"])
        if b.get("condition"):
            binding.condition.expression = b["condition"]
    edit = {"add": iam.add_member, "remove": iam.remove_member}[case["op"]]
    changed = edit(policy, case["role"], case["member"])
    assert changed == case["expect"]["changed"]
    after = [
        {
            "role": b.role,
            "members": list(b.members),
            **({"condition": b.condition.expression} if b.condition.expression else {}),
        }
        for b in policy.bindings
    ]
    assert after == case["expect"]["bindings"]
    assert iam.has_member(policy, case["role"], case["member"]) == (case["op"] == "add")
