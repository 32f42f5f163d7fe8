"""kubeconfigs for kubectl users: authenticating with Google's gke-gcloud-auth-plugin, never a token.

The context is named as ``gcloud container clusters get-credentials`` names it
(``gke_PROJECT_ZONE_CLUSTER``), so ``--merge`` into ``~/.kube/config`` replaces what gcloud wrote for
the same cluster instead of adding a second entry.

Example::

    doc = kubeconfig_doc(cfg, "34.1.2.3", ca_b64)
    write(doc, Path("~/.kube/config").expanduser(), merge=True)   # -> 'gke_demo-proj_us-central1-c_sd-cluster'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..state import atomic_write

if TYPE_CHECKING:
    from ..config import Config

SECTIONS = ("clusters", "users", "contexts")


def context_name(cfg: Config) -> str:
    return f"gke_{cfg.project}_{cfg.cluster.zone}_{cfg.cluster.name}"


def kubeconfig_doc(cfg: Config, endpoint: str, ca_b64: str) -> dict[str, Any]:
    name = context_name(cfg)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca_b64}}
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "gke-gcloud-auth-plugin",
                        "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin",
                        "provideClusterInfo": True,
                        "interactiveMode": "IfAvailable",
                    }
                },
            }
        ],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": cfg.serving.namespace}}
        ],
        "current-context": name,
    }


def default_path() -> Path:
    """Where kubectl reads by default: the first file of ``$KUBECONFIG``, else ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def merge(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with ``new``'s entries added or replaced by name, and its current context."""
    out = dict(existing)
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    for section in SECTIONS:
        names = {e["name"] for e in new.get(section, [])}
        kept = [e for e in existing.get(section) or [] if e.get("name") not in names]
        out[section] = [*kept, *new.get(section, [])]
    out["current-context"] = new["current-context"]
    return out


def write(doc: dict[str, Any], path: Path, *, merge_into: bool) -> str:
    """Write ``doc`` to ``path`` (mode 0600, atomically); with ``merge_into``, merged into the
    kubeconfig there (YAML, as kubectl writes it). Returns the context name."""
    import yaml

    if merge_into and path.exists():
        try:
            existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise UsageError(
                f"cannot merge into {path}: it is not a readable kubeconfig ({e})",
                hint="fix or move that file, or write a separate one: sdcluster kubeconfig --out FILE",
            ) from None
        if not isinstance(existing, dict):
            raise UsageError(f"cannot merge into {path}: it is not a kubeconfig", hint="move it away first")
        doc = merge(existing, doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(doc, sort_keys=False) if merge_into else json.dumps(doc, indent=2) + "\n"
    atomic_write(path, text.encode())
    return str(doc["current-context"])
