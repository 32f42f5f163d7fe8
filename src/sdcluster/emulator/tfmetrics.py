"""TF Serving's Prometheus metrics, as the stand-in (``tfserving``) exposes them.

TensorFlow Serving (tensorflow/serving at tag 2.11.0, commit 7c9bd6b2) serves metrics only when
``--monitoring_config_file`` names a ``MonitoringConfig`` text proto with ``prometheus_config {
enable: true }`` (``config/monitoring_config.proto``; read in ``model_servers/server.cc``), on the REST
port at ``prometheus_config.path`` (default ``/monitoring/prometheus/metrics``,
``util/prometheus_exporter.cc``). Each REST request the API handler processes counts in
``/tensorflow/serving/request_count`` (labels ``model_name``, ``status``: the gRPC code name), and an
OK one in the ``/tensorflow/serving/request_latency`` histogram (labels ``model_name``, ``API``: the
REST method, ``predict``/``classify``/``regress``, empty for the GETs; ``entrypoint`` ``REST``)
(``model_servers/http_server.cc``, ``servables/tensorflow/util.cc``). The exporter names a metric
by replacing every character outside ``[a-zA-Z0-9_]`` with ``:`` (``:tensorflow:serving:request_count``)
and writes counters as ``# TYPE name counter`` then ``name{labels} value``.

Kept per TF Serving process (a new pod starts from zero, as a new process does). Only these two
metrics are modelled; the histogram is written with its ``+Inf`` bucket, ``_sum`` and ``_count``.

Example::

    m = Metrics()
    m.record("stable-diffusion", "OK", "predict", 0.2)
    text = m.exposition()   # ':tensorflow:serving:request_latency_count{...,API="predict",...} 1'
"""

from __future__ import annotations

import re
import threading

DEFAULT_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
_ENABLE = re.compile(r"prometheus_config\s*\{[^}]*\benable\s*:\s*true\b", re.S)
_PATH = re.compile(r'prometheus_config\s*\{[^}]*\bpath\s*:\s*"([^"]*)"', re.S)


def prometheus_path(config_text: str | None) -> str:
    """Where a MonitoringConfig text proto exposes the metrics ("" when it does not enable them)."""
    if not config_text or not _ENABLE.search(config_text):
        return ""
    m = _PATH.search(config_text)
    return (m.group(1) if m else "") or DEFAULT_PATH


class Metrics:
    """The counters of one TF Serving process (shared by the snapshots of its Servable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[tuple[str, str], tuple[int, float]] = {}

    def record(self, model: str, status: str, api: str, seconds: float) -> None:
        with self._lock:
            key = (model, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if status == "OK":
                count, total = self.latency.get((model, api), (0, 0.0))
                self.latency[(model, api)] = (count + 1, total + seconds * 1e6)

    def exposition(self) -> str:
        """The Prometheus text format, as TF Serving's exporter writes it."""
        with self._lock:
            lines = [f"# TYPE {REQUEST_COUNT} counter"]
            for (model, status), n in sorted(self.requests.items()):
                lines.append(f'{REQUEST_COUNT}{{model_name="{model}",status="{status}"}} {n}')
            lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
            for (model, api), (n, total) in sorted(self.latency.items()):
                labels = f'model_name="{model}",API="{api}",entrypoint="REST"'
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="+Inf"}} {n}')
                lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {total:g}")
                lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {n}")
        return "\n".join(lines) + "\n"


_PROCESSES: dict[str, Metrics] = {}
_PROCESSES_LOCK = threading.Lock()


def of_process(process_id: str) -> Metrics:
    """The counters of the TF Serving process ``process_id`` (kept outside its JSON record)."""
    with _PROCESSES_LOCK:
        return _PROCESSES.setdefault(process_id, Metrics())
