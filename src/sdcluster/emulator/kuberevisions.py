"""The Deployment controller's bookkeeping of pauses and revisions (``kubecontrol`` calls it).

- a paused Deployment's Progressing condition is Unknown/DeploymentPaused, then Unknown/
  DeploymentResumed once it is resumed (``checkPausedConditions``); a reported
  ProgressDeadlineExceeded stays;
- the new ReplicaSet carries the Deployment's annotations but those the controller keeps for itself
  (``copyDeploymentAnnotationsToReplicaSet``): ``kubectl rollout history`` reads its change-cause; the
  Deployment records the revision it runs (``deployment.kubernetes.io/revision``).

Example::

    annotate(deployment, new_replicaset, bump)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import kubesim

REVISION = "deployment.kubernetes.io/revision"
# Annotations the Deployment controller does not copy to its ReplicaSets (copyDeploymentAnnotationsToReplicaSet).
NOT_COPIED = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
)


def annotate(d: dict[str, Any], new: dict[str, Any], bump: Callable[[], str]) -> None:
    """Copy the Deployment's annotations to its new ReplicaSet; record the revision on the Deployment."""
    meta = d["metadata"]
    annotations = meta.get("annotations") or {}
    new["annotations"] = {k: v for k, v in annotations.items() if k not in NOT_COPIED}
    if annotations.get(REVISION) != str(new["revision"]):
        meta["annotations"] = {**annotations, REVISION: str(new["revision"])}
        meta["resourceVersion"] = bump()


def paused_conditions(
    spec: dict[str, Any], current: dict[str, Any] | None, conditions: list[dict[str, Any]], now: float
) -> tuple[list[dict[str, Any]], bool]:
    """checkPausedConditions: a paused Deployment's Progressing condition is Unknown/DeploymentPaused
    (a reported ProgressDeadlineExceeded stays), and Unknown/DeploymentResumed once it is resumed."""
    reason = (current or {}).get("reason")
    if reason == "ProgressDeadlineExceeded":
        return conditions, bool(spec.get("paused"))
    if spec.get("paused"):
        if reason != "DeploymentPaused":
            conditions = kubesim.set_condition(
                conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now
            )
        return conditions, True
    if reason == "DeploymentPaused":
        conditions = kubesim.set_condition(
            conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now
        )
    return conditions, False
