"""What travels over the emulated apiserver's wire: one request, one reply (a JSON body, text, or a
stream of chunks for watches and followed logs), and the decoding of request bodies.

Example::

    reply = Reply(200, {"kind": "Pod", ...}, warnings=['unknown field "spec.foo"'])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .kubeerrors import bad_request, kube_error

PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class Request:
    verb: str  # GET POST PUT PATCH DELETE
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    member: str = ""  # the IAM member (who IAM authorizes)
    user: str = ""  # the member as Kubernetes names it
    account: tuple[str, str] | None = None  # (namespace, name) of a Kubernetes service account caller
    warnings: list[str] = field(default_factory=list)

    @property
    def accept(self) -> str:
        return str(self.headers.get("Accept") or "")

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able, str (text/plain) or bytes (already encoded JSON)
    content_type: str = ""
    stream: Iterator[bytes] | None = None  # chunks of a watch or a followed log
    warnings: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


def refuse_protobuf(request: Request) -> None:
    """415 for a Kubernetes protobuf body: the emulator decodes JSON and YAML only (no maintained
    package ships the Kubernetes protobuf definitions for Python)."""
    if request.content_type == PROTOBUF:
        raise kube_error(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml, application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml, application/strategic-merge-patch+json (the sdcluster emulator "
            "does not decode Kubernetes protobuf; send the object as YAML instead, e.g. "
            "`kubectl create configmap NAME --from-literal=k=v --dry-run=client -o yaml | kubectl apply -f -`)",
        )


def parse_json(body: bytes, duplicates: list[str] | None = None) -> Any:
    """The JSON body; with ``duplicates``, the paths of keys given twice are collected there (the last
    value wins, as upstream's decoder keeps it)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out and duplicates is not None:
                duplicates.append(k)
            out[k] = v
        return out

    try:
        return json.loads(body or b"null", object_pairs_hook=pairs)
    except ValueError as e:
        raise bad_request(f"error decoding JSON: {e}") from None


def parse_yaml(body: bytes) -> Any:
    import yaml

    try:
        data = yaml.safe_load(body or b"")
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(data, dict):
        raise bad_request("error decoding YAML: the applied configuration must be an object")
    return data


def parse_body(request: Request, duplicates: list[str] | None = None) -> Any:
    """A create or replace body, JSON or YAML by its Content-Type."""
    refuse_protobuf(request)
    if request.content_type in ("application/yaml", "application/x-yaml"):
        return parse_yaml(request.body)
    return parse_json(request.body, duplicates)
