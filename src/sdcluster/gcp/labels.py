"""The marks sdcluster puts on what it creates: one home for each."""

from __future__ import annotations

# GCP resource labels (cluster, node pool, bucket, state bucket).
MANAGED_BY = {"managed-by": "sdcluster"}
# The node label that finds our pool whatever its GKE name (a replaced pool gets a suffix).
POOL_LABEL = "sdcluster-pool"
# Kubernetes object labels.
K8S_MANAGED_BY = {"app.kubernetes.io/managed-by": "sdcluster"}
