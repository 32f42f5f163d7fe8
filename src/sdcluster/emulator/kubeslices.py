"""The EndpointSlice controller of an emulated cluster: for each Service with a selector, one
``discovery.k8s.io/v1`` EndpointSlice listing the scheduled pods it selects (ready or not, as the
``ready``/``serving`` conditions say) and the Service's ports resolved to the pods' container ports;
what ``kubectl describe service`` shows as Endpoints.

Example::

    slices = endpoint_slices(rec)   # computed from the records, never stored
"""

from __future__ import annotations

from typing import Any

from . import kubelet, kubesim

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def endpoint_slices(rec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for svc in rec["objects"].get("services", {}).values():
        selector = svc["spec"].get("selector")
        if not selector or svc["spec"].get("type") == "ExternalName":
            continue
        meta = svc["metadata"]
        ns = meta.get("namespace", "default")
        pods = sorted(
            (
                p
                for p in rec.get("pods", {}).values()
                if p["namespace"] == ns
                and p.get("ip")
                and all(p["labels"].get(k) == v for k, v in selector.items())
            ),
            key=lambda p: p["name"],
        )
        nodes = rec.get("node_records", {})
        endpoints = [
            {
                "addresses": [p["ip"]],
                "conditions": {"ready": kubelet.ready(p), "serving": kubelet.ready(p), "terminating": False},
                "nodeName": p["node"],
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["name"], "uid": p["uid"]},
                **({"zone": nodes[p["node"]]["zone"]} if p["node"] in nodes else {}),
            }
            for p in pods
        ]
        ports = [_port(svc_port, pods) for svc_port in svc["spec"].get("ports") or []]
        suffix = kubesim.stable_uid("endpointslice", meta.get("uid", ""))[:5]
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{meta['name']}-{suffix}",
                    "generateName": f"{meta['name']}-",
                    "namespace": ns,
                    "uid": kubesim.stable_uid("endpointslice", meta.get("uid", ""), "uid"),
                    "resourceVersion": meta.get("resourceVersion", "1"),
                    "creationTimestamp": meta.get("creationTimestamp"),
                    "labels": {SERVICE_NAME: meta["name"], MANAGED_BY: "endpointslice-controller.k8s.io"},
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": meta["name"],
                            "uid": meta.get("uid", ""),
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            }
        )
    return out


def _port(svc_port: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """A Service port as the slice lists it: the target port, a name resolved on the pods."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, str):
        named = [
            cp.get("containerPort")
            for p in pods
            for c in p["spec"].get("containers") or []
            for cp in c.get("ports") or []
            if cp.get("name") == target
        ]
        target = named[0] if named else None
    out: dict[str, Any] = {"name": svc_port.get("name", ""), "protocol": svc_port.get("protocol", "TCP")}
    if target is not None:
        out["port"] = int(target)
    return out
