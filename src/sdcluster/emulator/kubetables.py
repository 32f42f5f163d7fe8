"""Server-side printing: ``Table`` answers (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``),
the columns kubectl shows for ``get`` (``-o wide`` adds the priority 1 columns), computed as upstream's
printers do (``pkg/printers/internalversion/printers.go``) with every column (the server always
prints wide).

Example::

    table = to_table(kind, [pod_object], now, include="Metadata", rv="42")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .kubekinds import Kind

Columns = list[tuple[str, str, int]]  # (name, type, priority)
Row = list[Any]

_NAME = ("Name", "string", 0)
_AGE = ("Age", "string", 0)


def _parse(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: 90s, 4m30s, 3h20m, 5d ..."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(stamp: str | None, now: float) -> str:
    t = _parse(stamp)
    return "<unknown>" if t is None else human_duration(now - t)


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as a selector string (``app=x,tier in (a,b)``)."""
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), ",".join(sorted(e.get("values") or []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(
                op, f"!{key}"
            )
        )
    return ",".join(parts) if parts else "<none>"


def _containers(template: dict[str, Any]) -> tuple[str, str]:
    cs = (template.get("spec") or {}).get("containers") or []
    return ",".join(str(c.get("name", "")) for c in cs), ",".join(str(c.get("image", "")) for c in cs)


# ---- one printer per kind: (columns, cells of an object at time now) ------------------------------------


def _pod(o: dict[str, Any], now: float) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    ready = restarts = 0
    last_restart: float | None = None
    running = False
    for c in reversed(status.get("containerStatuses") or []):
        restarts += int(c.get("restartCount", 0))
        finished = _parse(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode', 0)}"
        elif c.get("ready") and "running" in state:
            running = True
            ready += 1
    if reason == "Completed" and running:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        reason = "Running" if conditions.get("Ready") == "True" else "NotReady"
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    shown = str(restarts)
    if restarts and last_restart is not None:
        shown = f"{restarts} ({human_duration(now - last_restart)} ago)"
    gates = spec.get("readinessGates") or []
    return [
        o["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        shown,
        since(o["metadata"].get("creationTimestamp"), now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        ",".join(g.get("conditionType", "") for g in gates) if gates else "<none>",
    ]


def _deployment(o: dict[str, Any], now: float) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(spec.get("template") or {})
    return [
        o["metadata"]["name"],
        f"{int(status.get('readyReplicas', 0))}/{int(spec.get('replicas', 1))}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        since(o["metadata"].get("creationTimestamp"), now),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _replicaset(o: dict[str, Any], now: float) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(spec.get("template") or {})
    return [
        o["metadata"]["name"],
        int(spec.get("replicas", 1)),
        int(status.get("replicas", 0)),
        int(status.get("readyReplicas", 0)),
        since(o["metadata"].get("creationTimestamp"), now),
        names,
        images,
        selector_string(spec.get("selector")),
    ]


def _service(o: dict[str, Any], now: float) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    stype = spec.get("type", "ClusterIP")
    external = list(spec.get("externalIPs") or [])
    if stype == "LoadBalancer":
        ingress = [
            i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []
        ]
        external = [*ingress, *external] or ["<pending>"]
    elif stype == "ExternalName":
        external = [spec.get("externalName", "")]
    ports = []
    for p in spec.get("ports") or []:
        node = f":{p['nodePort']}" if p.get("nodePort") and stype in ("NodePort", "LoadBalancer") else ""
        ports.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    selector = spec.get("selector") or {}
    return [
        o["metadata"]["name"],
        stype,
        spec.get("clusterIP") or "<none>",
        ",".join(external) if external else "<none>",
        ",".join(ports) if ports else "<none>",
        since(o["metadata"].get("creationTimestamp"), now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if selector else "<none>",
    ]


def _node(o: dict[str, Any], now: float) -> Row:
    status = o.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (o.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    if labels.get("kubernetes.io/role"):
        roles.append(labels["kubernetes.io/role"])
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [
        o["metadata"]["name"],
        state,
        ",".join(roles) if roles else "<none>",
        since(o["metadata"].get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _event(o: dict[str, Any], now: float) -> Row:
    first = since(o.get("firstTimestamp") or o.get("eventTime"), now)
    last = since(o["lastTimestamp"], now) if o.get("lastTimestamp") else first
    count = int(o.get("count") or 1)
    if o.get("series"):
        last, count = since(o["series"].get("lastObservedTime"), now), int(o["series"].get("count", 1))
    involved = o.get("involvedObject") or {}
    target = str(involved.get("kind", "")).lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    source = o.get("source") or {}
    shown = source.get("component") or o.get("reportingComponent") or ""
    if source.get("host"):
        shown = f"{shown}, {source['host']}"
    return [
        last,
        o.get("type", ""),
        o.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        shown,
        str(o.get("message", "")).strip(),
        first,
        count,
        o["metadata"]["name"],
    ]


def _namespace(o: dict[str, Any], now: float) -> Row:
    phase = (o.get("status") or {}).get("phase", "")
    return [o["metadata"]["name"], phase, since(o["metadata"].get("creationTimestamp"), now)]


def _configmap(o: dict[str, Any], now: float) -> Row:
    n = len(o.get("data") or {}) + len(o.get("binaryData") or {})
    return [o["metadata"]["name"], n, since(o["metadata"].get("creationTimestamp"), now)]


def _secret(o: dict[str, Any], now: float) -> Row:
    return [
        o["metadata"]["name"],
        o.get("type", "Opaque"),
        len(o.get("data") or {}),
        since(o["metadata"].get("creationTimestamp"), now),
    ]


def _serviceaccount(o: dict[str, Any], now: float) -> Row:
    return [
        o["metadata"]["name"],
        len(o.get("secrets") or []),
        since(o["metadata"].get("creationTimestamp"), now),
    ]


def _hpa(o: dict[str, Any], now: float) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    targets = []
    current = {
        m.get("resource", {}).get("name"): m for m in status.get("currentMetrics") or [] if m.get("resource")
    }
    for m in spec.get("metrics") or []:
        if m.get("type") == "Resource":
            name = m["resource"].get("name")
            target = m["resource"].get("target") or {}
            want = (
                f"{target['averageUtilization']}%"
                if "averageUtilization" in target
                else str(target.get("averageValue", ""))
            )
            got = (current.get(name) or {}).get("resource", {}).get("current", {})
            have = f"{got['averageUtilization']}%" if "averageUtilization" in got else "<unknown>"
            targets.append(f"{name}: {have}/{want}")
        else:
            targets.append("<unknown>")
    return [
        o["metadata"]["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        ", ".join(targets) if targets else "<none>",
        str(spec["minReplicas"]) if "minReplicas" in spec else "<unset>",
        int(spec.get("maxReplicas", 0)),
        int(status.get("currentReplicas", 0)),
        since(o["metadata"].get("creationTimestamp"), now),
    ]


def _endpointslice(o: dict[str, Any], now: float) -> Row:
    ports = [str(p.get("port")) for p in o.get("ports") or [] if p.get("port") is not None]
    addresses = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [
        o["metadata"]["name"],
        o.get("addressType", ""),
        ",".join(ports) if ports else "<unset>",
        shown or "<unset>",
        since(o["metadata"].get("creationTimestamp"), now),
    ]


def _default(o: dict[str, Any], now: float) -> Row:
    return [o["metadata"]["name"], since(o["metadata"].get("creationTimestamp"), now)]


_WIDE_TEMPLATE = [("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)]
PRINTERS: dict[str, tuple[Columns, Callable[[dict[str, Any], float], Row]]] = {
    "Pod": (
        [_NAME, ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0), _AGE,
         ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
         ("Readiness Gates", "string", 1)],
        _pod,
    ),
    "Deployment": (
        [_NAME, ("Ready", "string", 0), ("Up-to-date", "string", 0), ("Available", "string", 0), _AGE,
         *_WIDE_TEMPLATE],
        _deployment,
    ),
    "ReplicaSet": (
        [_NAME, ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0), _AGE,
         *_WIDE_TEMPLATE],
        _replicaset,
    ),
    "Service": (
        [_NAME, ("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
         ("Port(s)", "string", 0), _AGE, ("Selector", "string", 1)],
        _service,
    ),
    "Node": (
        [_NAME, ("Status", "string", 0), ("Roles", "string", 0), _AGE, ("Version", "string", 0),
         ("Internal-IP", "string", 1), ("External-IP", "string", 1), ("OS-Image", "string", 1),
         ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)],
        _node,
    ),
    "Event": (
        [("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0), ("Object", "string", 0),
         ("Subobject", "string", 1), ("Source", "string", 1), ("Message", "string", 0),
         ("First Seen", "string", 1), ("Count", "string", 1), ("Name", "string", 1)],
        _event,
    ),
    "Namespace": ([_NAME, ("Status", "string", 0), _AGE], _namespace),
    "ConfigMap": ([_NAME, ("Data", "string", 0), _AGE], _configmap),
    "Secret": ([_NAME, ("Type", "string", 0), ("Data", "string", 0), _AGE], _secret),
    "ServiceAccount": ([_NAME, ("Secrets", "string", 0), _AGE], _serviceaccount),
    "HorizontalPodAutoscaler": (
        [_NAME, ("Reference", "string", 0), ("Targets", "string", 0), ("MinPods", "string", 0),
         ("MaxPods", "string", 0), ("Replicas", "string", 0), _AGE],
        _hpa,
    ),
    "EndpointSlice": (
        [_NAME, ("AddressType", "string", 0), ("Ports", "string", 0), ("Endpoints", "string", 0), _AGE],
        _endpointslice,
    ),
}  # fmt: skip


def to_table(
    kind: Kind,
    objects: list[dict[str, Any]],
    now: float,
    include: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    headers: bool = True,
) -> dict[str, Any]:
    """The ``meta.k8s.io/v1`` Table of ``objects`` (full objects, each with apiVersion/kind)."""
    columns, printer = PRINTERS.get(kind.kind, ([_NAME, _AGE], _default))
    rows = []
    for o in objects:
        row: dict[str, Any] = {"cells": printer(o, now)}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata") or {},
            }
        rows.append(row)
    table: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta or {}}
    if headers:
        table["columnDefinitions"] = [
            {
                "name": name,
                "type": ctype,
                "format": "name" if name == "Name" and prio == 0 else "",
                "description": "",
                "priority": prio,
            }
            for name, ctype, prio in columns
        ]
    table["rows"] = rows
    return table


def wants_table(accept: str) -> bool:
    """Whether ``Accept`` asks for a Table (``application/json;as=Table;v=v1;g=meta.k8s.io``)."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[-1].strip() for p in part.split(";")[1:]}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
    return False
