"""Autostop (``serving.idle_stop_minutes = N``): the cluster pauses itself after N minutes without a
predict request, from inside, with no Google credential and no sdcluster process running.

What apply creates next to TF Serving (each a ``KubeObject``):

- ServiceAccount ``sdcluster-autostop`` (no Workload Identity binding: it has no Google identity);
- Role ``sdcluster-autostop``: ``get`` and ``patch`` on the one Deployment and its ``scale``
  subresource (``resourceNames``), nothing else; RoleBinding to the service account;
- ConfigMap ``sdcluster-autostop`` holding ``autostop.py``, the script shipped in
  ``sdcluster/data/`` (standard library only);
- CronJob ``sdcluster-autostop``: every minute, one pod of a public ``python`` image runs that
  script (on the system pool, which stays up while the serving pool is at zero).

TF Serving exposes its Prometheus metrics for the script (``--monitoring_config_file``, see
``serving.monitoring_config``). What "paused" means is the same as for ``sdcluster pause``
(``gcp/lifecycle.py``).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from ..labels import APP, POOL_LABEL
from .gke import SYSTEM_POOL
from .serving import AUTOSTOP_STATE, METRICS_PATH, labels

if TYPE_CHECKING:
    from ...config import Config

NAME = "sdcluster-autostop"
SCRIPT = "autostop.py"
SCRIPT_DIR = "/autostop"
IMAGE = "python:3.12-alpine"
SCHEDULE = "* * * * *"  # every minute


def script_text() -> str:
    """The shipped script, as the ConfigMap carries it."""
    return resources.files("sdcluster").joinpath("data", SCRIPT).read_text(encoding="utf-8")


def _meta(cfg: Config) -> dict[str, Any]:
    return {"name": NAME, "namespace": cfg.serving.namespace, "labels": labels()}


def manifests(cfg: Config) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, the script's ConfigMap, the state's ConfigMap and the
    CronJob, in that order."""
    ns = cfg.serving.namespace
    # Least privilege: read the Deployment, change only its replica count (the scale subresource),
    # and keep its own clock in its own ConfigMap. Not patch on the Deployment: that would let it
    # rewrite the pod template and run any image as tf-serving (which reads the model bucket).
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [APP], "verbs": ["get"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [APP],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [AUTOSTOP_STATE],
            "verbs": ["get", "patch"],
        },
    ]
    command = [
        "python3",
        f"{SCRIPT_DIR}/{SCRIPT}",
        f"--namespace={ns}",
        f"--deployment={APP}",
        f"--service={APP}",
        f"--model={cfg.serving.model_name}",
        f"--idle-minutes={cfg.serving.idle_stop_minutes}",
        f"--metrics-path={METRICS_PATH}",
        f"--state={AUTOSTOP_STATE}",
    ]
    pod: dict[str, Any] = {
        "serviceAccountName": NAME,
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "autostop",
                "image": IMAGE,
                "command": command,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                "volumeMounts": [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True}],
            }
        ],
        "volumes": [{"name": "script", "configMap": {"name": NAME}}],
    }
    if cfg.cluster.system_pool:
        pod["nodeSelector"] = {POOL_LABEL: SYSTEM_POOL}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(cfg)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(cfg),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(cfg),
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(cfg), "data": {SCRIPT: script_text()}},
        # Its data is the autostop's (RBAC cannot let it create a ConfigMap of one name): sdcluster
        # makes it empty and never sets its data, so apply leaves the clock alone.
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**_meta(cfg), "name": AUTOSTOP_STATE}},
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": _meta(cfg),
            "spec": {
                "schedule": SCHEDULE,
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 0,
                        "activeDeadlineSeconds": 50,
                        "template": {"metadata": {"labels": labels()}, "spec": pod},
                    }
                },
            },
        },
    ]
