"""The kubelet of an emulated node: a scheduled pod's containers, their probes, restarts and logs.

Pods are records in ``world.data`` (JSON). The kubelet advances each container of a scheduled pod:

- image pull and start take the emulator's ``rollout_s``; an image the nodes cannot pull alternates
  between ErrImagePull and ImagePullBackOff;
- a ``tensorflow/serving`` container runs a TF Serving process (``tfprocess``) that reads its model
  from Cloud Storage as the pod's identity; other containers just run;
- probes run as the kubelet runs them (``pkg/kubelet/prober``): ``initialDelaySeconds``,
  ``periodSeconds`` (10), ``failureThreshold`` (3), ``successThreshold`` (1); liveness and readiness
  wait for a startup probe to succeed; a failed startup or liveness probe kills the container, a
  failed readiness probe takes the pod out of the Service's endpoints. TCP and HTTP probes of a TF
  Serving container see its ports, which open only after the first version loads;
- a container that exits or is killed restarts (restartPolicy Always) with the kubelet's back-off:
  at once the first time, then 10 s doubling to 5 minutes (CrashLoopBackOff);
- each container keeps its log (the TF Serving process's lines) and the previous incarnation's
  (``kubectl logs --previous``).

Probe periods and back-off are multiplied by the emulator's ``kubelet_scale``.

Example::

    pod = new_pod(...)          # see kubecontrol: the ReplicaSet controller makes pods
    step(pod, now, env)         # after the scheduler gave it a node
    pod_object(pod, now)        # what ``kubectl get pod -o json`` shows
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import kubesim, tfmetrics, tfprocess
from .core import EmulatorError
from .tfserving import answer

BACKOFF_S = 10.0  # kubelet: initial container restart back-off
MAX_BACKOFF_S = 300.0  # kubelet: MaxContainerBackOff
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

Record = Callable[..., None]  # record(involved, reason, message, type="Normal", component="kubelet")


@dataclass(frozen=True)
class Env:
    """What the kubelet needs from the emulator: timings and the model image size."""

    rollout_s: float
    kubelet_scale: float
    tfserving_scale: float
    model_load_s: float
    predict_s_per_step: float
    image_size: int
    record: Record
    configmap: Callable[[str, str, str], str | None]  # (namespace, name, key) -> value; None: missing


# --------------------------------------------------------------------------------------------------
# Identity of a pod's workload (what Google APIs see when it calls them)


def identity(pod: dict[str, Any], pool: dict[str, Any], project: str, number: str) -> dict[str, Any]:
    """The member a pod acts as and its token's scopes.

    On GKE_METADATA nodes the GKE metadata server hands out tokens of the pod's Kubernetes service
    account principal (Workload Identity Federation for GKE); elsewhere the pod gets the node's service
    account with the node pool's OAuth scopes (the Compute Engine metadata server).
    """
    if kubesim.gke_metadata(pool):
        ksa = pod["spec"].get("serviceAccountName") or "default"
        member = (
            f"principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
            f"{project}.svc.id.goog/subject/ns/{pod['namespace']}/sa/{ksa}"
        )
        return {"member": member, "scopes": [CLOUD_PLATFORM]}
    email = str(pool.get("service_account") or "default")
    if email == "default":
        email = f"{number}-compute@developer.gserviceaccount.com"
    return {"member": f"serviceAccount:{email}", "scopes": list(pool.get("oauth_scopes") or [])}


# --------------------------------------------------------------------------------------------------
# Containers


def _container_spec(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"].get("containers") or [] if c.get("name") == name)


def _involved(pod: dict[str, Any], cname: str | None = None) -> dict[str, Any]:
    out = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod["name"],
        "namespace": pod["namespace"],
        "uid": pod["uid"],
    }
    if cname:
        out["fieldPath"] = f"spec.containers{{{cname}}}"
    return out


def new_containers(pod_spec: dict[str, Any], now: float, rollout_s: float) -> dict[str, Any]:
    """Container records of a pod that was just scheduled (pulling starts now)."""
    out = {}
    for c in pod_spec.get("containers") or []:
        out[str(c.get("name", ""))] = {
            "state": "creating",
            "since": now,
            "start_at": now + rollout_s,
            "restarts": 0,
            "started": None,
            "last": None,
            "ready": False,
            "startup_ok": "startupProbe" not in c,
            "probes": {},
            "proc": None,
            "log": [],
            "prev_log": [],
            "tf": kubesim.is_tf_serving(str(c.get("image", ""))),
            "pull_period": max(rollout_s, 0.1),
        }
    return out


def _env_of(pod: dict[str, Any], container: dict[str, Any], env: Env) -> dict[str, str] | str:
    """The container's environment, or the kubelet's CreateContainerConfigError message."""
    out: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            out[str(e["name"])] = str(e["value"])
            continue
        ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
        if not ref:
            continue
        value = env.configmap(pod["namespace"], str(ref.get("name")), str(ref.get("key")))
        if value is None and not ref.get("optional"):
            return f'configmap "{ref.get("name")}" not found'
        if value is not None:
            out[str(e["name"])] = value
    return out


def mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str, env: Env) -> str | None:
    """The text of ``path`` in the container when a ConfigMap volume provides it (its ``items``
    map keys to paths; without items every key is a file), else None."""
    volumes = {v.get("name"): v for v in pod["spec"].get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        base = str(mount.get("mountPath", "")).rstrip("/") + "/"
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if not path or not path.startswith(base) or not source:
            continue
        rel = path[len(base) :]
        items = source.get("items")
        key = next((i["key"] for i in items if i.get("path") == rel), None) if items else rel
        if key is not None:
            return env.configmap(pod["namespace"], str(source.get("name")), str(key))
    return None


def _start(pod: dict[str, Any], cname: str, c: dict[str, Any], now: float, env: Env) -> None:
    spec = _container_spec(pod, cname)
    environment = _env_of(pod, spec, env)
    if isinstance(environment, str):
        if c.get("config_error") != environment:
            env.record(_involved(pod, cname), "Failed", f"Error: {environment}", now, "Warning")
        c.update(state="config_error", config_error=environment)
        return
    first = c["started"] is None and c["restarts"] == 0
    c.update(state="running", since=now, started=now, ready=False, startup_ok="startupProbe" not in spec)
    c["probes"] = {
        kind: {"next": now + _scaled(spec[kind].get("initialDelaySeconds", 0), env), "fails": 0, "oks": 0}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if kind in spec
    }
    if c["tf"]:
        flags = tfprocess.parse_flags(
            [str(a) for a in spec.get("args") or []],
            environment,
            [str(a) for a in spec.get("command") or []] or None,
        )
        monitoring = mounted_file(pod, spec, flags.monitoring_config_file, env)
        c["proc"] = tfprocess.start(
            flags, now, env.tfserving_scale, env.model_load_s, tfmetrics.prometheus_path(monitoring)
        )
    if first:
        image = str(spec.get("image", ""))
        involved = _involved(pod, cname)
        env.record(involved, "Pulled", f'Successfully pulled image "{image}" in {env.rollout_s:.3f}s', now)
    involved = _involved(pod, cname)
    env.record(involved, "Created", f"Created container: {cname}", now)
    env.record(involved, "Started", f"Started container {cname}", now)


def _scaled(seconds: Any, env: Env) -> float:
    return float(seconds or 0) * env.kubelet_scale


def _restart(pod: dict[str, Any], cname: str, c: dict[str, Any], now: float, env: Env, code: int) -> None:
    """The container ended (exit or kill): record its last state, back off, start again later."""
    c["last"] = {
        "exitCode": code,
        "reason": "Error",
        "startedAt": kubesim.rfc3339(c["started"] or now),
        "finishedAt": kubesim.rfc3339(now),
    }
    c["restarts"] += 1
    c["prev_log"] = container_log(c)
    c["log"], c["proc"] = [], None
    delay = 0.0 if c["restarts"] == 1 else min(BACKOFF_S * 2 ** (c["restarts"] - 2), MAX_BACKOFF_S)
    c.update(
        state="backoff", since=now, start_at=now + delay * env.kubelet_scale, ready=False, backoff_s=delay
    )
    if delay:
        env.record(
            _involved(pod, cname),
            "BackOff",
            f"Back-off restarting failed container {cname} in pod {pod['name']}_{pod['namespace']}({pod['uid']})",
            now,
            "Warning",
        )


def step(pod: dict[str, Any], now: float, env: Env) -> None:
    """Advance the containers of a scheduled pod to ``now``."""
    for cname, c in pod["containers"].items():
        spec = _container_spec(pod, cname)
        image = str(spec.get("image", ""))
        if c["state"] == "creating":
            if not kubesim.image_pullable(image):
                if now >= c["since"] + env.rollout_s * 0.5:
                    c.update(state="pull_failed", since=now)
                    _pull_failed_events(pod, cname, image, now, env)
                continue
            if now >= c["start_at"]:
                _start(pod, cname, c, now, env)
        elif c["state"] in ("backoff", "config_error") and now >= c["start_at"]:
            _start(pod, cname, c, now, env)
        if c["state"] != "running":
            continue
        if c["proc"] is not None:
            tfprocess.advance(c["proc"], now)
            if c["proc"]["exit"] is not None:
                _restart(pod, cname, c, now, env, int(c["proc"]["exit"]["code"]))
                continue
        _probe(pod, cname, c, spec, now, env)


def _pull_failed_events(pod: dict[str, Any], cname: str, image: str, now: float, env: Env) -> None:
    involved = _involved(pod, cname)
    env.record(involved, "Failed", f'Failed to pull image "{image}": {_pull_error(image)}', now, "Warning")
    env.record(involved, "Failed", "Error: ErrImagePull", now, "Warning")
    env.record(involved, "BackOff", f'Back-off pulling image "{image}"', now)
    env.record(involved, "Failed", "Error: ImagePullBackOff", now, "Warning")


def _pull_error(image: str) -> str:
    ref = image if "/" in image.split(":")[0] else f"docker.io/library/{image}"
    if ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return (
        f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
        f"pull access denied, repository does not exist or may require authorization"
    )


# --------------------------------------------------------------------------------------------------
# Probes


_PROBE_WORDS = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}


def _probe(
    pod: dict[str, Any], cname: str, c: dict[str, Any], spec: dict[str, Any], now: float, env: Env
) -> None:
    if "readinessProbe" not in spec:
        c["ready"] = c["startup_ok"]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind not in spec or now < c["probes"][kind]["next"]:
            continue
        if kind != "startupProbe" and not c["startup_ok"]:
            continue  # liveness and readiness start once the startup probe has succeeded
        if kind == "startupProbe" and c["startup_ok"]:
            continue
        probe, state = spec[kind], c["probes"][kind]
        state["next"] = now + _scaled(probe.get("periodSeconds", 10), env)
        ok, detail = probe_result(pod, c, spec, probe)
        if ok:
            state["fails"], state["oks"] = 0, state["oks"] + 1
            if kind == "startupProbe":
                c["startup_ok"] = True
                if "readinessProbe" not in spec:
                    c["ready"] = True
            elif kind == "readinessProbe" and state["oks"] >= int(probe.get("successThreshold", 1)):
                c["ready"] = True
            continue
        state["oks"], state["fails"] = 0, state["fails"] + 1
        words = _PROBE_WORDS[kind]
        env.record(_involved(pod, cname), "Unhealthy", f"{words} probe failed: {detail}", now, "Warning")
        if state["fails"] < int(probe.get("failureThreshold", 3)):
            continue
        if kind == "readinessProbe":
            c["ready"] = False
            continue
        env.record(
            _involved(pod, cname),
            "Killing",
            f"Container {cname} failed {words.lower()} probe, will be restarted",
            now,
        )
        _restart(pod, cname, c, now, env, 137)
        return


def _port(spec: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in spec.get("ports") or []:
        if p.get("name") == port:
            return int(p.get("containerPort", 0))
    return 0


def probe_result(
    pod: dict[str, Any], c: dict[str, Any], spec: dict[str, Any], probe: dict[str, Any]
) -> tuple[bool, str]:
    """(success, the kubelet's failure detail) of one probe against the container now."""
    if not c["tf"]:
        return True, ""  # stand-in containers other than TF Serving are healthy
    ip = pod.get("ip", "")
    proc = c["proc"]
    if "httpGet" in probe:
        get = probe["httpGet"]
        port, path = _port(spec, get.get("port")), str(get.get("path") or "/")
        url = f"http://{ip}:{port}{path}"
        if not tfprocess.listens(proc, port) or port != proc["rest_port"]:
            return False, f'Get "{url}": dial tcp {ip}:{port}: connect: connection refused'
        try:
            answer(tfprocess.servable(proc, 0.0), "GET", path.split("?", 1)[0], b"", 1)
        except EmulatorError as e:
            return False, f"HTTP probe failed with statuscode: {e.http_status}"
        return True, ""
    if "tcpSocket" in probe or "grpc" in probe:
        port = _port(spec, (probe.get("tcpSocket") or probe.get("grpc") or {}).get("port"))
        if tfprocess.listens(proc, port):
            return True, ""
        return False, f"dial tcp {ip}:{port}: connect: connection refused"
    return True, ""  # exec probes: the stand-in has no shell to run them in


# --------------------------------------------------------------------------------------------------
# What the API shows


def ready(pod: dict[str, Any]) -> bool:
    return bool(pod.get("node")) and all(c["ready"] for c in pod["containers"].values())


def pod_object(pod: dict[str, Any], now: float) -> dict[str, Any]:
    """The Pod as ``kubectl get pod -o json`` shows it."""
    spec = {**pod["spec"]}
    created = kubesim.rfc3339(pod["created"])
    scheduled = bool(pod.get("node"))
    if scheduled:
        spec["nodeName"] = pod["node"]
    started = [c for c in pod["containers"].values() if c["started"] is not None]
    is_ready = ready(pod)
    since = kubesim.rfc3339(pod.get("scheduled_at") or pod["created"])
    conditions: list[dict[str, Any]]
    if scheduled:
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": since},
            {"type": "Initialized", "status": "True", "lastTransitionTime": since},
            {"type": "ContainersReady", "status": str(is_ready), "lastTransitionTime": since},
            {"type": "Ready", "status": str(is_ready), "lastTransitionTime": since},
        ]
        if not is_ready:
            unready = sorted(n for n, c in pod["containers"].items() if not c["ready"])
            message = f"containers with unready status: [{' '.join(unready)}]"
            for cond in conditions[2:]:
                cond.update(reason="ContainersNotReady", message=message)
    else:
        conditions = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": created,
                "reason": "Unschedulable",
                "message": pod.get("unschedulable") or "",
            }
        ]
    status: dict[str, Any] = {
        "phase": "Running" if started else "Pending",
        "conditions": conditions,
        "qosClass": "Burstable",
    }
    if scheduled:
        status.update(
            hostIP=pod.get("host_ip", ""),
            podIP=pod.get("ip", ""),
            podIPs=[{"ip": pod.get("ip", "")}],
            startTime=since,
            containerStatuses=[_container_status(pod, n, c, now) for n, c in pod["containers"].items()],
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod["name"],
            "generateName": pod["name"].rsplit("-", 1)[0] + "-",
            "namespace": pod["namespace"],
            "uid": pod["uid"],
            "resourceVersion": str(pod.get("rv", 1)),
            "creationTimestamp": created,
            "labels": dict(pod["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": pod["rs"].split("/", 1)[1],
                    "uid": pod["rs_uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }


def _container_status(pod: dict[str, Any], name: str, c: dict[str, Any], now: float) -> dict[str, Any]:
    spec = _container_spec(pod, name)
    image = str(spec.get("image", ""))
    state: dict[str, Any]
    if c["state"] == "running":
        state = {"running": {"startedAt": kubesim.rfc3339(c["started"])}}
    elif c["state"] == "config_error":
        state = {"waiting": {"reason": "CreateContainerConfigError", "message": c["config_error"]}}
    elif c["state"] == "pull_failed":
        if int((now - c["since"]) / c["pull_period"]) % 2 == 0:
            state = {"waiting": {"reason": "ErrImagePull", "message": _pull_error(image)}}
        else:
            state = {
                "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
            }
    elif c["state"] == "backoff":
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": (
                    f"back-off {int(c.get('backoff_s', BACKOFF_S))}s restarting failed container={name} "
                    f"pod={pod['name']}_{pod['namespace']}({pod['uid']})"
                ),
            }
        }
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": c["ready"],
        "started": c["state"] == "running" and c["startup_ok"],
        "restartCount": c["restarts"],
        "state": state,
        "lastState": {"terminated": dict(c["last"])} if c["last"] else {},
    }
    return out


def logs(pod: dict[str, Any], container: str, previous: bool) -> list[str] | None:
    """The container's log lines (None: no such container)."""
    c = pod["containers"].get(container)
    if c is None:
        return None
    return list(c["prev_log"]) if previous else container_log(c)


def container_log(c: dict[str, Any]) -> list[str]:
    """The current incarnation's log: the TF Serving process's lines, else what the container wrote."""
    return list(c["proc"]["log"] if c["proc"] is not None else c["log"])
