"""Serving official protos over gRPC with generic handlers, one helper for every emulated method.

Example::

    handler = service("google.iam.admin.v1.IAM", world, "iam", {
        "GetServiceAccount": method(iam.GetServiceAccountRequest, iam.ServiceAccount, get_sa),
    })
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

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


def service(name: str, world: World, label: str, methods: dict[str, Method]) -> grpc.GenericRpcHandler:
    """A generic handler serving ``methods`` of service ``name`` (e.g. "google.iam.admin.v1.IAM")."""

    def wrap(mname: str, m: Method) -> grpc.RpcMethodHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            meta = dict(context.invocation_metadata())
            try:
                with world.call(label, mname, resource_of(request), m.mutating) as info:
                    if m.authenticated:
                        info.caller = world.authenticate(meta.get("authorization"))
                    return m.fn(request, info.caller)
            except EmulatorError as e:
                context.abort(e.code, e.message)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=_deserializer(m.request_type),
            response_serializer=_serializer(m.response_type),
        )

    return grpc.method_handlers_generic_handler(name, {k: wrap(k, v) for k, v in methods.items()})
