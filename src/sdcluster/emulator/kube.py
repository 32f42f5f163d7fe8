"""A Kubernetes API server per emulated GKE cluster, spoken to by the official ``kubernetes`` client.

The GKE service calls ``Hub.start_cluster(key, nodes)`` when a cluster becomes RUNNING and gets back
``(endpoint, ca_pem)``: an HTTPS endpoint on 127.0.0.1 whose certificate (for IP 127.0.0.1) is issued
by a per-cluster CA made with trustme. What the API does:

- **identity and permission** like GKE: bearer tokens name the caller (``World.authenticate``); IAM
  permissions on the project (``container.deployments.create``...) decide (401 / 403 ``Status``);
- **resources**: namespaces, configmaps, secrets, serviceaccounts, services, apps/v1 deployments
  (and ``deployments/scale``), autoscaling/v2 horizontalpodautoscalers; read-only replicasets,
  pods (deletable: a restart by hand), ``pods/log`` (``follow``), events, nodes and EndpointSlices
  kept by the controllers; ``SelfSubjectAccessReview``; verbs get, list (selectors, ``limit`` and
  ``continue``), watch, create, replace, delete, deletecollection, and patch: server-side apply
  (``application/apply-patch+yaml``, ``fieldManager``, ``force``), merge, strategic merge and JSON
  patch, with ``metadata.managedFields`` kept as upstream does (``kubemerge``); discovery, OpenAPI
  and Tables as kubectl reads them;
- **identity** of service accounts as GKE sees them: by email only with the ``userinfo.email`` scope
  on the token, else by their numeric unique ID;
- **validation** of every write against the upstream OpenAPI schemas (kubernetes-validate, strict,
  Kubernetes ``KUBERNETES_VERSION``) plus the semantic checks users hit (selector vs labels,
  quantities, immutable fields) -> 422 ``Invalid``;
- **controllers** (``Hub.tick`` -> ``kubecontrol.ClusterSim``): the Deployment and ReplicaSet
  controllers, the scheduler, the kubelet (``kubelet``: image pulls, probes, restarts, logs), GKE's
  cluster autoscaler and event aggregation with a TTL; LoadBalancer Services get a loopback IP
  (127.0.X.Y, X >= 1) after ``lb_s`` and, when deleted, linger with the
  ``service.kubernetes.io/load-balancer-cleanup`` finalizer for ``lb_s``;
- **TF Serving**: a ``tensorflow/serving`` container runs a TF Serving 2.11 process (``tfprocess``)
  that reads its model from the emulated Cloud Storage as the pod's identity (polls run outside
  ``world.lock``); a LoadBalancer Service with a ready TF Serving pod behind it gets a stand-in
  (``tfserving.ModelServer``) on its IP and port, answering from that pod's process.

The apiserver is split by concern: ``kubekinds`` (the resource kinds), ``kubehttp`` (the HTTPS
server), ``kuberoutes`` (routing, IAM authorization, content negotiation), ``kubewire`` (requests,
replies, bodies), ``kubestore`` (the object store and its verbs), ``kubesub`` (subresources and
access reviews), ``kubewatch`` (the change journal, watches and followed logs), ``kubevalidate``
and ``kubeschema`` (schemas, unknown fields, semantic checks, defaults), ``kubeselect``
(selectors), ``kubediscovery`` and ``kubeopenapi`` (discovery, OpenAPI v2/v3), ``kubetables``
(server-side Tables), ``kubeproto`` (the one protobuf body read), ``kubeslices`` (EndpointSlices),
``kubeerrors`` (``Status`` bodies); the controllers are ``kubecontrol``, ``kuberevisions`` and
``kubelet``. This module keeps the ``Hub``: the clusters' servers, the controllers' tick, the
root CA publisher, load balancers and TF Serving stand-ins.

State lives in ``world.data["kube"][key]``: ``endpoint`` (current ``127.0.0.1:PORT``; the port may
change after a restart from a state file, so read it from there or from ``Hub.endpoint_of(key)``),
``ca_cert``/``ca_key`` (PEM; the CA survives a restart), ``nodes`` (the pools, from GKE), ``objects``,
``rv`` and the controllers' records (``node_records``, ``replicasets``, ``pods``, ``events``,
``scale_ups``, ``lbs``).

Example::

    hub = Hub(world)
    endpoint, ca_pem = hub.start_cluster("projects/p/locations/us-central1-c/clusters/c", [
        {"name": "pool", "machine_type": "n2-standard-4", "node_count": 1, "cpus": 4,
         "memory_mib": 16384, "accelerators": 0}])
"""

from __future__ import annotations

import socket
import ssl
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from . import kubecontrol, kubecron, kubelet, kubesim, kubevalidate, tfprocess, tfserving
from .core import EmulatorError, World
from .kubeerrors import kube_error
from .kubehttp import ApiHTTPServer, Running, handler_class
from .kubekinds import BY_PLURAL, LB_FINALIZER, PROTECTED_NAMESPACES, STORED, Kind
from .kuberoutes import Router
from .kubestore import ClusterApi, WriteOptions
from .kubewatch import Journal

TF_SERVING_REST_PORT = 8501
MODEL_RETRY_S = 2.0  # a TF Serving stand-in that failed to start (address busy) is retried after this
ROOT_CA = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as "
    "the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of "
    "Kubernetes clusters."
)
# Load balancer IPs are loopback addresses shared by every emulator on the machine (each serves its
# TF Serving stand-in on <ip>:8501): an IP is claimed process-wide by the Hub that allocated it, and
# one whose port 8501 is already bound (another process's emulator) is skipped.
_CLAIMED_LB_IPS: dict[str, int] = {}  # ip -> id() of the Hub holding it
_CLAIMED_LOCK = threading.Lock()

# --------------------------------------------------------------------------------------------------
# TF Serving stand-ins behind load balancers


@dataclass(frozen=True)
class _ModelSpec:
    host: str
    port: int
    service: str  # "cluster key|ns/name"


@dataclass(frozen=True)
class _ReadJob:
    """One TF Serving poll of one container, run outside world.lock (it calls Cloud Storage)."""

    key: str
    pod: str  # "ns/name"
    container: str
    incarnation: tuple[float, int]  # (started, restarts): a restarted container drops old results
    base: str
    attempt: frozenset[int] | None
    token: str


# --------------------------------------------------------------------------------------------------
# The hub


class Hub:
    """All clusters' Kubernetes APIs (see the module docstring). Thread-safe."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._running: dict[str, Running] = {}
        self._cron: set[str] = set()  # CronJobs with a run going (concurrencyPolicy Forbid)
        self._models: dict[str, tuple[_ModelSpec, Any]] = {}
        self._failed_models: dict[_ModelSpec, float] = {}  # spec -> when its start failed
        self._models_lock = threading.Lock()
        # What each load balancer's stand-in answers from (replaced whole on every tick).
        self._backends: dict[str, tfserving.Servable] = {}
        # Cloud Storage, where TF Serving processes read their models (the emulator sets it).
        self.storage_address = ""
        self._reads: futures.ThreadPoolExecutor | None = None
        self._reading: set[tuple[str, str, str]] = set()
        # A load balancer's IP keeps port 8501 bound (not listening: connections are refused) while
        # no stand-in serves there, so that emulators in other processes do not take the address.
        self._held: dict[str, socket.socket] = {}
        self._held_lock = threading.Lock()
        self._saved_at = 0.0
        # Per cluster: the change journal watches read, and the event that ends its open streams.
        self._journals: dict[str, Journal] = {}
        self._stopping: dict[str, threading.Event] = {}

    # ---- lifecycle (called by the GKE service and the emulator) -----------------------------------
    def prepare(self) -> None:
        """Parse the apiserver's schemas in the background (once per process), while the cluster's
        operation runs: done on its first object instead, under world.lock, it stalled every
        request right after the operation ended."""
        if not kubevalidate.prepare.cache_info().currsize:
            threading.Thread(target=kubevalidate.prepare, name="kube-schemas", daemon=True).start()

    def start_cluster(self, key: str, nodes: list[dict[str, Any]]) -> tuple[str, str]:
        """Start (or keep running) the API of cluster ``key``; returns (endpoint, CA certificate PEM)."""
        with self.world.lock:
            clusters = self.world.data.setdefault("kube", {})
            rec = clusters.get(key)
            if rec is None:
                rec = clusters[key] = self._new_cluster(key, nodes)
            elif rec.get("nodes") != nodes:
                rec["nodes"] = nodes
            if key not in self._running:
                self._serve(key, rec)
            self.world.changed()
            return rec["endpoint"], rec["ca_cert"]

    def update_nodes(self, key: str, nodes: list[dict[str, Any]]) -> None:
        with self.world.lock:
            rec = self.world.data.get("kube", {}).get(key)
            if rec is not None and rec.get("nodes") != nodes:
                rec["nodes"] = nodes
                self.sim(key, rec)  # node records follow the pools at once
                self.world.changed()

    def stop_cluster(self, key: str) -> None:
        """Stop the API of cluster ``key`` and forget its objects (the cluster is gone)."""
        with self.world.lock:  # first, so requests still in flight answer 503 and the tick skips it
            if self.world.data.get("kube", {}).pop(key, None) is not None:
                self.world.changed()
        self._shutdown(key)
        self._journals.pop(key, None)
        self._stop_models(lambda mkey: mkey.startswith(f"{key}|"))

    def resume(self) -> None:
        """Restart the APIs of the clusters in ``world.data`` (after loading a state file), then let
        the GKE service record the (possibly new) endpoints its GetCluster answers with."""
        from . import gke

        with self.world.lock:
            for key, rec in self.world.data.get("kube", {}).items():
                if key not in self._running:
                    self._serve(key, rec)
            self.world.changed()
        gke.resume_clusters(self.world)

    def close(self) -> None:
        """Stop every server; the data stays (it is persisted for a restart)."""
        for key in list(self._running):
            self._shutdown(key)
        self._stop_models(lambda _: True)
        if self._reads is not None:
            self._reads.shutdown(wait=True, cancel_futures=True)
            self._reads = None
        for ip in list(self._held):
            self._unhold(ip)
        with _CLAIMED_LOCK:
            for ip in [ip for ip, hub in _CLAIMED_LB_IPS.items() if hub == id(self)]:
                del _CLAIMED_LB_IPS[ip]

    def endpoint_of(self, key: str) -> str:
        """The current ``127.0.0.1:PORT`` of cluster ``key`` (it may change across restarts)."""
        with self.world.lock:
            return str(self.world.data["kube"][key]["endpoint"])

    # ---- servers ------------------------------------------------------------------------------------
    def _new_cluster(self, key: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
        import trustme

        ca = trustme.CA(organization_name="sdcluster emulator", organization_unit_name=key)
        now = self.world.now()
        stamp = kubesim.rfc3339(now)
        namespaces = {
            ns: {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "uid": kubesim.stable_uid(key, "namespace", ns),
                    "resourceVersion": "1",
                    "creationTimestamp": stamp,
                    "labels": {"kubernetes.io/metadata.name": ns},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for ns in PROTECTED_NAMESPACES
        }
        return {
            "project": key.split("/")[1],
            "endpoint": "",
            "ca_cert": ca.cert_pem.bytes().decode(),
            "ca_key": ca.private_key_pem.bytes().decode(),
            "nodes": nodes,
            "rv": 1,
            "next_ip": 10,
            "next_node_port": 30000,
            "objects": {
                "namespaces": namespaces,
                "serviceaccounts": {
                    f"{ns}/default": _default_service_account(key, ns, stamp) for ns in namespaces
                },
            },
            "lbs": {},
        }

    def _serve(self, key: str, rec: dict[str, Any]) -> None:
        import trustme

        ca = trustme.CA.from_pem(rec["ca_cert"].encode(), rec["ca_key"].encode())
        leaf = ca.issue_cert("127.0.0.1", common_name="kubernetes")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        stopping = self._stopping[key] = threading.Event()
        handler = handler_class(Router(ClusterApi(self, key), stopping))
        old_port = int(rec["endpoint"].rsplit(":", 1)[1]) if rec.get("endpoint") else 0
        try:  # keep the endpoint a client already has, when the port is still free
            server = ApiHTTPServer(("127.0.0.1", old_port), handler)
        except OSError:
            server = ApiHTTPServer(("127.0.0.1", 0), handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        rec["endpoint"] = f"127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._running[key] = Running(server, thread)

    def _shutdown(self, key: str) -> None:
        running = self._running.pop(key, None)
        self._stopping.pop(key, threading.Event()).set()  # open watches and followed logs end
        if running is not None:
            running.server.shutdown()
            running.server.server_close()

    def journal(self, key: str) -> Journal:
        """The change journal of cluster ``key`` (call under world.lock)."""
        journal = self._journals.get(key)
        if journal is None:
            journal = self._journals[key] = Journal()
        return journal

    # ---- write hooks (called by ClusterApi under world.lock) ------------------------------------------
    def server_fields(
        self, rec: dict[str, Any], kind: Kind, oid: str, new: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Fields the apiserver allocates: a Service's clusterIP and nodePorts, the LB finalizer."""
        if kind.kind != "Service":
            return
        spec, old_spec = new["spec"], (old or {}).get("spec") or {}
        stype = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if stype == "ExternalName":
            return
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec.get("clusterIP") or self._next_cluster_ip(rec)
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        old_node_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p["port"])
            if stype not in ("NodePort", "LoadBalancer"):
                p.pop("nodePort", None)  # released when the type no longer needs one
            elif not p.get("nodePort"):
                p["nodePort"] = old_node_ports.get(p["port"]) or self._next_node_port(rec)
        meta = new["metadata"]
        if stype == "LoadBalancer":
            spec.setdefault("externalTrafficPolicy", "Cluster")
            spec.setdefault("allocateLoadBalancerNodePorts", True)
            if LB_FINALIZER not in (meta.get("finalizers") or []):
                meta["finalizers"] = [*(meta.get("finalizers") or []), LB_FINALIZER]
        new.setdefault("status", {"loadBalancer": {}})

    @staticmethod
    def _next_cluster_ip(rec: dict[str, Any]) -> str:
        n = rec["next_ip"] = int(rec.get("next_ip", 10)) + 1
        return f"10.8.{n // 256 % 256}.{n % 256}"

    @staticmethod
    def _next_node_port(rec: dict[str, Any]) -> int:
        n = rec["next_node_port"] = int(rec.get("next_node_port", 30000)) + 1
        return 30000 + (n - 30000) % 2768

    def after_write(self, key: str, rec: dict[str, Any], kind: Kind, oid: str, obj: dict[str, Any]) -> None:
        """Controllers that react at once: a new namespace gets its default ServiceAccount, the service
        controller starts (or releases) a load balancer."""
        now = self.world.now()
        if kind.kind == "Namespace":
            # The ServiceAccount controller gives every namespace its "default" ServiceAccount.
            accounts = rec["objects"].setdefault("serviceaccounts", {})
            accounts.setdefault(
                f"{oid}/default", _default_service_account(str(uuid.uuid4()), oid, kubesim.rfc3339(now))
            )
        elif kind.kind == "Service":
            lbs = rec["lbs"]
            if obj["spec"].get("type") == "LoadBalancer" and oid not in lbs:
                lbs[oid] = {"ip": self._allocate_lb_ip(), "since": now, "deleting": None}
            elif obj["spec"].get("type") != "LoadBalancer" and oid in lbs and not lbs[oid].get("deleting"):
                self._release_forwarding_rule(key, lbs.pop(oid))
                obj.setdefault("status", {})["loadBalancer"] = {}
                meta = obj["metadata"]
                meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != LB_FINALIZER] or None
                if meta["finalizers"] is None:
                    del meta["finalizers"]

    def forget(self, rec: dict[str, Any], kind: Kind, oid: str) -> None:
        """Remove a stored object and what controllers keep about it (a namespace takes its contents).

        A Service's load balancer stays until the service controller releases it (next tick)."""
        rec["objects"].get(kind.plural, {}).pop(oid, None)
        if kind.kind == "Deployment":  # the garbage collector takes its ReplicaSets and their pods
            for rsid in [i for i, rs in rec.get("replicasets", {}).items() if rs["deployment"] == oid]:
                del rec["replicasets"][rsid]
                for pid in [i for i, p in rec.get("pods", {}).items() if p["rs"] == rsid]:
                    del rec["pods"][pid]
        elif kind.kind == "Namespace":
            for plural in STORED:
                if plural != "namespaces":
                    for child in [i for i in rec["objects"].get(plural, {}) if i.startswith(f"{oid}/")]:
                        self.forget(rec, BY_PLURAL[plural], child)

    def _allocate_lb_ip(self) -> str:
        """A loopback address no other load balancer uses (127.0.X.Y, X >= 1: never 127.0.0.1)."""
        from . import compute

        used = {
            lb.get("ip")
            for rec in self.world.data.get("kube", {}).values()
            for lb in rec.get("lbs", {}).values()
        } | compute.rule_ips(self.world)  # a rule that outlived its cluster keeps its address
        with _CLAIMED_LOCK:
            for x in range(1, 255):
                for y in range(1, 255):
                    ip = f"127.0.{x}.{y}"
                    if ip in used or _CLAIMED_LB_IPS.get(ip, id(self)) != id(self):
                        continue
                    if not self._hold(ip):
                        continue
                    _CLAIMED_LB_IPS[ip] = id(self)
                    return ip
        raise kube_error(503, "ServiceUnavailable", "no load balancer addresses left")

    # ---- controllers ----------------------------------------------------------------------------------
    def sim(self, key: str, rec: dict[str, Any]) -> kubecontrol.ClusterSim:
        """The controllers of cluster ``key`` now (call under world.lock)."""
        project = key.split("/")[1]
        try:
            number = str(self.world.project(project)["number"])
        except EmulatorError:
            number = "0"
        api = ClusterApi(self, key)

        def resized(pool: str, count: int) -> None:
            from . import gke

            gke.autoscaled(self.world, key, pool, count)

        return kubecontrol.ClusterSim(
            key, rec, self.world.now(), self.world.knobs, number, api.bump_version, resized
        )

    def _kubelet_env(self, sim: kubecontrol.ClusterSim) -> kubelet.Env:
        knobs = self.world.knobs

        def configmap(ns: str, name: str, key: str) -> str | None:
            cm = sim.objects("configmaps").get(f"{ns}/{name}")
            if cm is None:
                return None
            value = (cm.get("data") or {}).get(key)
            return None if value is None else str(value)

        return kubelet.Env(
            rollout_s=knobs.rollout_s,
            kubelet_scale=knobs.kubelet_scale,
            tfserving_scale=knobs.tfserving_scale,
            model_load_s=knobs.model_load_s,
            predict_s_per_step=knobs.predict_s_per_step,
            image_size=0,
            record=sim.record,
            configmap=configmap,
        )

    def tick(self) -> None:
        """Advance every running cluster's controllers; read models; start/stop TF Serving stand-ins."""
        desired: dict[str, _ModelSpec] = {}
        backends: dict[str, tfserving.Servable] = {}
        jobs: list[_ReadJob] = []
        cron: list[kubecron.Run] = []
        with self.world.lock:
            for key, rec in self.world.data.get("kube", {}).items():
                if key not in self._running:
                    continue
                sim = self.sim(key, rec)
                sim.step(self._kubelet_env(sim))
                api = ClusterApi(self, key)
                self._reconcile_services(key, rec, sim.now, api)
                self._reconcile_hpas(rec, api)
                self._publish_root_ca(rec, api)
                journal = self._journals.get(key)
                if journal is not None:
                    journal.sync(api, journal.watched())
                jobs += self._read_jobs(key, rec, sim.now)
                nodes = sim.node_objects()
                for run in kubecron.due(key, rec, sim.now, self.world.knobs.cron_minute_s, nodes, self._cron):
                    self._cron.add(run.job)
                    cron.append(run)
                for mkey, (spec, servable) in self._desired_models(key, rec, sim).items():
                    desired[mkey], backends[mkey] = spec, servable
            # Pods change on every tick (probes, logs): persist at most once a second.
            if self.world.now() - self._saved_at >= 1.0:
                self._saved_at = self.world.now()
                self.world.changed()
        self._backends = backends
        for job in jobs:
            self._submit(job)
        for run in cron:
            kubecron.launch(run, self._cron_finished)
        self._sync_models(desired)
        self._release_unused_ips()

    def _cron_finished(self, run: kubecron.Run) -> None:
        with self.world.lock:
            self._cron.discard(run.job)
            rec = self.world.data.get("kube", {}).get(run.key)
            if rec is not None:
                kubecron.record(rec, run, self.world.now())

    # ---- load balancer addresses ---------------------------------------------------------------------
    def _hold(self, ip: str) -> bool:
        """Bind ``ip:8501`` without listening; False if something else has it."""
        with self._held_lock:
            if ip in self._held:
                return True
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((ip, TF_SERVING_REST_PORT))
            except OSError:
                sock.close()
                return False
            self._held[ip] = sock
            return True

    def _take_held(self, ip: str) -> socket.socket | None:
        with self._held_lock:
            return self._held.pop(ip, None)

    def _unhold(self, ip: str) -> None:
        sock = self._take_held(ip)
        if sock is not None:
            sock.close()

    def _release_unused_ips(self) -> None:
        with self.world.lock:
            used = {
                lb.get("ip")
                for rec in self.world.data.get("kube", {}).values()
                for lb in rec.get("lbs", {}).values()
            }
        with self._models_lock:
            serving = {spec.host for spec, _ in self._models.values()}
        for ip in list(self._held):
            if ip not in used:
                self._unhold(ip)
        for ip in used - serving - set(self._held):
            if ip:
                self._hold(ip)  # its stand-in stopped: keep the address

    # ---- TF Serving processes read their models (outside world.lock) --------------------------------
    def _read_jobs(self, key: str, rec: dict[str, Any], now: float) -> list[_ReadJob]:
        jobs = []
        for pid, pod in rec.get("pods", {}).items():
            for cname, c in pod["containers"].items():
                proc = c.get("proc")
                if proc is None or not tfprocess.due(proc, now) or (key, pid, cname) in self._reading:
                    continue
                attempt = tfprocess.wants_attempt(proc, now)
                ident = pod.get("identity") or {}
                token, _ = self.world.mint_token(
                    str(ident.get("member", "")), 3600, ident.get("scopes") or None
                )
                jobs.append(
                    _ReadJob(
                        key,
                        pid,
                        cname,
                        (c["started"], c["restarts"]),
                        proc["base"],
                        None if not proc["versions"] else frozenset(attempt),
                        token,
                    )
                )
        return jobs

    def _submit(self, job: _ReadJob) -> None:
        if self._reads is None:
            self._reads = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tfserving-read")
        self._reading.add((job.key, job.pod, job.container))
        self._reads.submit(self._read, job)

    def _read(self, job: _ReadJob) -> None:
        try:
            reader = tfprocess.GcsReader(self.storage_address, job.token) if self.storage_address else None
            attempt = None if job.attempt is None else set(job.attempt)
            listing = tfprocess.read_model_dir(reader, job.base, attempt)
            if job.attempt is not None and attempt is not None and not attempt:
                listing.pb.clear()  # nothing due: the poll only looks for new versions
            with self.world.lock:
                pod = self.world.data.get("kube", {}).get(job.key, {}).get("pods", {}).get(job.pod)
                c = (pod or {}).get("containers", {}).get(job.container)
                if c is None or c.get("proc") is None or (c["started"], c["restarts"]) != job.incarnation:
                    return
                tfprocess.apply_read(c["proc"], listing, self.world.now())
        except Exception:
            traceback.print_exc()
        finally:
            self._reading.discard((job.key, job.pod, job.container))

    # ---- load balancers -----------------------------------------------------------------------------
    def _reconcile_services(self, key: str, rec: dict[str, Any], now: float, api: ClusterApi) -> bool:
        """The service controller: a LoadBalancer Service gets its load balancer (a forwarding rule
        in the project's Compute Engine, ``compute.allocate_lb``) after ``lb_s``; deleting the Service
        releases it. Deleting the *cluster* does not: the rule outlives it, as on GKE."""
        changed = False
        services = rec["objects"].get("services", {})
        lb_s = self.world.knobs.lb_s
        for oid, lb in list(rec.get("lbs", {}).items()):
            svc = services.get(oid)
            if svc is None:
                self._release_forwarding_rule(key, rec["lbs"].pop(oid))
                changed = True
            elif lb.get("deleting"):
                if (
                    now >= lb["deleting"] + lb_s
                ):  # load balancer released: the finalizer goes, and the Service
                    self._release_forwarding_rule(key, lb)
                    self.forget(rec, BY_PLURAL["services"], oid)
                    api.bump_version()
                    changed = True
            elif now >= lb["since"] + lb_s and not svc.get("status", {}).get("loadBalancer", {}).get(
                "ingress"
            ):
                self._allocate_forwarding_rule(key, lb, svc)
                svc.setdefault("status", {})["loadBalancer"] = {
                    "ingress": [{"ip": lb["ip"], "ipMode": "VIP"}]
                }
                svc["metadata"]["resourceVersion"] = api.bump_version()
                changed = True
        return changed

    def _allocate_forwarding_rule(self, key: str, lb: dict[str, Any], svc: dict[str, Any]) -> None:
        from . import compute, gkecatalog

        project, location = key.split("/")[1], key.split("/")[3]
        meta = svc["metadata"]
        lb["uid"] = meta["uid"]
        compute.allocate_lb(
            self.world,
            project,
            gkecatalog.ZONES.get(location, location),
            key,
            meta["uid"],
            service_name=f"{meta.get('namespace', 'default')}/{meta['name']}",
            ip=lb["ip"],
        )

    def _release_forwarding_rule(self, key: str, lb: dict[str, Any]) -> None:
        from . import compute, gkecatalog

        if lb.get("uid"):
            project, location = key.split("/")[1], key.split("/")[3]
            compute.release_lb(self.world, project, gkecatalog.ZONES.get(location, location), key, lb["uid"])

    @staticmethod
    def _publish_root_ca(rec: dict[str, Any], api: ClusterApi) -> None:
        """The root CA publisher keeps a ``kube-root-ca.crt`` ConfigMap with the cluster's CA in
        every namespace, and puts it back when it is deleted or changed."""
        configmaps = BY_PLURAL["configmaps"]
        stored = rec["objects"].setdefault("configmaps", {})
        for ns in rec["objects"].get("namespaces", {}):
            cm = stored.get(f"{ns}/{ROOT_CA}")
            if cm is not None and (cm.get("data") or {}) == {"ca.crt": rec["ca_cert"]}:
                continue
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": ROOT_CA,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
                },
                "data": {"ca.crt": rec["ca_cert"]},
            }
            opts = WriteOptions(manager="kube-controller-manager")
            if cm is None:
                api.create(configmaps, ns, body, opts)
            else:
                body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
                api.replace(configmaps, ns, ROOT_CA, body, opts)

    def _reconcile_hpas(self, rec: dict[str, Any], api: ClusterApi) -> bool:
        changed = False
        deployments = rec["objects"].get("deployments", {})
        for hpa in rec["objects"].get("horizontalpodautoscalers", {}).values():
            spec, ns = hpa["spec"], hpa["metadata"].get("namespace", "default")
            target = deployments.get(f"{ns}/{(spec.get('scaleTargetRef') or {}).get('name', '')}")
            current = int((target or {}).get("status", {}).get("replicas", 0))
            want = (
                min(max(current, int(spec.get("minReplicas", 1))), int(spec.get("maxReplicas", 1)))
                if target
                else 0
            )
            status = {"currentReplicas": current, "desiredReplicas": want}
            if hpa.get("status") != status:
                hpa["status"] = status
                hpa["metadata"]["resourceVersion"] = api.bump_version()
                changed = True
        return changed

    def _desired_models(
        self, key: str, rec: dict[str, Any], sim: kubecontrol.ClusterSim
    ) -> dict[str, tuple[_ModelSpec, tfserving.Servable]]:
        """A stand-in for each LoadBalancer Service with an IP and a ready TF Serving pod behind it,
        answering from the newest ready pod's process (no ready pod: nothing listens, as kube-proxy
        rejects connections to a Service without endpoints)."""
        out = {}
        for oid, svc in rec["objects"].get("services", {}).items():
            ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
            if (
                svc["spec"].get("type") != "LoadBalancer"
                or not ingress
                or svc["metadata"].get("deletionTimestamp")
            ):
                continue
            ns = svc["metadata"].get("namespace", "default")
            for pod in sim.ready_pods(ns, svc["spec"].get("selector")):
                served = self._served_by(pod, svc)
                if served is not None:
                    port, proc = served
                    spec = _ModelSpec(ingress[0]["ip"], port, f"{key}|{oid}")
                    out[spec.service] = (spec, tfprocess.servable(proc, self.world.knobs.predict_s_per_step))
                    break
        return out

    @staticmethod
    def _served_by(pod: dict[str, Any], svc: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(Service port, TF Serving process) when the Service's port reaches the pod's REST port."""
        for c in pod["spec"].get("containers") or []:
            proc = pod["containers"].get(c.get("name"), {}).get("proc")
            if proc is None or not proc.get("rest_port"):
                continue
            port = _serving_port(svc, c, int(proc["rest_port"]))
            if port is not None and tfprocess.listens(proc, int(proc["rest_port"])):
                return port, proc
        return None

    def _sync_models(self, desired: dict[str, _ModelSpec]) -> None:
        """Start and stop stand-ins outside world.lock (they run their own HTTP servers)."""
        self._stop_models(lambda mkey: mkey not in desired or self._models[mkey][0] != desired[mkey])
        for mkey, spec in desired.items():
            with self._models_lock:
                if (
                    mkey in self._models
                    or self.world.now() - self._failed_models.get(spec, -1e9) < MODEL_RETRY_S
                ):
                    continue
            try:
                # The held socket becomes the stand-in's: the address is never free in between.
                held = self._take_held(spec.host) if spec.port == TF_SERVING_REST_PORT else None
                server = tfserving.ModelServer(spec.host, spec.port, self._backend(mkey), world=self.world)
                server.start(held)
            except Exception:
                traceback.print_exc()
                with self._models_lock:
                    self._failed_models[spec] = self.world.now()  # retry later, not every tick
                continue
            with self._models_lock:
                self._models[mkey] = (spec, server)

    def _backend(self, mkey: str) -> Callable[[], tfserving.Servable | None]:
        # Read without world.lock: called from the stand-in's request threads, it must never wait on
        # a lock a thread stopping that very server may hold; the dict is replaced whole each tick.
        return lambda: self._backends.get(mkey)

    def _stop_models(self, which: Callable[[str], bool]) -> None:
        with self._models_lock:
            doomed = [(k, v[1]) for k, v in self._models.items() if which(k)]
            for k, _ in doomed:
                del self._models[k]
        for _, server in doomed:
            try:
                server.stop()
            except Exception:
                traceback.print_exc()


def _default_service_account(seed: str, ns: str, stamp: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "default",
            "namespace": ns,
            "uid": kubesim.stable_uid(seed, "serviceaccount", ns, "default"),
            "resourceVersion": "1",
            "creationTimestamp": stamp,
        },
    }


def _serving_port(svc: dict[str, Any], container: dict[str, Any], rest_port: int) -> int | None:
    """The Service port whose target is the container's REST port, by number or by port name."""
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    for p in svc["spec"].get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        if target == rest_port or (isinstance(target, str) and named.get(target) == rest_port):
            return int(p["port"])
    return None
