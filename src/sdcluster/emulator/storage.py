"""Cloud Storage (JSON API, and the XML API's multipart uploads) for the emulator.

The emulator keeps Cloud Storage's data itself (``gcsstore``: buckets, object generations, upload
sessions; bytes in files, streamed), because the third-party emulators measured here could not keep
up with a 512 MiB upload (each appended chunk rewrote the whole object: O(n^2), the object held in
memory) and did not serve what Google's clients send (XML multipart uploads, older generations of
versioned buckets, generation preconditions on resumable uploads, 410 for a dead session). For
every request this module:

1. goes through ``World.call`` (latency, injected faults before or after the request takes effect,
   the request log with the body bytes received);
2. names the caller from ``Authorization: Bearer emulator:<member>`` (401 on a bad token; no header
   is the anonymous caller, who gets 401 where GCS would);
3. checks the permission GCS checks (``storage.buckets.*`` / ``storage.objects.*`` /
   ``storage.multipartUploads.*``) against the project policy of the bucket's project and the
   bucket's own IAM policy, whose members may be Workload Identity principals
   (``principal://.../subject/ns/NS/sa/KSA``, ``principalSet://.../namespace/NS``); a token minted
   with OAuth scopes must carry a storage (or cloud-platform) scope;
4. serves the route (buckets and IAM here; objects in ``gcsobjects``);
5. answers errors in GCS's JSON shape (``{"error": {"code", "message", "errors": [{"reason"}]}}``),
   or the XML API's, and streams bodies through the connection's ``Link`` (``Knobs.storage_mib_s``).

Routes the emulator does not serve answer 501. Two emulators in one process keep separate worlds.

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
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import grpc

from . import gcsobjects as objects
from .core import EmulatorError, Identity, ResponseLost, World, role_grants
from .gcshttp import (
    PRECONDITION_FAILED,
    Call,
    GcsError,
    Reply,
    Route,
    as_gcs_error,
    gcs_error,
    json_reply,
    permission_error,
)
from .gcsstore import Store, now_rfc3339, pb_etag
from .link import BLOCK, BodyReader, Link

log = logging.getLogger(__name__)

SERVICE = "storage.googleapis.com"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API = "/storage/v1"
UPLOAD = "/upload/storage/v1"
RESUMABLE = "/resumable/upload/storage/v1"  # where gcloud starts resumable uploads
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
    # https://cloud.google.com/storage/docs/access-control/iam-roles
    "roles/storage.objectCreator": frozenset(
        {
            "storage.objects.create",
            "storage.multipartUploads.create",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.listParts",
        }
    ),
    "roles/storage.objectUser": frozenset(
        {
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.update",
            "storage.multipartUploads.create",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.listParts",
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
# IAM principal identifiers (cloud.google.com/iam/docs/principal-identifiers): a Workload Identity
# principal names the pool by project NUMBER; a principalSet of a GKE pool by namespace.
_PRINCIPAL = re.compile(
    r"^principal://(?:goog/subject/[^/]+|iam\.googleapis\.com/projects/(?P<number>\d+)/locations/global/"
    r"workloadIdentityPools/(?P<pool>[^/]+)/subject/.+)$"
)
_PRINCIPAL_SET = re.compile(
    r"^principalSet://iam\.googleapis\.com/projects/(?P<number>\d+)/locations/global/workloadIdentityPools/"
    r"(?P<pool>[^/]+)/(?:namespace/(?P<ns>[^/]+)|\*|group/.+|attribute\..+)$"
)

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_MULTI_REGIONS = {"US", "EU", "ASIA"}
_DUAL_REGIONS = {"NAM4", "EUR4", "EUR5", "EUR7", "EUR8", "ASIA1"}
_REGION = re.compile(r"^[A-Z]+-[A-Z]+[0-9]+$")
_STORAGE_CLASSES = {"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL"}
_UBLA_LOCK = dt.timedelta(days=90)  # uniform bucket-level access can be turned off for 90 days


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_MULTI_REGIONS = {"US", "EU", "ASIA"}
_DUAL_REGIONS = {"NAM4", "EUR4", "EUR5", "EUR7", "EUR8", "ASIA1"}
_REGION = re.compile(r"^[A-Z]+-[A-Z]+[0-9]+$")
_STORAGE_CLASSES = {"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL"}
_UBLA_LOCK = dt.timedelta(days=90)  # uniform bucket-level access can be turned off for 90 days
_BUCKET_FIELDS = (
    "labels",
    "versioning",
    "iamConfiguration",
    "location",
    "storageClass",
    "lifecycle",
    "cors",
    "logging",
    "website",
    "retentionPolicy",
    "defaultEventBasedHold",
    "encryption",
    "billing",
    "customPlacementConfig",
    "rpo",
    "autoclass",
    "softDeletePolicy",
    "hierarchicalNamespace",
)


def _writable_bucket_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(body[k]) for k in _BUCKET_FIELDS if body.get(k) is not None}


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
    bucket["etag"] = pb_etag(int(bucket["metageneration"]))
    return bucket


def _default_policy(bucket: dict[str, Any], project: str) -> dict[str, Any]:
    """What GCS puts on a new bucket: the project's owners/editors own it, its viewers read it."""
    return {
        "kind": "storage#policy",
        "resourceId": f"projects/_/buckets/{bucket['name']}",
        "version": 1,
        "etag": pb_etag(1),
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


def list_buckets(call: Call) -> Reply:
    """Only the project's buckets (the package lists every bucket it holds)."""
    number = call.gate.world.project(call.project)["number"]
    prefix = call.arg("prefix")
    with call.store.lock:
        items = [
            copy.deepcopy(b)
            for name, b in sorted(call.store.buckets.items())
            if b.get("projectNumber") == number and name.startswith(prefix)
        ]
    return json_reply({"kind": "storage#buckets", "items": items})


def insert_bucket(call: Call) -> Reply:
    """Create the bucket in the ``project`` of the query, with the metadata of the body."""
    body = call.json()
    name = str(body.get("name") or "")
    _validate_bucket_name(name)
    existing = call.store.buckets.get(name)
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
    stamp = now_rfc3339()
    bucket = {
        **_writable_bucket_fields(body),
        "kind": "storage#bucket",
        "id": name,
        "name": name,
        "projectNumber": number,
        "metageneration": "1",
        "timeCreated": stamp,
        "updated": stamp,
        "selfLink": f"{call.base_url()}/storage/v1/b/{name}",
    }
    bucket = _normalize_bucket(bucket)
    with call.store.lock:
        call.store.buckets[name] = bucket
        call.store.policies[name] = _default_policy(bucket, call.project)
    call.store.save()
    return json_reply(bucket)


def get_bucket(call: Call) -> Reply:
    assert call.bucket is not None
    _check_metageneration(call.query, call.bucket)
    return json_reply(call.bucket)


def patch_bucket(call: Call) -> Reply:
    """PATCH (and PUT, which the package lacks) of bucket metadata, read back as GCS would."""
    assert call.bucket is not None
    _check_metageneration(call.query, call.bucket)
    body = call.json()
    # Work on a copy: a rejected update (say, a bad storage class) must leave the bucket as it was.
    updated = {**copy.deepcopy(call.bucket), **_writable_bucket_fields(body)}
    updated["metageneration"] = str(int(call.bucket["metageneration"]) + 1)
    if call.method == "PATCH" and body.get("labels") is not None:
        # PATCH merges labels, and a null value deletes its key (PUT replaces them all).
        merged = {**(call.bucket.get("labels") or {}), **body["labels"]}
        updated["labels"] = {k: v for k, v in merged.items() if v is not None}
    updated["updated"] = now_rfc3339()
    updated = _normalize_bucket(updated, call.bucket)
    with call.store.lock:
        call.store.buckets[call.bucket_name] = updated
    call.store.save()
    return json_reply(updated)


def delete_bucket(call: Call) -> Reply:
    assert call.bucket is not None
    _check_metageneration(call.query, call.bucket)
    if call.store.has_objects(call.bucket_name):
        raise gcs_error(
            409,
            "The bucket you tried to delete is not empty.",
            "conflict",
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    with call.store.lock:
        call.store.buckets.pop(call.bucket_name, None)
        call.store.policies.pop(call.bucket_name, None)
        call.store.objects.pop(call.bucket_name, None)
    call.store.save()
    return Reply(204, {}, b"")


# --------------------------------------------------------------------------------------------------
# Bucket IAM


def bucket_policy(store: Store, bucket: dict[str, Any], project: str) -> dict[str, Any]:
    """The bucket's stored IAM policy, or the one GCS gives a new bucket."""
    return store.policies.get(bucket["name"]) or _default_policy(bucket, project)


def _policy(call: Call) -> dict[str, Any]:
    assert call.bucket is not None
    return bucket_policy(call.store, call.bucket, call.project)


def _policy_response(policy: dict[str, Any]) -> dict[str, Any]:
    return {k: policy[k] for k in ("kind", "resourceId", "version", "etag", "bindings")}


def _validate_binding(
    binding: dict[str, Any], public_access_prevented: bool, pool_exists: Callable[[str, str], bool]
) -> dict[str, Any]:
    """The binding as stored, or GCS's error. ``pool_exists(number, pool)``: a principal of a
    Workload Identity pool that does not exist (GKE's ``PROJECT.svc.id.goog`` before the project's
    first cluster with Workload Identity) is refused, as IAM refuses it."""
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
        elif (
            m.split(":", 1)[0] not in _MEMBER_KINDS
            or ":" not in m
            or (m.startswith("principal:") and not _PRINCIPAL.match(m))
            or (m.startswith("principalSet:") and not _PRINCIPAL_SET.match(m))
        ):
            raise gcs_error(400, f"Invalid argument: member '{m}' is not valid.", "invalid")
        else:
            named = _PRINCIPAL.match(m) or _PRINCIPAL_SET.match(m)
            if named and named["pool"] and not pool_exists(named["number"], named["pool"]):
                raise gcs_error(
                    400,
                    f"Identity Pool does not exist ({named['pool']}). Please check that you specified a "
                    "valid resource name as returned in the `name` attribute in the configuration API.",
                    "invalid",
                )
    out: dict[str, Any] = {"role": role, "members": members}
    if binding.get("condition"):
        out["condition"] = binding["condition"]
    return out


def get_bucket_iam(call: Call) -> Reply:
    return json_reply(_policy_response(_policy(call)))


def set_bucket_iam(call: Call) -> Reply:
    """Replace the bucket's policy; compare-and-swap on ``etag`` (stale -> 412, as GCS)."""
    assert call.bucket is not None
    body = call.json()
    current = _policy(call)
    if body.get("etag") and body["etag"] != current["etag"]:
        raise gcs_error(412, "Precondition Failed", "conditionNotMet")
    prevented = call.bucket["iamConfiguration"].get("publicAccessPrevention") == "enforced"
    pool_exists = call.gate.world.has_workload_pool
    bindings = [_validate_binding(b, prevented, pool_exists) for b in body.get("bindings") or []]
    policy = {
        **current,
        "version": int(body.get("version") or 1),
        "etag": pb_etag(_etag_number(current["etag"]) + 1),
        "bindings": [b for b in bindings if b["members"]],
    }
    with call.store.lock:
        call.store.policies[call.bucket_name] = policy
    call.store.save()
    return json_reply(_policy_response(policy))


def test_bucket_iam(call: Call) -> Reply:
    """The subset of ``permissions`` the caller holds on the bucket (the package says "all")."""
    asked = call.query.get("permissions") or []
    held = [p for p in asked if call.gate.allowed(call.caller, p, call.project, call.bucket)]
    return json_reply({"kind": "storage#testIamPermissionsResponse", "permissions": held})


# --------------------------------------------------------------------------------------------------
# The route table


_B = "/b/{bucket}"
_O = "/b/{bucket}/o/{object}"
_MPU = "storage.multipartUploads"
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
    Route("GET", f"{API}{_B}/o", "bucket", "storage.objects.list", objects.list_objects),
    Route("POST", f"{API}{_O}/compose", "object", "storage.objects.create", objects.compose_object),
    Route(
        "POST",
        f"{API}{_O}/rewriteTo/b/{{dest_bucket}}/o/{{dest_object}}",
        "object",
        "storage.objects.get",
        objects.rewrite_object,
    ),
    Route(
        "POST",
        f"{API}{_O}/copyTo/b/{{dest_bucket}}/o/{{dest_object}}",
        "object",
        "storage.objects.get",
        objects.copy_object,
    ),
    Route("GET", f"{API}{_O}", "object", "storage.objects.get", objects.get_object),
    Route("PATCH", f"{API}{_O}", "object", "storage.objects.update", objects.patch_object),
    Route("PUT", f"{API}{_O}", "object", "storage.objects.update", objects.patch_object),
    Route("DELETE", f"{API}{_O}", "object", "storage.objects.delete", objects.delete_object),
    Route("POST", f"{UPLOAD}{_B}/o", "object", "storage.objects.create", objects.insert_object),
    Route("POST", f"{RESUMABLE}{_B}/o", "object", "storage.objects.create", objects.insert_object),
    Route("GET", f"{DOWNLOAD}{_O}", "object", "storage.objects.get", objects.download_object),
    # XML API multipart uploads (path style: /BUCKET/OBJECT)
    Route("POST", "/{bucket}/{object}", "object", f"{_MPU}.create", objects.xml_initiate, True, "uploads"),
    Route("PUT", "/{bucket}/{object}", "object", f"{_MPU}.create", objects.xml_part, True, "partNumber"),
    Route("POST", "/{bucket}/{object}", "object", f"{_MPU}.create", objects.xml_complete, True, "uploadId"),
    Route("DELETE", "/{bucket}/{object}", "object", f"{_MPU}.abort", objects.xml_abort, True, "uploadId"),
    Route(
        "GET", "/{bucket}/{object}", "object", f"{_MPU}.listParts", objects.xml_list_parts, True, "uploadId"
    ),
)
# A resumable session's URI is its credential (?upload_id=): chunks, status queries, cancellation.
SESSION_ROUTES = tuple(
    Route(method, f"{prefix}{_B}/o", "session", "", handler)
    for prefix in (UPLOAD, RESUMABLE)
    for method, handler in (
        ("PUT", objects.upload_chunk),
        ("POST", objects.upload_chunk),
        ("DELETE", objects.cancel_session),
    )
)


def find_route(method: str, path: str, query: dict[str, list[str]]) -> tuple[Route, re.Match[str]] | None:
    """The route serving ``method path`` (``/upload/...?upload_id=`` is a session's request)."""
    routes = SESSION_ROUTES if "upload_id" in query else ROUTES
    for route in routes:
        if route.method == method and (not route.query or route.query in query):
            if route.xml and path.startswith(("/storage/", "/upload/", "/download/", "/resumable/")):
                continue
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
    """Cloud Storage served over HTTP through the emulator's gate (one per emulator)."""

    def __init__(self, world: World, host: str, store: Store) -> None:
        self.world = world
        self.store = store
        self.httpd = _HTTPServer((host, 0), self)
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="storage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
        self.store.save()
        self.store.close()

    # ---- permissions ---------------------------------------------------------------------------
    def allowed(self, caller: str, permission: str, project: str, bucket: dict[str, Any] | None) -> bool:
        """The project's policy, then the bucket's own policy (incl. allUsers, projectOwner:P ...)."""
        if caller and self.world.has_permission(caller, permission, project):
            return True
        if bucket is None:
            return False
        for binding in bucket_policy(self.store, bucket, project)["bindings"]:
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
        if member.startswith("principalSet:"):
            return _in_principal_set(member, caller)
        kind, _, project = member.partition(":")
        role = _CONVENIENCE_ROLES.get(kind)
        if role is None:
            return False
        with self.world.lock:
            policy = self.world.data.get("policies", {}).get(f"projects/{project}") or {}
            return any(b["role"] == role and caller in b["members"] for b in policy.get("bindings", []))

    # ---- one request -----------------------------------------------------------------------------
    def handle(self, handler: _Handler, method: str) -> None:
        method = handler.headers.get("X-HTTP-Method-Override") or method
        split = urlsplit(handler.path)
        query = parse_qs(split.query, keep_blank_values=True)
        body = BodyReader(handler.rfile, handler.headers, handler.link)
        found = find_route(method, split.path, query)
        params = {k: unquote(v) for k, v in found[1].groupdict().items()} if found else {}
        label = f"{method} {found[0].template if found else split.path}"
        xml = bool(found and found[0].xml)
        reply: Reply | None = None
        try:
            with self.world.call(
                "storage", label, _resource_of(params, query), method in MUTATING_METHODS
            ) as info:
                try:
                    who = self._identify(handler, session=bool(found and found[0].target == "session"))
                    caller = info.caller = who.member
                    if found is None:
                        raise gcs_error(
                            501, f"The emulator does not serve {method} {split.path}.", "notImplemented"
                        )
                    call = Call(
                        self,
                        caller,
                        method,
                        params,
                        query,
                        handler.headers,
                        body,
                        found[0].target,
                        scopes=who.scopes,
                    )
                    self._authorize(found[0], call)
                    reply = found[0].handler(call)
                finally:
                    info.bytes_in = body.received
        except ResponseLost as e:
            body.drain()
            _lose(handler, reply, e.lose)
            return
        except EmulatorError as e:
            error = as_gcs_error(e)
            reply = Reply(
                error.status,
                {"Content-Type": "application/xml; charset=UTF-8"}
                if xml
                else {"Content-Type": "application/json; charset=UTF-8"},
                error.xml_body() if xml else json_body(error),
            )
        except Exception as e:  # a bug here: answer, never hang the client
            log.exception("storage emulator: %s %s failed", method, handler.path)
            reply = json_reply(gcs_error(500, f"Internal error: {e}", "backendError").body(), 500)
        if body.broken:
            handler.close_connection = True  # the client is gone: nobody reads an answer
            return
        body.drain()
        assert reply is not None
        _send(handler, reply)

    def _identify(self, handler: BaseHTTPRequestHandler, session: bool) -> Identity:
        """The caller; member "" for the anonymous caller (no Authorization header)."""
        authorization = handler.headers.get("Authorization")
        if not authorization:
            return Identity("")
        try:
            return self.world.identify(authorization)
        except EmulatorError:
            if session:
                return Identity("")  # a session URI needs no token; a stale one must not fail the upload
            raise

    def _authorize(self, route: Route, call: Call) -> None:
        """Project and bucket of the request, its API enabled, the route's permission held."""
        if route.target == "session":
            return
        if route.target == "project":
            project = call.arg("project")
            if not project:
                raise gcs_error(400, "Required parameter: project", "required")
            call.project = self.world.project(project)["project_id"]
        else:
            with self.store.lock:
                found = self.store.buckets.get(call.bucket_name)
                call.bucket = copy.deepcopy(found) if found else None
            if call.bucket is None:
                if not call.caller:
                    raise permission_error("", route.permission or "storage.buckets.get", "bucket")
                raise gcs_error(
                    404, "The specified bucket does not exist.", "notFound", xml_code="NoSuchBucket"
                )
            call.project = self.world.project(call.bucket["projectNumber"])["project_id"]
        self.world.require_service(call.project, SERVICE)
        if route.permission:
            call.require(route.permission)


def json_body(error: GcsError) -> bytes:
    import json

    return json.dumps(error.body()).encode()


def _in_principal_set(member: str, caller: str) -> bool:
    """Whether a Workload Identity principal belongs to a ``principalSet://`` (namespace or pool)."""
    m = _PRINCIPAL_SET.match(member)
    if m is None or not caller.startswith("principal://iam.googleapis.com/"):
        return False
    pool_prefix = member.removeprefix("principalSet://").split("/workloadIdentityPools/")[0]
    subject = caller.removeprefix("principal://")
    if not subject.startswith(f"{pool_prefix}/workloadIdentityPools/{m['pool']}/subject/"):
        return False
    if m["ns"] is not None:
        return f"/subject/ns/{m['ns']}/sa/" in subject
    return member.endswith("/*")  # the whole pool; group/attribute sets are not evaluated here


def _role_grants(role: str, permission: str) -> bool:
    return role_grants(role, permission) or permission in _BUCKET_ROLES.get(role, frozenset())


def _send(handler: _Handler, reply: Reply) -> None:
    try:
        handler.send_response(reply.status)
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        length = reply.file[2] if reply.file else len(reply.body)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        if reply.file:
            path, start, length = reply.file
            with open(path, "rb") as f:
                f.seek(start)
                while length > 0:
                    block = f.read(min(length, handler.link.block(1 << 20)))
                    if not block:
                        break
                    handler.link.write(handler.wfile, block)
                    length -= len(block)
        elif reply.body:
            handler.link.write(handler.wfile, reply.body)
    except OSError:  # the client went away mid-answer
        handler.close_connection = True


def _lose(handler: _Handler, reply: Reply | None, how: str) -> None:
    """The request took effect; its answer is lost: cut off halfway ("cut") or never sent ("reset")."""
    handler.close_connection = True
    if how != "cut" or reply is None:
        return
    try:
        handler.send_response(reply.status)
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.send_header("Connection", "close")  # no Content-Length: the client reads to the end
        handler.end_headers()
        handler.wfile.write(reply.body[: len(reply.body) // 2])
        handler.wfile.flush()
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gate: StorageServer) -> None:
        super().__init__(address, _Handler)
        self.gate = gate


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection, one link, many requests
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per response (see kubehttp)

    def setup(self) -> None:
        super().setup()
        gate = cast(_HTTPServer, self.server).gate
        self.link = Link(lambda: gate.world.knobs.storage_mib_s)
        if self.link.capped:
            # A small receive buffer, so the cap is felt by the sender at once, not after megabytes.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * BLOCK)

    def _handle(self, method: str) -> None:
        cast(_HTTPServer, self.server).gate.handle(self, method)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

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
    root = os.path.abspath(world.state_file + ".storage") if world.state_file else None
    server = StorageServer(world, host, Store(root))
    server.start()
    return server, server.address


def stop_storage(server: StorageServer) -> None:
    server.stop()
