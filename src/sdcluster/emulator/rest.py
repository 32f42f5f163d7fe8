"""Google's REST transport for the emulated APIs, routed by Google's own discovery documents.

Each API is served under its own prefix of the emulator's HTTP address, and below that prefix it
answers as ``https://<api>.googleapis.com/`` does::

    http://EMU/container/v1/projects/P/locations/L/clusters     (container.googleapis.com)
    http://EMU/compute/compute/v1/projects/P/regions/R          (compute.googleapis.com)

so ``CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER=http://EMU/container/`` points gcloud at it (gcloud
appends the discovery document's ``servicePath`` and method path to the override: ``env.py``), and
``api_endpoint="http://EMU/compute"`` points google-cloud-compute at it.

Routes (HTTP verb, path template, parameters, request body) are read from the discovery documents
google-api-python-client ships, never written by hand. A route is bound to

- the very ``Method`` the gRPC transport serves (``grpcutil.Service``), found by RPC name (derived
  from the discovery method id: ``projects.serviceAccounts.create`` -> ``CreateServiceAccount``,
  ``nodePools.setSize`` -> ``SetNodePoolSize``). The request is transcoded as Google's front end does:
  path and query parameters and the JSON body into the request message, the response message back
  into JSON with camelCase names (unknown JSON fields are rejected, as Google rejects them); or
- a JSON handler (``JsonMethod``: dict in, dict out) for the APIs whose protos the emulator does not
  have: Compute Engine v1, Resource Manager v1.

A route with neither answers 501. Errors take Google's REST form, ``{"error": {"code", "message",
"status", "details"}}`` (Compute Engine's own form, with ``errors``, for Compute).
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

import grpc
from google.protobuf import json_format

from .core import EmulatorError, World, invalid
from .grpcutil import Service, invoke, pack, pb_class


@dataclass(frozen=True)
class Api:
    """One REST API: its URL prefix (also the gcloud override name) and its discovery document."""

    prefix: str  # "container": served at /container/, CLOUDSDK_API_ENDPOINT_OVERRIDES_CONTAINER
    document: str  # "container.v1" (googleapiclient/discovery_cache/documents/<document>.json)
    grpc_service: str = ""  # the gRPC service whose methods back it ("" = JSON handlers)
    # The discovery resources the gRPC service implements (``projects.getIamPolicy`` of Resource
    # Manager is the project's policy; ``folders.getIamPolicy`` is not emulated).
    resources: tuple[str, ...] = ()
    compute_errors: bool = False  # errors in Compute Engine's older form (``errors`` with reasons)


APIS: tuple[Api, ...] = (
    Api("iam", "iam.v1", "google.iam.admin.v1.IAM", ("projects.serviceAccounts",)),
    Api(
        "iamcredentials",
        "iamcredentials.v1",
        "google.iam.credentials.v1.IAMCredentials",
        ("projects.serviceAccounts",),
    ),
    Api("cloudresourcemanager", "cloudresourcemanager.v1"),
    Api(
        "cloudresourcemanager",
        "cloudresourcemanager.v3",
        "google.cloud.resourcemanager.v3.Projects",
        ("projects",),
    ),
    Api("serviceusage", "serviceusage.v1", "google.api.serviceusage.v1.ServiceUsage", ("services",)),
    Api(
        "container",
        "container.v1",
        "google.container.v1.ClusterManager",
        ("projects.locations", "projects.zones"),
    ),
    Api("compute", "compute.v1", compute_errors=True),
    Api("cloudbilling", "cloudbilling.v1", "google.cloud.billing.v1.CloudCatalog", ("services",)),
)


# --------------------------------------------------------------------------------------------------
# Discovery documents -> routes


@dataclass(frozen=True)
class Param:
    name: str  # as in the discovery document: "pageSize", "options.requestedPolicyVersion"
    location: str  # "path" or "query"
    type: str  # "string", "integer", "boolean", ...
    format: str  # "int32", "int64", ...
    repeated: bool


@dataclass(frozen=True)
class Route:
    method_id: str  # "container.projects.locations.clusters.create"
    http_method: str
    regex: re.Pattern[str]  # matches the path below the API's prefix
    params: dict[str, Param]
    request_schema: str  # "" when the method takes no body


@functools.cache
def discovery_document(name: str) -> dict[str, Any]:
    """A discovery document google-api-python-client ships, e.g. ``discovery_document("iam.v1")``."""
    path = resources.files("googleapiclient.discovery_cache") / "documents" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _methods(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from node.get("methods", {}).values()
    for child in node.get("resources", {}).values():
        yield from _methods(child)


_EXPANSION = re.compile(r"\{(\+?)([^}]+)\}")


def _path_regex(template: str, params: dict[str, Any]) -> str:
    """``v1/{+name}/serviceAccounts`` -> a regex with one named group per parameter.

    ``{+x}`` (reserved expansion) may span slashes, within the parameter's documented pattern;
    ``{x}`` is one path segment.
    """
    out, pos = [], 0
    for m in _EXPANSION.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        plus, name = m.groups()
        group = _group(name)
        if plus:
            pattern = params.get(name, {}).get("pattern", "^.+$").removeprefix("^").removesuffix("$")
            out.append(f"(?P<{group}>{pattern})")
        else:
            out.append(f"(?P<{group}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


@functools.cache
def routes_of(document: str) -> tuple[Route, ...]:
    """Every method of ``document``, as routes below the API's prefix (servicePath included)."""
    doc = discovery_document(document)
    service_path = doc.get("servicePath", "")
    routes = []
    for m in _methods(doc):
        params = {
            name: Param(
                name, p["location"], p.get("type", "string"), p.get("format", ""), p.get("repeated", False)
            )
            for name, p in m.get("parameters", {}).items()
        }
        regex = re.compile(service_path.replace("/", r"\/") + _path_regex(m["path"], m.get("parameters", {})))
        routes.append(Route(m["id"], m["httpMethod"], regex, params, m.get("request", {}).get("$ref", "")))
    return tuple(routes)


def service_path(document: str) -> str:
    return str(discovery_document(document).get("servicePath", ""))


# Parameters every Google API accepts (discovery's top-level ``parameters``): none changes the answer
# here, ``alt`` aside (JSON is the only representation the emulator speaks).
_SYSTEM_PARAMS = frozenset(
    {"$.xgafv", "$alt", "access_token", "alt", "callback", "fields", "key", "oauth_token", "prettyPrint"}
    | {"quotaUser", "uploadType", "upload_protocol", "userIp"}
)


# --------------------------------------------------------------------------------------------------
# Bindings


@dataclass
class Call:
    """One REST call as a JSON handler sees it."""

    params: dict[str, Any]  # path and query parameters, by their discovery names
    body: dict[str, Any]


@dataclass
class JsonMethod:
    """A REST method implemented on JSON directly: ``fn(call, caller) -> response dict``.

    ``label`` and ``name`` are what the request log records (``LogEntry.service``/``method``).
    """

    fn: Callable[[Call, str], dict[str, Any]]
    label: str
    name: str
    mutating: bool = False
    resource: Callable[[Call], str] = field(default=lambda call: "")


def rpc_candidates(method_id: str) -> list[str]:
    """RPC names a discovery method may implement, most likely first.

    ``iam.projects.serviceAccounts.get`` -> ``GetServiceAccount``; ``...services.batchEnable`` ->
    ``BatchEnableServices``; ``...nodePools.setSize`` -> ``SetNodePoolSize``.
    """
    parts = method_id.split(".")[1:]
    verb = parts[-1]
    plural = parts[-2] if len(parts) > 1 else ""
    plural = plural[:1].upper() + plural[1:]
    singular = plural[:-1] if plural.endswith("s") else plural
    v = verb[:1].upper() + verb[1:]
    if verb == "list":
        return [f"List{plural}"]
    if verb in ("get", "create", "delete", "patch", "update"):
        return [f"{v}{singular}"]
    words = re.findall(r"[A-Z][a-z0-9]*", v)
    split = [f"{''.join(words[:i])}{singular}{''.join(words[i:])}" for i in range(1, len(words))]
    return [v, f"{v}{singular}", f"{v}{plural}", *split]


def _in_resources(method_id: str, resources: tuple[str, ...]) -> bool:
    """``iam.projects.serviceAccounts.get`` is in ``("projects.serviceAccounts",)``."""
    resource = method_id.split(".", 1)[1].rpartition(".")[0]
    return any(resource == r or resource.startswith(r + ".") for r in resources)


@dataclass
class Binding:
    route: Route
    api: Api
    service: Service | None = None
    rpc: str = ""
    json: JsonMethod | None = None


def bind(services: list[Service], json_methods: dict[str, JsonMethod]) -> dict[str, list[Binding]]:
    """Bindings by prefix, for every route of every API in ``APIS``.

    ``json_methods`` are keyed ``<document>:<method id without the API name>``, e.g.
    ``"compute.v1:regions.get"``.
    """
    by_name = {s.name: s for s in services}
    table: dict[str, list[Binding]] = {}
    for api in APIS:
        svc = by_name.get(api.grpc_service)
        for route in routes_of(api.document):
            b = Binding(route, api)
            key = f"{api.document}:{route.method_id.split('.', 1)[1]}"
            if key in json_methods:
                b.json = json_methods[key]
            elif svc is not None and _in_resources(route.method_id, api.resources):
                rpc = next((c for c in rpc_candidates(route.method_id) if c in svc.methods), "")
                if rpc:
                    b.service, b.rpc = svc, rpc
            table.setdefault(api.prefix, []).append(b)
    return table


# --------------------------------------------------------------------------------------------------
# Transcoding (proto bindings)


def _coerce(param: Param | None, values: list[str]) -> Any:
    def one(v: str) -> Any:
        if param is None:
            return v
        if param.type == "boolean":
            return v.lower() == "true"
        if param.type == "integer" and param.format in ("int32", "uint32"):
            try:
                return int(v)
            except ValueError:
                raise invalid(f"Invalid value at '{param.name}' (TYPE_INT32), \"{v}\"") from None
        return v

    if param is not None and param.repeated:
        return [one(v) for v in values]
    return one(values[-1])


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *heads, last = dotted.split(".")
    for h in heads:
        target = target.setdefault(h, {})
    target[last] = value


_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')


def _parse_error(e: json_format.ParseError) -> EmulatorError:
    """Google's wording for a JSON body the request message cannot hold."""
    m = _UNKNOWN_FIELD.search(str(e))
    if m:
        name, at = m.groups()
        where = at.split(".", 1)[1] if "." in at else ""
        message = f'Invalid JSON payload received. Unknown name "{name}"' + (
            f" at '{where}'" if where else ""
        )
        return invalid(f"{message}: Cannot find field.")
    return invalid(f"Invalid JSON payload received. {str(e).splitlines()[0]}")


def _request_message(b: Binding, params: dict[str, Any], body: dict[str, Any]) -> Any:
    assert b.service is not None
    rtype = b.service.methods[b.rpc].request_type
    pb = pb_class(rtype)()
    data: dict[str, Any] = {}
    if b.route.request_schema:
        body_field = _body_field(pb, b.route.request_schema)
        if body_field:
            data[body_field] = body
        else:
            data.update(body)
    for name, value in params.items():
        _set_dotted(data, name, value)
    parse_into(pb, data)
    return rtype.wrap(pb) if rtype is not type(pb) else pb


def parse_into(pb: Any, data: dict[str, Any]) -> Any:
    """Fill protobuf message ``pb`` from REST JSON, refusing unknown fields as Google does."""
    try:
        json_format.ParseDict(data, pb, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise _parse_error(e) from None
    return pb


def _body_field(pb: Any, schema: str) -> str:
    """ "" when the body is the whole request (``body: "*"``), else the field it fills (JSON name)."""
    desc = pb.DESCRIPTOR
    if desc.name == schema:
        return ""
    for f in desc.fields:
        if f.message_type is not None and f.message_type.name == schema:
            return str(f.json_name)
    return ""


def to_json(message: Any, int_enums: bool = False) -> dict[str, Any]:
    """A proto-plus or protobuf message as Google's REST JSON (camelCase, defaults omitted)."""
    pb = (
        type(message).pb(message)
        if hasattr(type(message), "pb") and hasattr(type(message), "wrap")
        else message
    )
    return json_format.MessageToDict(  # type: ignore[no-any-return]
        pb, preserving_proto_field_name=False, use_integers_for_enums=int_enums
    )


# --------------------------------------------------------------------------------------------------
# Errors


def error_body(e: EmulatorError, compute_style: bool = False) -> dict[str, Any]:
    """Google's REST error body for ``e``."""
    details = [json_format.MessageToDict(pack(d)) for d in e.rpc_details]
    if compute_style:  # Compute Engine (an older API) lists errors with a reason instead
        reason = _COMPUTE_REASONS.get(e.code, "invalid")
        err: dict[str, Any] = {
            "code": e.http_status,
            "message": e.message,
            "errors": [{"message": e.message, "domain": "global", "reason": reason}],
        }
    else:
        err = {"code": e.http_status, "message": e.message, "status": e.code.name}
    if details:
        err["details"] = details
    return {"error": err}


_COMPUTE_REASONS = {
    grpc.StatusCode.NOT_FOUND: "notFound",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.ALREADY_EXISTS: "alreadyExists",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.FAILED_PRECONDITION: "resourceNotReady",
    grpc.StatusCode.UNAUTHENTICATED: "required",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rateLimitExceeded",
    grpc.StatusCode.UNAVAILABLE: "backendError",
    grpc.StatusCode.UNIMPLEMENTED: "notImplemented",
}


# --------------------------------------------------------------------------------------------------
# Dispatch


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class Router:
    """Answers REST requests for ``world``: ``Router(world, services, json_methods).handle(...)``."""

    def __init__(self, world: World, services: list[Service], json_methods: dict[str, JsonMethod]) -> None:
        self.world = world
        self.table = bind(services, json_methods)

    def _match(self, verb: str, path: str) -> tuple[Binding, dict[str, str]] | None:
        prefix, _, rest = path.lstrip("/").partition("/")
        for b in self.table.get(prefix, []):
            if b.route.http_method != verb:
                continue
            m = b.route.regex.fullmatch(rest)
            if m:
                values = {
                    n: urllib.parse.unquote(m.group(_group(n)))
                    for n in b.route.params
                    if _group(n) in m.groupdict()
                }
                return b, values
        return None

    def handle(self, verb: str, target: str, raw_body: bytes, authorization: str | None) -> Response:
        url = urllib.parse.urlsplit(target)
        found = self._match(verb, url.path)
        if found is None:
            return Response(
                404,
                {
                    "error": {
                        "code": 404,
                        "message": f"The requested URL {url.path} was not found on this server.",
                        "status": "NOT_FOUND",
                    }
                },
            )
        b, path_values = found
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            params = self._params(b.route, path_values, query)
            body = self._body(raw_body) if b.route.request_schema else {}
            # GAPIC REST clients ask for enums as numbers: ``$alt=json;enum-encoding=int``.
            int_enums = "enum-encoding=int" in " ".join(query.get("$alt", []))
            return Response(200, self._dispatch(b, params, body, authorization, int_enums))
        except EmulatorError as e:
            return Response(e.http_status, error_body(e, compute_style=b.api.compute_errors))
        except Exception as e:  # a bug of the emulator: still an answer, never a dropped connection
            import traceback

            traceback.print_exc()
            return Response(
                500, error_body(EmulatorError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))
            )

    @staticmethod
    def _params(route: Route, path_values: dict[str, str], query: dict[str, list[str]]) -> dict[str, Any]:
        params: dict[str, Any] = dict(path_values)
        for name, values in query.items():
            if name in _SYSTEM_PARAMS:
                continue
            param = route.params.get(name)
            if param is None or param.location != "query":
                raise invalid(
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                    f"Field '{name}' could not be found in request message."
                )
            params[name] = _coerce(param, values)
        return params

    @staticmethod
    def _body(raw: bytes) -> dict[str, Any]:
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise invalid(f"Invalid JSON payload received. {e}") from None
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object.")
        return body

    def _dispatch(
        self,
        b: Binding,
        params: dict[str, Any],
        body: dict[str, Any],
        authorization: str | None,
        int_enums: bool = False,
    ) -> dict[str, Any]:
        world = self.world
        if b.json is not None:
            call = Call(params, body)
            jm = b.json
            with world.call(jm.label, jm.name, jm.resource(call), jm.mutating) as info:
                info.caller = world.authenticate(authorization)
                return jm.fn(call, info.caller)
        if b.service is None:
            raise EmulatorError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Method {b.route.method_id} is not implemented by the emulator.",
            )
        request = _request_message(b, params, body)
        return to_json(invoke(world, b.service, b.rpc, request, authorization), int_enums)


def http_handler(router: Router) -> type[BaseHTTPRequestHandler]:
    """The ``http.server`` handler class answering with ``router``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per response (see kubehttp)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            verb = self.headers.get("X-HTTP-Method-Override") or self.command
            resp = router.handle(verb, self.path, raw, self.headers.get("Authorization"))
            data = json.dumps(resp.body).encode()
            self.send_response(resp.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
