"""The emulated methods, and how the gRPC transport serves them with generic handlers.

A ``Service`` is a table of ``Method``s (request type, response type, implementation). The gRPC
transport below and the REST transport (``rest.py``) serve the same tables: one implementation
behind two transports, each call going through ``invoke`` (latency, faults, identity, log).

Example::

    svc = Service("google.iam.admin.v1.IAM", "iam", {
        "GetServiceAccount": method(iam.GetServiceAccountRequest, iam.ServiceAccount, get_sa),
    })
    server.add_generic_rpc_handlers((grpc_handler(world, svc),))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from .core import EmulatorError, World


@dataclass
class Method:
    request_type: Any  # proto-plus class, or raw protobuf message class
    response_type: Any
    fn: Callable[[Any, str], Any]  # (request, caller member) -> response
    mutating: bool = False
    authenticated: bool = True


def method(
    request_type: Any, response_type: Any, fn: Callable[[Any, str], Any], mutating: bool = False
) -> Method:
    return Method(request_type, response_type, fn, mutating)


@dataclass
class Service:
    """One gRPC service: its full name, the label of its log entries, its methods by RPC name."""

    name: str  # e.g. "google.iam.admin.v1.IAM"
    label: str  # e.g. "iam" (``LogEntry.service``)
    methods: dict[str, Method]


def pb_class(t: Any) -> Any:
    """The raw protobuf class of a proto-plus or protobuf message class."""
    return t.pb() if hasattr(t, "pb") and hasattr(t, "wrap") else t


def _deserializer(t: Any) -> Callable[[bytes], Any]:
    if hasattr(t, "deserialize"):  # proto-plus
        return t.deserialize  # type: ignore[no-any-return]
    return t.FromString  # type: ignore[no-any-return]


def _serializer(t: Any) -> Callable[[Any], bytes]:
    if hasattr(t, "serialize"):  # proto-plus
        return t.serialize  # type: ignore[no-any-return]
    return lambda m: m.SerializeToString()


def resource_of(request: Any) -> str:
    for attr in ("name", "resource", "parent", "project_id", "cluster_id"):
        v = getattr(request, attr, None)
        if v:
            return str(v)
    return ""


def invoke(world: World, svc: Service, mname: str, request: Any, authorization: str | None) -> Any:
    """Run one call of ``svc.methods[mname]``: latency, faults, the caller's identity, the log."""
    m = svc.methods[mname]
    with world.call(svc.label, mname, resource_of(request), m.mutating) as info:
        if m.authenticated:
            info.caller = world.authenticate(authorization)
        return m.fn(request, info.caller)


def pack(detail: Any) -> any_pb2.Any:
    """An error detail (``ErrorInfo``, ``Help``...) as the ``Any`` Google sends it in."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def rich_status(e: EmulatorError) -> Any:
    """The gRPC status of ``e``, with its details."""
    details = [pack(d) for d in e.rpc_details]
    return rpc_status.to_status(status_pb2.Status(code=e.code.value[0], message=e.message, details=details))


def grpc_handler(world: World, svc: Service) -> grpc.GenericRpcHandler:
    """A generic handler serving every method of ``svc``."""

    def wrap(mname: str, m: Method) -> grpc.RpcMethodHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            meta = dict(context.invocation_metadata())
            try:
                return invoke(world, svc, mname, request, meta.get("authorization"))
            except EmulatorError as e:
                if e.rpc_details:
                    context.abort_with_status(rich_status(e))
                context.abort(e.code, e.message)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=_deserializer(m.request_type),
            response_serializer=_serializer(m.response_type),
        )

    return grpc.method_handlers_generic_handler(svc.name, {k: wrap(k, v) for k, v in svc.methods.items()})
