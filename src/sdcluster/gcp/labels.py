"""The marks sdcluster puts on what it creates: one home for each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# GCP resource labels (cluster, node pool, bucket, state bucket).
MANAGED_BY = {"managed-by": "sdcluster"}
# The node label that finds our pool whatever its GKE name (a replaced pool gets a suffix).
POOL_LABEL = "sdcluster-pool"
# The taint on the serving pool's nodes while a system pool exists: GKE's own cluster-wide pods
# (kube-dns, metrics-server) do not tolerate it, so they stay on the system pool and the serving pool
# can reach zero nodes (a kube-system pod without a PodDisruptionBudget keeps its node up).
SERVING_TAINT = {"key": "sdcluster.dev/serving", "value": "true", "effect": "NoSchedule"}
# Kubernetes object labels.
K8S_MANAGED_BY = {"app.kubernetes.io/managed-by": "sdcluster"}
# The name and `app` label of TF Serving's Deployment and Service (and its pods' label).
APP = "stable-diffusion"
# Service accounts have no labels: their description carries this marker.
SA_MARKER = "managed-by=sdcluster"


def marked(labels: Any) -> bool:
    """Whether GCP labels carry sdcluster's mark (``MANAGED_BY``): something sdcluster made."""
    return isinstance(labels, Mapping) and all(labels.get(k) == v for k, v in MANAGED_BY.items())
