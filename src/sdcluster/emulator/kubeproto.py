"""The one Kubernetes protobuf body the emulator reads: ``SelfSubjectAccessReview``, which kubectl's
typed client sends as protobuf for ``kubectl auth can-i`` (client-go prefers protobuf for built-in
types). Any other protobuf body is refused with 415 (``kubewire.refuse_protobuf``).

The wire format: the magic ``k8s\\x00``, then a ``runtime.Unknown`` (typeMeta = 1, raw = 2) whose
``raw`` is the object; field numbers from kubernetes/api ``authorization/v1/generated.proto`` and
apimachinery ``pkg/runtime/generated.proto`` (v0.37).

Example::

    review = self_subject_access_review(body)   # {"apiVersion": ..., "spec": {"resourceAttributes": ...}}
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"

_RESOURCE_ATTRIBUTES = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
_NON_RESOURCE_ATTRIBUTES = ("path", "verb")


class ProtoError(ValueError):
    pass


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ProtoError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(data: bytes) -> dict[int, list[bytes | int]]:
    """The top-level fields of one message: number -> values (bytes for length-delimited)."""
    out: dict[int, list[bytes | int]] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _strings(data: bytes, names: tuple[str, ...]) -> dict[str, str]:
    f = fields(data)
    return {
        name: bytes(f[n][-1]).decode()
        for n, name in enumerate(names, 1)
        if n in f and isinstance(f[n][-1], bytes)
    }


def _message(f: dict[int, list[bytes | int]], number: int) -> bytes | None:
    values = f.get(number)
    return bytes(values[-1]) if values and isinstance(values[-1], bytes) else None


def self_subject_access_review(body: bytes) -> dict[str, Any]:
    """The review a protobuf body carries, as its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtoError("not a Kubernetes protobuf body")
    raw = _message(fields(body[len(MAGIC) :]), 2)
    if raw is None:
        raise ProtoError("no object in the body")
    spec_bytes = _message(fields(raw), 2) or b""
    spec_fields = fields(spec_bytes)
    spec: dict[str, Any] = {}
    resource = _message(spec_fields, 1)
    if resource is not None:
        spec["resourceAttributes"] = _strings(resource, _RESOURCE_ATTRIBUTES)
    non_resource = _message(spec_fields, 2)
    if non_resource is not None:
        spec["nonResourceAttributes"] = _strings(non_resource, _NON_RESOURCE_ATTRIBUTES)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}
