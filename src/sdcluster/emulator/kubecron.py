"""CronJobs of an emulated cluster, run for real: the container's own Python script, as a subprocess,
against the emulated Kubernetes API with its pod's service-account token.

The CronJob controller (``pkg/controller/cronjob``) starts a Job at each time of ``spec.schedule``;
``concurrencyPolicy: Forbid`` skips a time while the previous run is still going; ``spec.suspend``
stops it; ``status.lastScheduleTime`` and ``status.lastSuccessfulTime`` record the runs. Here a run
is the job's one container, executed when it is runnable: an image of the official ``python``
repository whose ``command`` starts with ``python``/``python3`` (run with this interpreter). Its
ConfigMap volumes are written to a temporary directory and the command's paths under their mount
paths point there (the script run is the very text the ConfigMap holds). The environment is what a
pod gets: ``KUBERNETES_SERVICE_HOST``/``_PORT`` (the cluster's API endpoint), the variables of the
namespace's Services (``pkg/kubelet/envvars``: ``<NAME>_SERVICE_HOST``, ``<NAME>_SERVICE_PORT``,
``<NAME>_SERVICE_PORT_<PORT NAME>``; HOST is the load balancer's IP, where the emulator's TF Serving
stand-in listens, since the emulator has no cluster network), the container's ``env`` values, and
``AUTOSTOP_SA_DIR`` naming the directory that holds the mounted ``token``, ``ca.crt`` and
``namespace`` (in a pod: ``/var/run/secrets/kubernetes.io/serviceaccount``).

Time: schedules of the form ``* * * * *`` and ``*/N * * * *`` (every N minutes) run, one minute
lasting ``Knobs.cron_minute_s`` (60 s; tests shorten it), told to the process as
``AUTOSTOP_MINUTE_SECONDS``. Other schedules are not run. A run needs a node matching the pod's
``nodeSelector`` and whose taints it tolerates (it would stay Pending otherwise). Not modelled: Job and Pod objects, retries
(``backoffLimit``), ``startingDeadlineSeconds``. The last runs' exit codes and output are kept in the
cluster's record (``cron_runs``: what ``kubectl logs job/...`` would show).

Example (``kube.Hub.tick``)::

    runs = due(key, rec, now, knobs.cron_minute_s, nodes, running)   # under world.lock
    for run in runs: launch(run, finished)                            # outside it
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import kuberbac, kubesim

RUN_TIMEOUT_S = 60.0
KEPT_RUNS = 10
_EVERY = re.compile(r"^\s*(?:\*|\*/(\d+))\s+\*\s+\*\s+\*\s+\*\s*$")


@dataclass
class Run:
    """One run of a CronJob's container (everything it needs, copied out of the record)."""

    key: str  # the cluster
    oid: str  # "namespace/name" of the CronJob
    argv: list[str]
    files: dict[str, str]  # path in the container -> text (its ConfigMap volumes)
    env: dict[str, str]
    token: str
    ca_pem: str
    namespace: str
    output: str = ""
    code: int | None = None

    @property
    def job(self) -> str:
        """What ``running`` holds while it goes."""
        return f"{self.key}|{self.oid}"


def interval_minutes(schedule: str) -> int | None:
    """Minutes between runs of an every-N-minutes schedule, None for any other schedule."""
    m = _EVERY.match(schedule or "")
    if m is None:
        return None
    return int(m.group(1) or 1) or None


def _selected(pod_spec: dict[str, Any], nodes: list[dict[str, Any]]) -> bool:
    """Whether some node could take the job's pod: its ``nodeSelector`` matches, and the pod tolerates
    the node's NoSchedule taints (the scheduler's two filters; room is not modelled for jobs)."""
    selector = pod_spec.get("nodeSelector") or {}
    return any(
        all(((n.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
        and kubesim.untolerated(list((n.get("spec") or {}).get("taints") or []), pod_spec) is None
        for n in nodes
    )


def _service_env(rec: dict[str, Any], ns: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for svc in rec.get("objects", {}).get("services", {}).values():
        if (svc.get("metadata") or {}).get("namespace") != ns:
            continue
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        host = ingress[0].get("ip") if ingress else (svc.get("spec") or {}).get("clusterIP")
        ports = (svc.get("spec") or {}).get("ports") or []
        if not host or not ports:
            continue
        prefix = re.sub(r"[^A-Z0-9]", "_", str(svc["metadata"]["name"]).upper())
        env[f"{prefix}_SERVICE_HOST"] = str(host)
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{re.sub(r'[^A-Z0-9]', '_', str(p['name']).upper())}"] = str(
                    p["port"]
                )
    return env


def _runnable(container: dict[str, Any]) -> bool:
    image = str(container.get("image", ""))
    command = [str(c) for c in container.get("command") or []]
    repository = image.split("@", 1)[0].rsplit(":", 1)[0]
    return repository in ("python", "docker.io/library/python", "library/python") and bool(
        command and re.fullmatch(r"python3?(\.\d+)?", Path(command[0]).name)
    )


def _files(
    rec: dict[str, Any], ns: str, pod: dict[str, Any], container: dict[str, Any]
) -> dict[str, str] | str:
    """The container's files from its ConfigMap volumes, or the kubelet's FailedMount message."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    configmaps = rec.get("objects", {}).get("configmaps", {})
    out: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if source is None:
            continue
        cm = configmaps.get(f"{ns}/{source.get('name')}")
        if cm is None:
            if source.get("optional"):
                continue
            return (
                f'MountVolume.SetUp failed for volume "{mount.get("name")}" : configmap '
                f'"{source.get("name")}" not found'
            )
        data = cm.get("data") or {}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item.get("key") in data:
                out[f"{str(mount['mountPath']).rstrip('/')}/{item['path']}"] = str(data[item["key"]])
    return out


def due(
    key: str,
    rec: dict[str, Any],
    now: float,
    minute_s: float,
    nodes: list[dict[str, Any]],
    running: set[str],
) -> list[Run]:
    """The runs due now (their times recorded in the CronJobs' status); call under world.lock."""
    state = rec.setdefault("cron", {})
    runs = []
    for oid, cj in rec.get("objects", {}).get("cronjobs", {}).items():
        spec = cj.get("spec") or {}
        every = interval_minutes(str(spec.get("schedule", "")))
        if every is None or spec.get("suspend") or (cj.get("metadata") or {}).get("deletionTimestamp"):
            continue
        mine = state.setdefault(oid, {"next": now + every * minute_s})  # the first run: a minute on
        if now < mine["next"]:
            continue
        mine["next"] = now + every * minute_s
        pod = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec") or {}
        containers = pod.get("containers") or []
        if f"{key}|{oid}" in running and spec.get("concurrencyPolicy") == "Forbid":
            continue
        if not containers or not _runnable(containers[0]) or not _selected(pod, nodes):
            continue
        ns = str(cj["metadata"].get("namespace", "default"))
        cj.setdefault("status", {})["lastScheduleTime"] = kubesim.rfc3339(now)
        container = containers[0]
        files = _files(rec, ns, pod, container)
        if isinstance(files, str):  # the pod never starts: the run fails without running
            kept = rec.setdefault("cron_runs", {}).setdefault(oid, [])
            kept.append({"at": now, "code": None, "output": files})
            del kept[:-KEPT_RUNS]
            continue
        host, _, port = str(rec["endpoint"]).rpartition(":")
        env = {
            **_service_env(rec, ns),
            **{str(e["name"]): str(e["value"]) for e in container.get("env") or [] if "value" in e},
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "AUTOSTOP_MINUTE_SECONDS": repr(minute_s),
        }
        token = kuberbac.mint(rec, ns, str(pod.get("serviceAccountName") or "default"))
        runs.append(
            Run(
                key,
                oid,
                [str(a) for a in container.get("command") or []]
                + [str(a) for a in container.get("args") or []],
                files,
                env,
                token,
                str(rec["ca_cert"]),
                ns,
            )
        )
    return runs


def launch(run: Run, finished: Callable[[Run], None]) -> None:
    """Run it in a thread; ``finished(run)`` gets its exit code and output."""

    def work() -> None:
        with tempfile.TemporaryDirectory(prefix="sdcluster-cronjob-") as tmp:
            root = Path(tmp)
            sa = root / "serviceaccount"
            sa.mkdir()
            (sa / "token").write_text(run.token, encoding="utf-8")
            (sa / "ca.crt").write_text(run.ca_pem, encoding="utf-8")
            (sa / "namespace").write_text(run.namespace, encoding="utf-8")
            argv = [sys.executable]
            for arg in run.argv[1:]:
                argv.append(str(root / "fs" / arg.lstrip("/")) if arg in run.files else arg)
            for path, text in run.files.items():
                target = root / "fs" / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            env = {"PATH": os.environ.get("PATH", ""), **run.env, "AUTOSTOP_SA_DIR": str(sa)}
            try:
                done = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp
                )
                run.code, run.output = done.returncode, (done.stdout + done.stderr)
            except subprocess.TimeoutExpired as e:
                run.code, run.output = -1, f"timed out after {e.timeout} s"
        finished(run)

    threading.Thread(target=work, name=f"cronjob-{run.oid}", daemon=True).start()


def record(rec: dict[str, Any], run: Run, now: float) -> None:
    """A finished run into the CronJob's status and the kept runs; its token is revoked."""
    kuberbac.revoke(rec, run.token)
    cj = rec.get("objects", {}).get("cronjobs", {}).get(run.oid)
    if cj is not None and run.code == 0:
        cj.setdefault("status", {})["lastSuccessfulTime"] = kubesim.rfc3339(now)
    kept = rec.setdefault("cron_runs", {}).setdefault(run.oid, [])
    kept.append({"at": now, "code": run.code, "output": run.output})
    del kept[:-KEPT_RUNS]
    mine = rec.setdefault("cron", {}).setdefault(run.oid, {"next": now})
    mine["finished"] = int(mine.get("finished", 0)) + 1
