"""Cloud Storage (JSON API) for the emulator: gcp-storage-emulator behind the emulator's gate.

gcp-storage-emulator (third party, pure Python) keeps buckets and objects and speaks the JSON API
the official ``google-cloud-storage`` client uses. It trusts everyone and ignores much of what a
bucket insert says, so this module serves its ``Storage`` through our own HTTP handler that, for
every request:

1. goes through ``World.call`` (latency, injected faults as 503 JSON errors, the request log);
2. names the caller from ``Authorization: Bearer emulator:<member>`` (401 on a bad token; no header
   is the anonymous caller, who gets 401 where GCS would);
3. checks the permission GCS checks (``storage.buckets.*`` / ``storage.objects.*``) against the
   project policy of the bucket's project and the bucket's own IAM policy;
4. fixes the fidelity gaps that matter to sdcluster: bucket insert applies its metadata (location
   upper-cased, labels, iamConfiguration, versioning, storage class), buckets belong to the project
   named on insert, deleting a non-empty bucket is a 409, bucket IAM policies have real etags
   (a stale etag is a 412), preconditions (``ifGenerationMatch`` ...) hold;
5. answers errors in GCS's JSON shape: ``{"error": {"code", "message", "errors": [{"reason"}]}}``.

The package's handler functions do the storing; nothing of it is forked or patched globally, so two
emulators in one process keep separate worlds. Routes the emulator does not serve answer 501.

Example::

    server, address = start_storage(world, "127.0.0.1")
    client = storage.Client(project="demo-proj", credentials=emulator_credentials("user:me@x.com"),
                            client_options={"api_endpoint": f"http://{address}"})
    stop_storage(server)
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from gcp_storage_emulator.handlers import buckets as pkg_buckets
from gcp_storage_emulator.handlers import objects as pkg_objects
from gcp_storage_emulator.server import Request, Response
from gcp_storage_emulator.storage import Storage

from .core import EmulatorError, World, role_grants

log = logging.getLogger(__name__)

SERVICE = "storage.googleapis.com"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API = "/storage/v1"
UPLOAD = "/upload/storage/v1"
DOWNLOAD = "/download/storage/v1"

# Bucket-only roles that the project-level role table (core.ROLE_PERMISSIONS) does not carry.
_BUCKET_ROLES: dict[str, frozenset[str]] = {
    "roles/storage.legacyBucketOwner": frozenset(
        {
            "storage.buckets.get",
            "storage.buckets.update",
            "storage.buckets.getIamPolicy",
            "storage.buckets.setIamPolicy",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
        }
    ),
    "roles/storage.legacyBucketReader": frozenset({"storage.buckets.get", "storage.objects.list"}),
    "roles/storage.legacyBucketWriter": frozenset(
        {"storage.buckets.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}
    ),
    "roles/storage.legacyObjectReader": frozenset({"storage.objects.get"}),
    "roles/storage.legacyObjectOwner": frozenset({"storage.objects.get", "storage.objects.update"}),
    "roles/storage.objectCreator": frozenset({"storage.objects.create"}),
    "roles/storage.objectUser": frozenset(
        {
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.update",
        }
    ),
}
# "projectOwner:P" on a bucket policy means "whoever holds roles/owner on project P".
_CONVENIENCE_ROLES = {
    "projectOwner": "roles/owner",
    "projectEditor": "roles/editor",
    "projectViewer": "roles/viewer",
}
_MEMBER_KINDS = (
    "user",
    "serviceAccount",
    "group",
    "domain",
    "principal",
    "principalSet",
    "deleted",
    *_CONVENIENCE_ROLES,
)
_PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_MULTI_REGIONS = {"US", "EU", "ASIA"}
_DUAL_REGIONS = {"NAM4", "EUR4", "EUR5", "EUR7", "EUR8", "ASIA1"}
_REGION = re.compile(r"^[A-Z]+-[A-Z]+[0-9]+$")
_STORAGE_CLASSES = {"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL"}
_UBLA_LOCK = dt.timedelta(days=90)  # uniform bucket-level access can be turned off for 90 days

PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."


# --------------------------------------------------------------------------------------------------
# Errors in GCS's JSON shape


_CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_REASON_OF_CODE = {
    grpc.StatusCode.UNAVAILABLE: "backendError",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rateLimitExceeded",
    grpc.StatusCode.UNAUTHENTICATED: "authError",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.NOT_FOUND: "notFound",
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.FAILED_PRECONDITION: "conditionNotMet",
}


@dataclass
class GcsError(EmulatorError):
    """An ``EmulatorError`` with the HTTP status and ``reason`` GCS answers (the log keeps ``code``)."""

    status: int = 500
    reason: str = "backendError"

    @property
    def http_status(self) -> int:
        return self.status

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"message": self.message, "domain": "global", "reason": self.reason}
        if self.status == 401:
            detail.update(locationType="header", location="Authorization")
        return {"error": {"code": self.status, "message": self.message, "errors": [detail]}}


def gcs_error(status: int, message: str, reason: str = "", code: grpc.StatusCode | None = None) -> GcsError:
    """``gcs_error(404, "The specified bucket does not exist.")`` -> a GcsError with GCS's reason."""
    code = code or _CODE_OF_STATUS.get(status, grpc.StatusCode.INTERNAL)
    return GcsError(code, message, status, reason or _REASON_OF_CODE.get(code, "backendError"))


def as_gcs_error(e: EmulatorError) -> GcsError:
    """The world's errors (faults, bad tokens, unknown projects, disabled API) in GCS's words."""
    if isinstance(e, GcsError):
        return e
    reason = _REASON_OF_CODE.get(e.code, "backendError")
    message = e.message
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        message = "Invalid Credentials"  # what GCS says for any bad or expired bearer token
    elif "SERVICE_DISABLED" in message:
        reason = "accessNotConfigured"
    return GcsError(e.code, message, e.http_status, reason)


def _permission_error(caller: str, permission: str, target: str) -> GcsError:
    """GCS's wording: "alice@x.com does not have storage.objects.get access to the Google Cloud
    Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist)."."""
    what = {"project": "Google Cloud project", "bucket": "Google Cloud Storage bucket"}.get(
        target, "Google Cloud Storage object"
    )
    who = caller.split(":", 1)[-1] if caller else "Anonymous caller"
    message = (
        f"{who} does not have {permission} access to the {what}. "
        f"Permission '{permission}' denied on resource (or it may not exist)."
    )
    if not caller:
        return gcs_error(401, message, "required")
    return gcs_error(403, message, "forbidden")


# --------------------------------------------------------------------------------------------------
# Etags: GCS's bucket and policy etags are base64 of a tiny protobuf (field 1 = the version), "CAE=".


def _etag(n: int) -> str:
    out = bytearray([0x08])
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return base64.b64encode(bytes(out)).decode()


def _etag_number(etag: str) -> int:
    try:
        raw = base64.b64decode(etag)
    except ValueError:
        return 0
    n = shift = 0
    for byte in raw[1:]:
        n |= (byte & 0x7F) << shift
        shift += 7
    return n


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------------
# One request's context and the routes


@dataclass
class Call:
    """What a route handler knows about the request it serves."""

    gate: StorageServer
    caller: str
    request: Any  # gcp_storage_emulator.server.Request
    response: Any  # _Response
    target: str  # "project", "bucket", "object" (the words of permission errors)
    project: str = ""
    bucket: dict[str, Any] | None = None

    @property
    def storage(self) -> Any:
        return self.gate.storage

    @property
    def bucket_name(self) -> str:
        return str(self.request.params.get("bucket_name", ""))

    def require(self, permission: str, target: str | None = None) -> None:
        """401/403 in GCS's words unless the caller holds ``permission`` here."""
        if not self.gate.allowed(self.caller, permission, self.project, self.bucket):
            raise _permission_error(self.caller, permission, target or self.target)


Handler = Callable[[Call], None]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/storage/v1/b/{bucket}/o/{object}": the log's name for the route
    target: str  # "project" (bucket list/insert), "bucket", "object", "session" (resumable upload)
    permission: str  # checked before the handler runs ("" = none, e.g. testIamPermissions)
    handler: Handler
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.escape(self.template)
        regex = regex.replace(r"\{bucket\}", r"(?P<bucket_name>[^/]+)").replace(
            r"\{object\}", r"(?P<object_id>.+)"
        )
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


class _Response(Response):  # type: ignore[misc]
    """The package's Response, remembering the JSON it was given (to translate error bodies)."""

    body: Any = None

    def json(self, obj: Any) -> None:
        self.body = obj
        super().json(obj)


# --------------------------------------------------------------------------------------------------
# Buckets


def _validate_bucket_name(name: str) -> None:
    if not name:
        raise gcs_error(400, "Required", "required")
    if (
        not _BUCKET_NAME.match(name)
        or "goog" in name
        or ".." in name
        or re.match(r"^\d+\.\d+\.\d+\.\d+$", name)
    ):
        raise gcs_error(400, f"Invalid bucket name: '{name}'", "invalid")


def _location_type(location: str, custom_placement: bool) -> str:
    if location in _MULTI_REGIONS:
        return "dual-region" if custom_placement else "multi-region"
    if location in _DUAL_REGIONS:
        return "dual-region"
    if _REGION.match(location):
        return "region"
    raise gcs_error(400, "The specified location constraint is not valid.", "invalid")


def _iam_configuration(given: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """GCS's iamConfiguration: uniformBucketLevelAccess mirrored by the deprecated bucketPolicyOnly,
    lockedTime set when it is turned on, publicAccessPrevention "inherited" unless enforced."""
    ubla = given.get("uniformBucketLevelAccess") or given.get("bucketPolicyOnly") or {}
    enabled = bool(ubla.get("enabled"))
    pap = given.get("publicAccessPrevention") or previous.get("publicAccessPrevention") or "inherited"
    if pap == "unspecified":
        pap = "inherited"
    if pap not in ("inherited", "enforced"):
        raise gcs_error(400, f"Invalid value for publicAccessPrevention: {pap}", "invalid")
    state: dict[str, Any] = {"enabled": enabled}
    if enabled:
        was = previous.get("uniformBucketLevelAccess") or {}
        locked = dt.datetime.now(dt.UTC) + _UBLA_LOCK
        state["lockedTime"] = was.get("lockedTime") or locked.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"bucketPolicyOnly": dict(state), "uniformBucketLevelAccess": state, "publicAccessPrevention": pap}


def _normalize_bucket(bucket: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make a bucket resource read back as GCS returns it (after insert or patch)."""
    previous = previous or {}
    if previous.get("location"):
        bucket["location"] = previous["location"]  # a bucket's location never changes
        bucket["locationType"] = previous["locationType"]
    else:
        bucket["location"] = str(bucket.get("location") or "US").upper()
        bucket["locationType"] = _location_type(bucket["location"], bool(bucket.get("customPlacementConfig")))
    storage_class = str(bucket.get("storageClass") or "STANDARD").upper()
    if storage_class not in _STORAGE_CLASSES:
        raise gcs_error(400, f"Invalid storage class: {storage_class}", "invalid")
    bucket["storageClass"] = storage_class
    bucket["iamConfiguration"] = _iam_configuration(
        bucket.get("iamConfiguration") or {}, previous.get("iamConfiguration") or {}
    )
    if "versioning" in bucket:
        bucket["versioning"] = {"enabled": bool((bucket["versioning"] or {}).get("enabled"))}
    if not bucket.get("labels"):
        bucket.pop("labels", None)
    bucket["etag"] = _etag(int(bucket["metageneration"]))
    return bucket


def _default_policy(bucket: dict[str, Any], project: str) -> dict[str, Any]:
    """What GCS puts on a new bucket: the project's owners/editors own it, its viewers read it."""
    return {
        "kind": "storage#policy",
        "resourceId": f"projects/_/buckets/{bucket['name']}",
        "version": 1,
        "etag": _etag(1),
        "bindings": [
            {
                "role": "roles/storage.legacyBucketOwner",
                "members": [f"projectEditor:{project}", f"projectOwner:{project}"],
            },
            {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{project}"]},
        ],
    }


def _check_metageneration(query: dict[str, list[str]], resource: dict[str, Any]) -> None:
    want = query.get("ifMetagenerationMatch")
    if want and want[0] != str(resource.get("metageneration")):
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    unwanted = query.get("ifMetagenerationNotMatch")
    if unwanted and unwanted[0] == str(resource.get("metageneration")):
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")


def list_buckets(call: Call) -> None:
    """Only the project's buckets (the package lists every bucket it holds)."""
    number = call.gate.world.project(call.project)["number"]
    prefix = (call.request.query.get("prefix") or [""])[0]
    items = [
        b
        for name, b in sorted(call.storage.buckets.items())
        if b.get("projectNumber") == number and name.startswith(prefix)
    ]
    call.response.json({"kind": "storage#buckets", "items": items})


def insert_bucket(call: Call) -> None:
    """Create the bucket in the ``project`` of the query, with the metadata of the body."""
    body = call.request.data if isinstance(call.request.data, dict) else {}
    name = str(body.get("name") or "")
    _validate_bucket_name(name)
    existing = call.storage.get_bucket(name)
    number = call.gate.world.project(call.project)["number"]
    if existing:
        if existing.get("projectNumber") == number:
            raise gcs_error(
                409, "Your previous request to create the named bucket succeeded and you already own it."
            )
        raise gcs_error(
            409,
            "The requested bucket name is not available. The bucket namespace is shared by all users of the "
            "system. Please select a different name and try again.",
        )
    bucket = pkg_buckets._make_bucket_resource(name, project_number=number)
    bucket = pkg_buckets._patch_bucket(bucket, body)
    bucket["metageneration"] = "1"  # _patch_bucket counts the insert's metadata as an update
    bucket = _normalize_bucket(bucket)
    call.storage.create_bucket(name, bucket)
    call.storage.set_bucket_iam_policy(name, _default_policy(bucket, call.project))
    call.response.json(bucket)


def get_bucket(call: Call) -> None:
    assert call.bucket is not None
    _check_metageneration(call.request.query, call.bucket)
    call.response.json(call.bucket)


def patch_bucket(call: Call) -> None:
    """PATCH (and PUT, which the package lacks) of bucket metadata, read back as GCS would."""
    assert call.bucket is not None
    _check_metageneration(call.request.query, call.bucket)
    body = call.request.data if isinstance(call.request.data, dict) else {}
    # Work on a copy: a rejected update (say, a bad storage class) must leave the bucket as it was.
    updated = pkg_buckets._patch_bucket(copy.deepcopy(call.bucket), body)
    if call.request.method == "PATCH" and body.get("labels") is not None:
        # PATCH merges labels, and a null value deletes its key (PUT replaces them all).
        merged = {**(call.bucket.get("labels") or {}), **body["labels"]}
        updated["labels"] = {k: v for k, v in merged.items() if v is not None}
    updated["updated"] = _now()
    updated = _normalize_bucket(updated, call.bucket)
    call.storage.create_bucket(call.bucket_name, updated)
    call.response.json(updated)


def delete_bucket(call: Call) -> None:
    assert call.bucket is not None
    _check_metageneration(call.request.query, call.bucket)
    if call.storage.objects.get(call.bucket_name):
        raise gcs_error(
            409,
            "The bucket you tried to delete is not empty.",
            "conflict",
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    pkg_buckets.delete(call.request, call.response, call.storage)
    call.response.status = HTTPStatus.NO_CONTENT


# --------------------------------------------------------------------------------------------------
# Bucket IAM


def bucket_policy(storage: Any, bucket: dict[str, Any], project: str) -> dict[str, Any]:
    """The bucket's stored IAM policy, or the one GCS gives a new bucket."""
    return storage.get_bucket_iam_policy(bucket["name"]) or _default_policy(bucket, project)


def _policy(call: Call) -> dict[str, Any]:
    assert call.bucket is not None
    return bucket_policy(call.storage, call.bucket, call.project)


def _policy_response(policy: dict[str, Any]) -> dict[str, Any]:
    return {k: policy[k] for k in ("kind", "resourceId", "version", "etag", "bindings")}


def _validate_binding(binding: dict[str, Any], public_access_prevented: bool) -> dict[str, Any]:
    role = str(binding.get("role") or "")
    if not (role in _BUCKET_ROLES or role.startswith("roles/storage.") or "/roles/" in role):
        raise gcs_error(400, f"Role {role} is not supported for this resource.", "invalid")
    members = sorted(set(binding.get("members") or []))
    for m in members:
        if m in _PUBLIC_MEMBERS:
            if public_access_prevented:
                raise gcs_error(
                    412,
                    "The member bindings allUsers and allAuthenticatedUsers are not allowed since public "
                    "access prevention is enforced.",
                    "conditionNotMet",
                )
        elif m.split(":", 1)[0] not in _MEMBER_KINDS or ":" not in m:
            raise gcs_error(400, f"Invalid argument: member '{m}' is not valid.", "invalid")
    out: dict[str, Any] = {"role": role, "members": members}
    if binding.get("condition"):
        out["condition"] = binding["condition"]
    return out


def get_bucket_iam(call: Call) -> None:
    call.response.json(_policy_response(_policy(call)))


def set_bucket_iam(call: Call) -> None:
    """Replace the bucket's policy; compare-and-swap on ``etag`` (stale -> 412, as GCS)."""
    assert call.bucket is not None
    body = call.request.data if isinstance(call.request.data, dict) else {}
    current = _policy(call)
    if body.get("etag") and body["etag"] != current["etag"]:
        raise gcs_error(412, "Precondition Failed", "conditionNotMet")
    prevented = call.bucket["iamConfiguration"].get("publicAccessPrevention") == "enforced"
    bindings = [_validate_binding(b, prevented) for b in body.get("bindings") or []]
    policy = {
        **current,
        "version": int(body.get("version") or 1),
        "etag": _etag(_etag_number(current["etag"]) + 1),
        "bindings": [b for b in bindings if b["members"]],
    }
    call.storage.set_bucket_iam_policy(call.bucket_name, policy)
    call.response.json(_policy_response(policy))


def test_bucket_iam(call: Call) -> None:
    """The subset of ``permissions`` the caller holds on the bucket (the package says "all")."""
    asked = call.request.query.get("permissions") or []
    held = [p for p in asked if call.gate.allowed(call.caller, p, call.project, call.bucket)]
    call.response.json({"kind": "storage#testIamPermissionsResponse", "permissions": held})


# --------------------------------------------------------------------------------------------------
# Objects


def _live_object(call: Call, name: str) -> dict[str, Any] | None:
    return call.storage.objects.get(call.bucket_name, {}).get(name)  # type: ignore[no-any-return]


def _check_generation(query: dict[str, list[str]], obj: dict[str, Any] | None) -> None:
    """ifGenerationMatch (0 = "must not exist") and ifGenerationNotMatch, as GCS evaluates them."""
    generation = str(obj["generation"]) if obj else "0"
    want = query.get("ifGenerationMatch")
    if want and want[0] != generation:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    unwanted = query.get("ifGenerationNotMatch")
    if unwanted and unwanted[0] == generation:
        raise gcs_error(412, PRECONDITION_FAILED, "conditionNotMet")
    if obj:
        _check_metageneration(query, obj)


def _upload_name(request: Any) -> str:
    if request.query.get("name"):
        return str(request.query["name"][0])
    data = request.data if isinstance(request.data, dict) else {}
    meta = data.get("meta", data)  # multipart: {"meta": ..., "content": ...}; resumable: the metadata
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


def insert_object(call: Call) -> None:
    """Simple, multipart and resumable-session uploads. Overwriting also needs objects.delete."""
    name = _upload_name(call.request)
    if not name:
        raise gcs_error(400, "Required", "required")
    existing = _live_object(call, name)
    if existing:
        call.require("storage.objects.delete")
    _check_generation(call.request.query, existing)
    assert call.bucket is not None
    if (
        call.request.query.get("predefinedAcl")
        and call.bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]
    ):
        raise gcs_error(
            400,
            "Cannot insert legacy ACL for an object when uniform bucket-level access is enabled. Read more at "
            "https://cloud.google.com/storage/docs/uniform-bucket-level-access",
            "invalid",
        )
    pkg_objects.insert(call.request, call.response, call.storage)


def upload_session(call: Call) -> None:
    """The chunks of a resumable upload: the session URI is the credential, as on GCS."""
    pkg_objects.upload_partial(call.request, call.response, call.storage)


def _object_op(fn: Callable[..., Any]) -> Handler:
    """A package object handler, after GCS's generation checks (``generation=`` names the live one)."""

    def handle(call: Call) -> None:
        query = call.request.query
        if not query.get("softDeleted"):
            name = call.request.params["object_id"]
            obj = _live_object(call, name)
            if obj and query.get("generation") and query["generation"][0] != str(obj["generation"]):
                raise gcs_error(404, f"No such object: {call.bucket_name}/{name}", "notFound")
            _check_generation(query, obj)
        fn(call.request, call.response, call.storage)

    return handle


def _package(fn: Callable[..., Any]) -> Handler:
    return lambda call: fn(call.request, call.response, call.storage)


_B = "/b/{bucket}"
_O = "/b/{bucket}/o/{object}"
ROUTES: tuple[Route, ...] = (
    Route("GET", f"{API}/b", "project", "storage.buckets.list", list_buckets),
    Route("POST", f"{API}/b", "project", "storage.buckets.create", insert_bucket),
    Route("GET", f"{API}{_B}/iam/testPermissions", "bucket", "", test_bucket_iam),
    Route("GET", f"{API}{_B}/iam", "bucket", "storage.buckets.getIamPolicy", get_bucket_iam),
    Route("PUT", f"{API}{_B}/iam", "bucket", "storage.buckets.setIamPolicy", set_bucket_iam),
    Route("GET", f"{API}{_B}", "bucket", "storage.buckets.get", get_bucket),
    Route("PATCH", f"{API}{_B}", "bucket", "storage.buckets.update", patch_bucket),
    Route("PUT", f"{API}{_B}", "bucket", "storage.buckets.update", patch_bucket),
    Route("DELETE", f"{API}{_B}", "bucket", "storage.buckets.delete", delete_bucket),
    Route("GET", f"{API}{_B}/o", "bucket", "storage.objects.list", _package(pkg_objects.ls)),
    Route("GET", f"{API}{_O}", "object", "storage.objects.get", _object_op(pkg_objects.get)),
    Route("PATCH", f"{API}{_O}", "object", "storage.objects.update", _object_op(pkg_objects.patch)),
    Route("DELETE", f"{API}{_O}", "object", "storage.objects.delete", _object_op(pkg_objects.delete)),
    Route("POST", f"{UPLOAD}{_B}/o", "object", "storage.objects.create", insert_object),
    Route("GET", f"{DOWNLOAD}{_O}", "object", "storage.objects.get", _object_op(pkg_objects.download)),
)
# Resumable sessions: PUT (and POST, which some clients send) with ?upload_id=.
SESSION_ROUTES = (
    Route("PUT", f"{UPLOAD}{_B}/o", "session", "", upload_session),
    Route("POST", f"{UPLOAD}{_B}/o", "session", "", upload_session),
)


def find_route(method: str, path: str, query: dict[str, list[str]]) -> tuple[Route, re.Match[str]] | None:
    """The route serving ``method path`` (``/upload/...?upload_id=`` is a session's chunk)."""
    routes = SESSION_ROUTES if "upload_id" in query else ROUTES
    for route in routes:
        if route.method == method:
            match = route.pattern.match(path)
            if match:
                return route, match
    return None


def _resource_of(params: dict[str, str], query: dict[str, list[str]]) -> str:
    """GCS's IAM resource names: projects/_/buckets/B[/objects/O]; projects/P for list/insert."""
    if "bucket_name" not in params:
        return f"projects/{(query.get('project') or ['_'])[0]}"
    resource = f"projects/_/buckets/{params['bucket_name']}"
    name = params.get("object_id") or (query.get("name") or [""])[0]
    return f"{resource}/objects/{name}" if name else resource


# --------------------------------------------------------------------------------------------------
# The server


class StorageServer:
    """The package's ``Storage`` served over HTTP through the emulator's gate (one per emulator)."""

    def __init__(self, world: World, host: str, storage: Any) -> None:
        self.world = world
        self.storage = storage
        # The package's Storage is not thread-safe; the HTTP server is (parallel uploads).
        self.lock = threading.RLock()
        self.httpd = _HTTPServer((host, 0), self)
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="storage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    # ---- permissions ---------------------------------------------------------------------------
    def allowed(self, caller: str, permission: str, project: str, bucket: dict[str, Any] | None) -> bool:
        """The project's policy, then the bucket's own policy (incl. allUsers, projectOwner:P ...)."""
        if caller and self.world.has_permission(caller, permission, project):
            return True
        if bucket is None:
            return False
        for binding in bucket_policy(self.storage, bucket, project)["bindings"]:
            if binding.get("condition") or not _role_grants(binding["role"], permission):
                continue  # conditions are not evaluated: a conditional binding grants nothing here
            if any(self._is_member(m, caller) for m in binding["members"]):
                return True
        return False

    def _is_member(self, member: str, caller: str) -> bool:
        if member == "allUsers" or (member == "allAuthenticatedUsers" and caller):
            return True
        if not caller:
            return False
        if member == caller:
            return True
        kind, _, project = member.partition(":")
        role = _CONVENIENCE_ROLES.get(kind)
        if role is None:
            return False
        with self.world.lock:
            policy = self.world.data.get("policies", {}).get(f"projects/{project}") or {}
            return any(b["role"] == role and caller in b["members"] for b in policy.get("bindings", []))

    # ---- one request -----------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        method = handler.headers.get("X-HTTP-Method-Override") or method
        split = urlsplit(handler.path)
        query = parse_qs(split.query)
        _buffer_body(handler)
        found = find_route(method, split.path, query)
        params = {k: unquote(v) for k, v in found[1].groupdict().items()} if found else {}
        label = f"{method} {found[0].template if found else split.path}"
        try:
            with self.world.call(
                "storage", label, _resource_of(params, query), method in MUTATING_METHODS
            ) as info:
                caller = self._identify(handler, session=bool(found and found[0].target == "session"))
                info.caller = caller
                if found is None:
                    raise gcs_error(
                        501, f"The emulator does not serve {method} {split.path}.", "notImplemented"
                    )
                response = self._serve(found[0], found[1], handler, method, caller)
        except EmulatorError as e:
            _send_error(handler, as_gcs_error(e))
        except Exception as e:  # a bug here or in the package: answer, never hang the client
            log.exception("storage emulator: %s %s failed", method, handler.path)
            _send_error(handler, gcs_error(500, f"Internal error: {e}", "backendError"))
        else:
            response.close()

    def _identify(self, handler: BaseHTTPRequestHandler, session: bool) -> str:
        """The caller's member; "" for the anonymous caller (no Authorization header)."""
        authorization = handler.headers.get("Authorization")
        if not authorization:
            return ""
        try:
            return self.world.authenticate(authorization)
        except EmulatorError:
            if session:
                return ""  # a session URI needs no token; a stale one must not fail the upload
            raise

    def _serve(self, route: Route, match: re.Match[str], handler: Any, method: str, caller: str) -> Any:
        request = Request(handler, method)
        request.set_match(match)
        response = _Response(handler)
        call = Call(self, caller, request, response, route.target)
        with self.lock:
            self._authorize(route, call)
            route.handler(call)
        if int(response.status) >= 400:
            raise _translate_package_error(call, response)
        return response

    def _authorize(self, route: Route, call: Call) -> None:
        """Project and bucket of the request, its API enabled, the route's permission held."""
        if route.target == "session":
            return
        if route.target == "project":
            project = (call.request.query.get("project") or [""])[0]
            if not project:
                raise gcs_error(400, "Required parameter: project", "required")
            call.project = self.world.project(project)["project_id"]
        else:
            call.bucket = self.storage.get_bucket(call.bucket_name)
            if call.bucket is None:
                if not call.caller:
                    raise _permission_error("", route.permission or "storage.buckets.get", "bucket")
                raise gcs_error(404, "The specified bucket does not exist.", "notFound")
            call.project = self.world.project(call.bucket["projectNumber"])["project_id"]
        self.world.require_service(call.project, SERVICE)
        if route.permission:
            call.require(route.permission)


def _role_grants(role: str, permission: str) -> bool:
    return role_grants(role, permission) or permission in _BUCKET_ROLES.get(role, frozenset())


def _translate_package_error(call: Call, response: Any) -> GcsError:
    """The package answers some errors with an empty body; GCS always says what went wrong."""
    status = int(response.status)
    body = response.body if isinstance(response.body, dict) else {}
    message = str((body.get("error") or {}).get("message") or "")
    if not message and status == 404:
        name = call.request.params.get("object_id") or (call.request.query.get("name") or [""])[0]
        message = (
            f"No such object: {call.bucket_name}/{name}" if name else "The specified bucket does not exist."
        )
    return gcs_error(status, message or HTTPStatus(status).phrase)


def _buffer_body(handler: BaseHTTPRequestHandler) -> None:
    """Read the whole body before answering: an error sent while the client is still writing a
    large upload would reset its connection instead of giving it a status it can retry on."""
    length = handler.headers.get("Content-Length")
    if length:
        handler.rfile = io.BytesIO(handler.rfile.read(int(length)))


def _send_error(handler: BaseHTTPRequestHandler, error: GcsError) -> None:
    data = json.dumps(error.body()).encode()
    handler.send_response(error.status)
    handler.send_header("Content-Type", "application/json; charset=UTF-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], gate: StorageServer) -> None:
        super().__init__(address, _Handler)
        self.gate = gate


class _Handler(BaseHTTPRequestHandler):
    def _handle(self, method: str) -> None:
        cast(_HTTPServer, self.server).gate.handle(self, method)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # the world's request log is the log
        pass


# --------------------------------------------------------------------------------------------------
# Entry points used by server.Emulator


def start_storage(world: World, host: str) -> tuple[StorageServer, str]:
    """Serve Cloud Storage for ``world``; data in ``<state_file>.storage`` when the world persists.

    Example: ``server, address = start_storage(world, "127.0.0.1")`` -> ``"127.0.0.1:40123"``.
    """
    number = world.project(world.knobs.project)["number"]
    if world.state_file:
        data_dir = os.path.abspath(world.state_file + ".storage")
        storage = Storage(use_memory_fs=False, data_dir=data_dir, project_number=number)
    else:
        storage = Storage(use_memory_fs=True, project_number=number)
    server = StorageServer(world, host, storage)
    server.start()
    return server, server.address


def stop_storage(server: StorageServer) -> None:
    server.stop()
