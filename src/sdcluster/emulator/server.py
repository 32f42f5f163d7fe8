"""Wires the emulated services into one running emulator.

- one gRPC port (loopback, local credentials) serving IAM, IAM Credentials, Resource Manager,
  Service Usage, GKE ClusterManager, the Cloud Billing Catalog and the emulator's own ``Control``
  service (JSON in/out);
- one HTTP port serving the same APIs (and Compute Engine) over REST, each under its own prefix
  (``rest.py``), for google-auth's impersonation, google-cloud-compute and gcloud (``env.py``);
- Cloud Storage (JSON API, XML multipart uploads) on its own HTTP port (``storage.py``);
- a Kubernetes API (HTTPS, per cluster) and TF Serving stand-ins, started by the GKE service.

Example::

    with Emulator(operation_s=0.2) as emu:
        os.environ["SDCLUSTER_EMULATOR"] = emu.address
        iam = emu.factory("user:demo@example.com").iam_admin()
"""

from __future__ import annotations

import json
import threading
from concurrent import futures
from dataclasses import asdict, fields
from http.server import ThreadingHTTPServer
from typing import Any

import grpc

from ..protocol import CONTROL_SERVICE
from .core import EmulatorError, FaultRule, Knobs, World
from .grpcutil import grpc_handler


class Emulator:
    """The whole emulator, in-process. Use as a context manager or call start()/stop()."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, state_file: str | None = None, **knobs: Any
    ) -> None:
        known = {f.name for f in fields(Knobs)}
        unknown = set(knobs) - known
        if unknown:
            raise TypeError(f"unknown emulator knobs: {sorted(unknown)}")
        self.host = host
        self.port = port
        self.world = World(Knobs(**knobs), state_file=state_file)
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._storage: Any = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._tickers: list[Any] = []
        self.storage_address = ""
        self.http_address = ""

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Emulator:
        from . import billing, compute, gke, iam, kube, rest

        world = self.world
        hub = kube.Hub(world)
        world.kube = hub
        self._tickers = [lambda: gke.tick(world), hub.tick]

        services = [*iam.services(world), *gke.services(world), *billing.services(world)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        for h in [*(grpc_handler(world, s) for s in services), _control_handler(self)]:
            server.add_generic_rpc_handlers((h,))
        creds = grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        bound = server.add_secure_port(f"{self.host}:{self.port}", creds)
        if not bound:
            raise OSError(f"cannot bind {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._grpc = server

        router = rest.Router(world, services, {**iam.json_methods(world), **compute.json_methods(world)})
        self._http = ThreadingHTTPServer((self.host, 0), rest.http_handler(router))
        self.http_address = f"{self.host}:{self._http.server_address[1]}"
        self._spawn(self._http.serve_forever)

        self._start_storage()
        hub.storage_address = self.storage_address  # where TF Serving processes read their models
        hub.resume()  # restart Kubernetes APIs of clusters loaded from a state file
        self._spawn(self._tick_loop)
        return self

    def _start_storage(self) -> None:
        from .storage import start_storage

        self._storage, self.storage_address = start_storage(self.world, self.host)

    def _spawn(self, fn: Any) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self._threads.append(t)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.world.knobs.tick_s):
            for tick in self._tickers:
                try:
                    tick()
                except Exception:  # a ticker must never kill the loop
                    import traceback

                    traceback.print_exc()

    def stop(self) -> None:
        self._stop.set()
        if self._grpc:
            self._grpc.stop(grace=0.1).wait()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        if self._storage:
            self._storage.stop()
        if self.world.kube is not None:
            self.world.kube.close()  # type: ignore[attr-defined]
        self.world.save()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- for tests and scripts ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def info(self) -> dict[str, Any]:
        return {
            "grpc": self.address,
            "http": self.http_address,
            "storage": self.storage_address,
            "project": self.world.knobs.project,
            "projects": [self.world.knobs.project, *self.world.knobs.extra_projects],
            "owner": self.world.knobs.owner,
        }

    @property
    def log(self) -> Any:
        return self.world.log

    def add_fault(self, **rule: Any) -> None:
        """Fail the next matching requests: ``emu.add_fault(method="^PUT /upload/", after=True)``
        (see ``core.FaultRule``)."""
        self.world.add_fault(FaultRule(**rule))


# ---- Control service (JSON over gRPC, used by tests in other processes and by clients.py) ----------


def _control_handler(emu: Emulator) -> grpc.GenericRpcHandler:
    world = emu.world

    def info(_: dict[str, Any]) -> dict[str, Any]:
        return emu.info()

    def log(req: dict[str, Any]) -> list[dict[str, Any]]:
        return [e.as_dict() for e in world.log.entries()]

    def clear_log(_: dict[str, Any]) -> dict[str, Any]:
        world.log.clear()
        return {}

    def set_knobs(req: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(Knobs)}
        with world.lock:
            for k, v in req.items():
                if k not in known:
                    raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown knob {k}")
                setattr(world.knobs, k, v)
        return asdict(world.knobs)

    def snapshot(_: dict[str, Any]) -> dict[str, Any]:
        return world.snapshot()

    def add_fault(req: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(FaultRule)}
        if set(req) - known:
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT, f"unknown fault fields {sorted(set(req) - known)}"
            )
        world.add_fault(FaultRule(**req))
        return {}

    handlers = {
        "Info": info,
        "Log": log,
        "ClearLog": clear_log,
        "SetKnobs": set_knobs,
        "Snapshot": snapshot,
        "AddFault": add_fault,
    }

    def wrap(fn: Any) -> grpc.RpcMethodHandler:
        def handle(req: Any, ctx: grpc.ServicerContext) -> Any:
            try:
                return fn(req)
            except EmulatorError as e:
                ctx.abort(e.code, e.message)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=lambda b: json.loads(b.decode() or "{}"),
            response_serializer=lambda d: json.dumps(d, default=str).encode(),
        )

    return grpc.method_handlers_generic_handler(CONTROL_SERVICE, {k: wrap(v) for k, v in handlers.items()})


def serve(host: str = "127.0.0.1", port: int = 0, state_file: str | None = None, **knobs: Any) -> None:
    """Run until interrupted, printing the export line (``sdcluster emulator serve``)."""
    emu = Emulator(host=host, port=port, state_file=state_file, **knobs).start()
    print(f"export SDCLUSTER_EMULATOR={emu.address}", flush=True)
    knob = emu.world.knobs
    print(
        f"# emulating project {knob.project} (owner {knob.owner}); sdcluster.toml must name that project",
        flush=True,
    )
    print('# gcloud and kubectl against it: eval "$(sdcluster emulator env)"', flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
