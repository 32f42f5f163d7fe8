"""Errors as the apiserver words them: ``Status`` bodies with a reason and details."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grpc

from .core import EmulatorError
from .kubekinds import Kind

# --------------------------------------------------------------------------------------------------
# Errors as the apiserver words them (``Status`` bodies)


@dataclass
class KubeError(EmulatorError):
    """An apiserver failure: HTTP ``status``, ``reason`` (NotFound, Conflict...) and ``details``."""

    status: int = 500
    reason: str = "InternalError"
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status,
        }
        if self.details:
            out["details"] = self.details
        return out


_GRPC_OF = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def kube_error(status: int, reason: str, message: str, details: dict[str, Any] | None = None) -> KubeError:
    code = _GRPC_OF.get(status, grpc.StatusCode.INTERNAL)
    if reason == "AlreadyExists":
        code = grpc.StatusCode.ALREADY_EXISTS
    return KubeError(code, message, status, reason, details or {})


def details(kind: Kind, name: str) -> dict[str, Any]:
    return (
        {"name": name, "group": kind.group, "kind": kind.plural}
        if name
        else {"group": kind.group, "kind": kind.plural}
    )


def not_found(kind: Kind, name: str) -> KubeError:
    return kube_error(404, "NotFound", f'{kind.resource} "{name}" not found', details(kind, name))


def bad_request(message: str) -> KubeError:
    return kube_error(400, "BadRequest", message)


def conflict_modified(kind: Kind, name: str) -> KubeError:
    return kube_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; please apply '
        "your changes to the latest version and try again",
        details(kind, name),
    )


@dataclass
class Invalid:
    """One field error: ``spec.replicas: Invalid value: "x": ...``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


def invalid(kind: Kind, name: str, errors: list[Invalid]) -> KubeError:
    text = ", ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    if len(errors) > 1:
        text = f"[{text}]"
    causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    return kube_error(
        422,
        "Invalid",
        f'{kind.qualified_kind} "{name}" is invalid: {text}',
        {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes},
    )


def value_str(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)
