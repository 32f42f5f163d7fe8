"""sdcluster's autostop: pause the serving Deployment after N minutes without a predict request.

Shipped with sdcluster and run **inside the cluster** by the CronJob ``sdcluster-autostop`` (every
minute, image ``python``), from the ConfigMap ``sdcluster-autostop`` that ``sdcluster apply`` fills
with this very file. Standard library only. It holds no Google credential: it speaks to the
Kubernetes API as its own service account (``sdcluster-autostop``), whose Role allows only: get on
the one Deployment, get and patch on its scale subresource, get and patch on its own state ConfigMap
(``sdcluster-autostop-state``). It cannot change the Deployment itself.

Each run:

1. reads the Deployment; paused already (annotation ``sdcluster.dev/paused``) or at zero
   replicas: nothing to watch, exit;
2. reads TF Serving's Prometheus metrics through the Service (``--monitoring_config_file`` turns
   them on) and counts the predict requests: ``:tensorflow:serving:request_latency_count`` with
   ``API="predict"`` (REST) or ``"Predict"`` (gRPC) for the model. Not
   ``:tensorflow:serving:request_count``: it counts every REST request, the readiness probe's
   metadata GET every 10 s included, so it never stands still;
3. remembers the count and when it last changed in its state ConfigMap (``count``, ``since``: an
   unreachable endpoint counts as its own value, so a server that never comes up is idle too);
4. once the count has not changed for ``--idle-minutes``, pauses: the note (``paused``, which
   sdcluster reads as it reads its own ``sdcluster.dev/paused`` annotation) in the ConfigMap first,
   then the scale subresource to 0 replicas. A later ``sdcluster resume`` clears the ConfigMap.

Environment: ``KUBERNETES_SERVICE_HOST``/``_PORT`` (set in every pod), the Service's
``<SERVICE>_SERVICE_HOST``/``<SERVICE>_SERVICE_PORT_HTTP`` (Kubernetes sets them for the Services of
the pod's namespace), ``AUTOSTOP_SA_DIR`` (default: the mounted service-account token directory),
``AUTOSTOP_MINUTE_SECONDS`` (default 60: how long a minute is; an emulator scales it).

Example (what the CronJob runs)::

    python3 /autostop/autostop.py --namespace default --deployment stable-diffusion \\
        --service stable-diffusion --model stable-diffusion --idle-minutes 30 \\
        --state sdcluster-autostop-state
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

PAUSED = "sdcluster.dev/paused"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
METRIC = ":tensorflow:serving:request_latency_count"
PREDICT_APIS = ("predict", "Predict")  # REST's method name, gRPC's
MERGE_PATCH = "application/merge-patch+json"
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Kube:
    """The Kubernetes API as this pod's service account (token and CA from ``sa_dir``)."""

    def __init__(self, sa_dir: str) -> None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.base = f"https://{host}:{port}"
        with open(os.path.join(sa_dir, "token"), encoding="utf-8") as f:
            self._token = f.read().strip()
        self.context = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", MERGE_PATCH)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as r:
                answer: dict[str, Any] = json.loads(r.read() or b"{}")
                return answer
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise SystemExit(f"autostop: {method} {path}: {e.code} {detail}") from None


def predict_count(url: str, model: str) -> int | None:
    """The model's predict requests TF Serving has answered (None: the metrics cannot be read)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    total = 0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m["name"] != METRIC:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        if labels.get("model_name") == model and labels.get("API") in PREDICT_APIS:
            total += int(float(m["value"]))
    return total


def service_url(service: str, path: str) -> str:
    """The Service's HTTP port, from the variables Kubernetes sets for the namespace's Services."""
    prefix = re.sub(r"[^A-Z0-9]", "_", service.upper())
    host = os.environ.get(f"{prefix}_SERVICE_HOST", f"{service}")
    port = os.environ.get(f"{prefix}_SERVICE_PORT_HTTP", "8501")
    return f"http://{host}:{port}{path}"


def stamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> str:
    """One check; returns what it did (printed to the job's log)."""
    kube = Kube(os.environ.get("AUTOSTOP_SA_DIR", SA_DIR))
    minute_s = float(os.environ.get("AUTOSTOP_MINUTE_SECONDS", "60"))
    path = f"/apis/apps/v1/namespaces/{args.namespace}/deployments/{args.deployment}"
    state_path = f"/api/v1/namespaces/{args.namespace}/configmaps/{args.state}"
    dep = kube.call("GET", path)
    annotations = (dep.get("metadata") or {}).get("annotations") or {}
    if annotations.get(PAUSED):
        return f"paused already ({annotations[PAUSED]})"
    if int((dep.get("spec") or {}).get("replicas", 0) or 0) == 0:
        return "the Deployment has no replicas: nothing to watch"
    seen = kube.call("GET", state_path).get("data") or {}
    count = predict_count(service_url(args.service, args.metrics_path), args.model)
    now = time.time()
    if "since" not in seen or seen.get("count") != json.dumps(count):
        kube.call(
            "PATCH", state_path, {"data": {"count": json.dumps(count), "since": str(now), "paused": None}}
        )
        return (
            f"predict requests: {count if count is not None else 'unknown (no answer)'}; idle clock restarted"
        )
    idle = (now - float(seen["since"])) / minute_s
    if idle < args.idle_minutes:
        return f"idle for {idle:.1f} of {args.idle_minutes} minute(s)"
    note = f"{stamp(now)} by autostop after {args.idle_minutes} idle minute(s)"
    kube.call("PATCH", state_path, {"data": {"paused": note, "count": None, "since": None}})
    kube.call("PATCH", f"{path}/scale", {"spec": {"replicas": 0}})
    return f"paused: {note}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pause the serving Deployment after N idle minutes.")
    p.add_argument("--namespace", required=True)
    p.add_argument("--deployment", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--idle-minutes", type=int, required=True)
    p.add_argument("--metrics-path", default="/monitoring/prometheus/metrics")
    p.add_argument("--state", default="sdcluster-autostop-state")
    print(f"autostop: {run(p.parse_args(argv))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
