"""The HTTPS server of one cluster's apiserver: TLS, keep-alive HTTP/1.1, and the replies of
``kuberoutes.Router`` written as JSON, text or a chunked stream (watches, followed logs), with
``Warning`` headers; a bug answers 500 in the apiserver's ``Status`` form.

Example::

    handler = handler_class(Router(api, stopping))
"""

from __future__ import annotations

import select
import ssl
import threading
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from .core import EmulatorError
from .kubeerrors import KubeError, kube_error
from .kuberoutes import Router
from .kubewire import Reply, Request

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
        # TCP_NODELAY, as Go's net package sets on every connection of the apiserver: with Nagle on,
        # the body written after the headers waits for the client's delayed ACK (~40 ms a request).
        disable_nagle_algorithm = True
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
            request = Request(verb, url.path, query, self.headers, body)
            try:
                reply = router.handle(request, self._alive)
            except KubeError as e:
                reply = Reply(e.status, e.body())
            except EmulatorError as e:  # authentication, injected faults
                reply = Reply(*_status_of(e))
            except Exception as e:  # a bug here must still answer like an apiserver would
                traceback.print_exc()
                reply = Reply(500, kube_error(500, "InternalError", f"Internal error occurred: {e}").body())
            reply.warnings = reply.warnings or request.warnings
            if reply.stream is not None:
                self._stream(reply)
            else:
                self._send(reply)

        def _head(self, reply: Reply, content_type: str) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Audit-Id", str(uuid.uuid4()))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            for w in reply.warnings:  # RFC 7234 warnings (299, a quoted-string), as the apiserver sends them
                quoted = w.replace("\\", "\\\\").replace('"', '\\"')
                self.send_header("Warning", f'299 - "{quoted}"')

        def _send(self, reply: Reply) -> None:
            data, content_type = reply.encoded()
            self._head(reply, content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply) -> None:
            """Chunked transfer of a watch or a followed log; the connection closes after it."""
            assert reply.stream is not None
            self._head(reply, reply.content_type or "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            try:
                for chunk in reply.stream:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (OSError, ssl.SSLError):
                pass  # the client went away
            except KubeError as e:  # e.g. the cluster went away mid-stream: end it with the error
                error = Reply(e.status, e.body()).encoded()[0]
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(error), error))
            finally:
                close = getattr(reply.stream, "close", None)
                if close is not None:
                    close()

        def _alive(self) -> bool:
            """False once the client has closed its side (an idle stream finds out by reading)."""
            sock = self.connection
            try:
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    return True
                sock.settimeout(0.05)
                try:
                    return bool(sock.recv(1))
                finally:
                    sock.settimeout(300)
            except (ssl.SSLWantReadError, TimeoutError):
                return True
            except (OSError, ValueError):
                return False

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
