"""The HTTPS server of one cluster's apiserver: routing, authentication and authorization (GKE's:
IAM permissions), and the answers as JSON or text."""

from __future__ import annotations

import json
import ssl
import threading
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from .core import EmulatorError, Identity
from .kubediscovery import discovery, version
from .kubeerrors import KubeError, details, kube_error
from .kubekinds import BY_PATH, PATH, Kind
from .kubestore import ClusterApi, dry_run, manager_from_agent, parse_json

USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"


class Router:
    """Routes one cluster's requests to its ``ClusterApi``."""

    def __init__(self, api: ClusterApi) -> None:
        self.api = api
        self.world = api.world
        self.project = api.project

    @property
    def rec(self) -> dict[str, Any]:
        return self.api.rec

    # ---- entry point ------------------------------------------------------------------------------
    def handle(
        self, verb: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON-able body or text)."""
        mutating = verb in ("POST", "PUT", "PATCH", "DELETE")
        path = path.rstrip("/") or "/"  # the client asks for "/version/"
        with self.world.call("k8s", verb, path, mutating) as info:
            if path in ("/healthz", "/livez", "/readyz"):
                return 200, "ok"
            if path == "/version":
                return 200, version()
            identity = self.world.identify(headers.get("Authorization"))
            user = self.kube_user(identity)
            info.caller = user if user.startswith(("user:", "serviceAccount:")) else f"serviceAccount:{user}"
            listing = discovery(path, self.rec["endpoint"])
            if listing is not None:
                return 200, listing
            return self._resource(verb, path, query, headers, body, identity.member, user)

    def kube_user(self, identity: Identity) -> str:
        """The member as GKE names it in Kubernetes: a service account's email only when its token
        carries the userinfo.email scope, else the account's numeric unique ID (IAM still decides)."""
        member = identity.member
        if (
            not member.startswith("serviceAccount:")
            or identity.scopes is None
            or USERINFO_EMAIL in identity.scopes
        ):
            return member
        from .iam import _accounts

        with self.world.lock:
            sa = _accounts(self.world).get(member.split(":", 1)[1])
        return str(sa["unique_id"]) if sa else member

    def _resource(
        self, verb: str, path: str, query: dict[str, str], headers: Any, body: bytes, caller: str, user: str
    ) -> tuple[int, Any]:
        m = PATH.match(path)
        kind = (
            BY_PATH.get(
                ("", "v1", m["plural"]) if m and m["core"] else (m["group"], m["version"], m["plural"])
            )
            if m
            else None
        )
        if m is None or kind is None or (m["ns"] and not kind.namespaced):
            raise kube_error(404, "NotFound", "the server could not find the requested resource")
        ns, name = m["ns"] or "", m["name"] or ""
        if query.get("watch") in ("true", "1"):
            raise kube_error(
                405, "MethodNotAllowed", "watch is not supported by the emulator; poll with list"
            )
        k8s_verb = {
            "GET": "get" if name else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[verb]
        if verb == "DELETE" and not name:
            k8s_verb = "deletecollection"
        if m["sub"] == "log":
            if kind.plural != "pods" or verb != "GET":
                raise kube_error(404, "NotFound", "the server could not find the requested resource")
            self._authorize(caller, user, kind, "getLogs", ns, name, "pods/log")
            with self.world.lock:
                return 200, self.api.pod_log(ns, name, query)
        self._authorize(caller, user, kind, k8s_verb, ns, name)
        if verb == "DELETE" and kind.plural == "pods" and name:
            with self.world.lock:
                return 200, self.api.delete_pod(ns, name)
        if verb != "GET" and not kind.writable:
            raise kube_error(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({kind.resource})",
            )
        dry = dry_run(query)
        manager = query.get("fieldManager") or manager_from_agent(headers.get("User-Agent", ""))
        with self.world.lock:
            if verb == "GET":
                return 200, self.api.get(kind, ns, name) if name else self.api.list_objects(kind, ns, query)
            if verb == "POST" and not name:
                return 201, self.api.create(kind, ns, parse_json(body), manager, dry)
            if not name:
                raise kube_error(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            if verb == "PUT":
                return 200, self.api.replace(kind, ns, name, parse_json(body), manager, dry)
            if verb == "PATCH":
                return self.api.patch(
                    kind, ns, name, headers.get("Content-Type", ""), body, query, manager, dry
                )
            if verb == "DELETE":
                return 200, self.api.delete(kind, ns, name, parse_json(body) if body.strip() else {}, dry)
        raise kube_error(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _authorize(
        self, caller: str, user: str, kind: Kind, verb: str, ns: str, name: str, resource: str | None = None
    ) -> None:
        """GKE authorizes through IAM: ``container.<resource>.<verb>`` on the project."""
        iam_verb = {"patch": "update", "deletecollection": "delete"}.get(verb, verb)
        permission = f"container.{kind.iam}.{iam_verb}"
        if self.world.has_permission(caller, permission, self.project):
            return
        user = user.split(":", 1)[-1]
        shown_verb = "get" if verb == "getLogs" else verb
        subject = f'{kind.resource} "{name}"' if name else kind.resource
        scope = f'in the namespace "{ns}"' if kind.namespaced and ns else "at the cluster scope"
        raise kube_error(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {shown_verb} resource "{resource or kind.plural}" in API '
            f'group "{kind.group}" {scope}: requires one of ["{permission}"] permission(s).',
            details(kind, name),
        )


# --------------------------------------------------------------------------------------------------
# The HTTPS server of one cluster


class ApiHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that rejects our certificate (wrong CA) aborts the handshake: its business, not ours.
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, ssl.SSLError | ConnectionError | TimeoutError | OSError):
            return
        traceback.print_exc()


def handler_class(router: Router) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the kubernetes client's connection pool expects
        server_version = "kube-apiserver"

        def setup(self) -> None:
            # The TLS handshake runs in the connection's own thread, so one slow or failing client
            # never stalls accept() for the others.
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(300)
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, verb: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload = router.handle(verb, url.path, query, self.headers, body)
            except KubeError as e:
                status, payload = e.status, e.body()
            except EmulatorError as e:  # authentication, injected faults
                status, payload = _status_of(e)
            except Exception as e:  # a bug here must still answer like an apiserver would
                traceback.print_exc()
                status, payload = (
                    500,
                    kube_error(500, "InternalError", f"Internal error occurred: {e}").body(),
                )
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Audit-Id", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _status_of(e: EmulatorError) -> tuple[int, dict[str, Any]]:
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return 401, kube_error(401, "Unauthorized", "Unauthorized").body()
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return 503, kube_error(503, "ServiceUnavailable", e.message).body()
    return e.http_status, kube_error(e.http_status, "InternalError", e.message).body()


@dataclass
class Running:
    server: ApiHTTPServer
    thread: threading.Thread
