"""Wires the emulated services into one running emulator.

- one gRPC port (loopback, local credentials) serving IAM, IAM Credentials, Resource Manager,
  Service Usage, GKE ClusterManager and the emulator's own ``Control`` service (JSON in/out);
- one HTTP port for the REST endpoints google-auth calls itself (IAM Credentials
  ``generateAccessToken``, used by ``google.auth.impersonated_credentials``);
- Cloud Storage (JSON API, XML multipart uploads) on its own HTTP port;
- a Kubernetes API (HTTPS, per cluster) and TF Serving stand-ins, started by the GKE service.

Example::

    with Emulator(operation_s=0.2) as emu:
        os.environ["SDCLUSTER_EMULATOR"] = emu.address
        iam = emu.factory("user:demo@example.com").iam_admin()
"""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from dataclasses import asdict, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from ..protocol import CONTROL_SERVICE
from .core import EmulatorError, FaultRule, Knobs, World

TICK_S = 0.05


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
        from . import gke, iam, kube

        world = self.world
        hub = kube.Hub(world)
        world.kube = hub
        self._tickers = [lambda: gke.tick(world), hub.tick]

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        for h in [*iam.grpc_handlers(world), *gke.grpc_handlers(world), _control_handler(self)]:
            server.add_generic_rpc_handlers((h,))
        creds = grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        bound = server.add_secure_port(f"{self.host}:{self.port}", creds)
        if not bound:
            raise OSError(f"cannot bind {self.host}:{self.port}")
        self.port = bound
        server.start()
        self._grpc = server

        self._http = ThreadingHTTPServer((self.host, 0), _rest_handler(world))
        self.http_address = f"{self.host}:{self._http.server_address[1]}"
        self._spawn(self._http.serve_forever)

        self._start_storage()
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
        while not self._stop.wait(TICK_S):
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


# ---- REST endpoints that google-auth calls over HTTP -------------------------------------------------

_GENERATE = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken$")


def _rest_handler(world: World) -> type[BaseHTTPRequestHandler]:
    from . import iam

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            m = _GENERATE.match(self.path)
            if not m:
                self._send(
                    404, {"error": {"code": 404, "message": f"no route {self.path}", "status": "NOT_FOUND"}}
                )
                return
            email = m.group(1)
            try:
                body = json.loads(raw or b"{}")
                lifetime = float(str(body.get("lifetime", "3600s")).rstrip("s"))
                with world.call(
                    "iamcredentials", "GenerateAccessToken", f"projects/-/serviceAccounts/{email}", False
                ) as call:
                    call.caller = world.authenticate(self.headers.get("Authorization"))
                    token, expiry = iam.generate_access_token(
                        world, call.caller, email, body.get("scope", []), lifetime
                    )
            except EmulatorError as e:
                self._send(
                    e.http_status,
                    {"error": {"code": e.http_status, "message": e.message, "status": e.code.name}},
                )
                return
            import datetime as dt

            expire = dt.datetime.fromtimestamp(expiry, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._send(200, {"accessToken": token, "expireTime": expire})

    return Handler


def serve(host: str = "127.0.0.1", port: int = 0, state_file: str | None = None, **knobs: Any) -> None:
    """Run until interrupted, printing the export line (``sdcluster emulator serve``)."""
    emu = Emulator(host=host, port=port, state_file=state_file, **knobs).start()
    print(f"export SDCLUSTER_EMULATOR={emu.address}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
