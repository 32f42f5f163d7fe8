"""What the emulated Cloud Storage's route handlers share: GCS's error shapes, one request's
context (``Call``), the answer it builds (``Reply``) and the route table's entries (``Route``).

Errors follow GCS's JSON API shape, ``{"error": {"code", "message", "errors": [{"reason"}]}}``
(https://cloud.google.com/storage/docs/json_api/v1/status-codes), or, on the XML API,
``<Error><Code>...</Code><Message>...</Message></Error>``
(https://cloud.google.com/storage/docs/xml-api/reference-status).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import grpc

from .core import EmulatorError, InjectedFault
from .link import BodyReader

if TYPE_CHECKING:
    from .gcsstore import Store
    from .storage import StorageServer

PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."

_CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    410: grpc.StatusCode.NOT_FOUND,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    416: grpc.StatusCode.OUT_OF_RANGE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
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
    grpc.StatusCode.OUT_OF_RANGE: "requestedRangeNotSatisfiable",
}


@dataclass
class GcsError(EmulatorError):
    """An ``EmulatorError`` with the HTTP status and ``reason`` GCS answers (the log keeps ``code``)."""

    status: int = 500
    reason: str = "backendError"
    xml_code: str = ""  # the XML API's <Code> ("NoSuchUpload", "InvalidPart", ...)

    @property
    def http_status(self) -> int:
        return self.status

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"message": self.message, "domain": "global", "reason": self.reason}
        if self.status == 401:
            detail.update(locationType="header", location="Authorization")
        return {"error": {"code": self.status, "message": self.message, "errors": [detail]}}

    def xml_body(self) -> bytes:
        code = self.xml_code or {
            400: "InvalidArgument",
            401: "AuthenticationRequired",
            403: "AccessDenied",
            404: "NoSuchKey",
            412: "PreconditionFailed",
            503: "ServiceUnavailable",
        }.get(self.status, "InternalError")
        text = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(self.message)}</Message><Details>{escape(self.message)}</Details></Error>"
        return text.encode()


def gcs_error(
    status: int, message: str, reason: str = "", code: grpc.StatusCode | None = None, xml_code: str = ""
) -> GcsError:
    """``gcs_error(404, "The specified bucket does not exist.")`` -> a GcsError with GCS's reason."""
    code = code or _CODE_OF_STATUS.get(status, grpc.StatusCode.INTERNAL)
    return GcsError(code, message, status, reason or _REASON_OF_CODE.get(code, "backendError"), xml_code)


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
    status = e.http_status
    if isinstance(e, InjectedFault) and e.status:
        reason = {410: "gone", 404: "notFound"}.get(e.status, reason)
    return GcsError(e.code, message, status, reason)


# OAuth scopes that reach the JSON API (cloud.google.com/storage/docs/oauth-scopes): all of them read,
# the first three write.
WRITE_SCOPES = frozenset(
    "https://www.googleapis.com/auth/" + s
    for s in ("cloud-platform", "devstorage.full_control", "devstorage.read_write")
)
READ_SCOPES = WRITE_SCOPES | frozenset(
    "https://www.googleapis.com/auth/" + s for s in ("cloud-platform.read-only", "devstorage.read_only")
)


def permission_error(caller: str, permission: str, target: str) -> GcsError:
    """GCS's wording: "alice@x.com does not have storage.objects.get access to the Google Cloud
    Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist)."."""
    what = {"project": "Google Cloud project", "bucket": "Google Cloud Storage bucket"}.get(
        target, "Google Cloud Storage object"
    )
    # A principal:// member is named in full; users and service accounts by their email.
    who = (
        (caller if caller.startswith("principal") else caller.split(":", 1)[-1])
        if caller
        else "Anonymous caller"
    )
    message = (
        f"{who} does not have {permission} access to the {what}. "
        f"Permission '{permission}' denied on resource (or it may not exist)."
    )
    if not caller:
        return gcs_error(401, message, "required")
    return gcs_error(403, message, "forbidden")


@dataclass
class Reply:
    """An answer: status, headers and a body, or a byte range of a file streamed after the headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: tuple[str, int, int] | None = None  # (path, start, length)


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
        json.dumps(obj).encode(),
    )


@dataclass
class Call:
    """What a route handler knows about the request it serves."""

    gate: StorageServer
    caller: str
    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Any  # the request's headers (email.message.Message)
    body: BodyReader
    target: str  # "project", "bucket", "object", "session": the words of permission errors
    project: str = ""
    bucket: dict[str, Any] | None = None
    scopes: tuple[str, ...] | None = None  # the token's OAuth scopes (None: not recorded)

    @property
    def store(self) -> Store:
        return self.gate.store

    @property
    def bucket_name(self) -> str:
        return self.params.get("bucket_name", "")

    @property
    def object_name(self) -> str:
        return self.params.get("object_id", "")

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> dict[str, Any]:
        """The request body as a JSON object ({} when empty); 400 when it is not JSON."""
        raw = self.body.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise gcs_error(400, f"Parse Error: {e}", "parseError") from e
        if not isinstance(data, dict):
            raise gcs_error(400, "Parse Error: expected a JSON object", "parseError")
        return data

    def require(
        self, permission: str, target: str | None = None, bucket: dict[str, Any] | None = None
    ) -> None:
        """401/403 in GCS's words unless the token's scopes and the caller's roles allow ``permission``
        on the (given) bucket."""
        if self.scopes is not None:
            reads = permission.endswith((".get", ".list", ".getIamPolicy"))
            if not set(self.scopes) & (READ_SCOPES if reads else WRITE_SCOPES):
                raise gcs_error(403, "Provided scope(s) are not authorized", "forbidden")
        bucket = bucket if bucket is not None else self.bucket
        project = self.project
        if bucket is not None and bucket is not self.bucket:
            project = self.gate.world.project(bucket["projectNumber"])["project_id"]
        if not self.gate.allowed(self.caller, permission, project, bucket):
            raise permission_error(self.caller, permission, target or self.target)

    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.gate.address}"


Handler = Callable[[Call], Reply]


@dataclass(frozen=True)
class Route:
    """``template`` names the route in the request log; ``{bucket}``/``{object}`` match path parts."""

    method: str
    template: str  # "/storage/v1/b/{bucket}/o/{object}"
    target: str  # "project" (bucket list/insert), "bucket", "object", "session" (upload sessions)
    permission: str  # checked before the handler runs ("" = none, or checked by the handler)
    handler: Handler
    xml: bool = False  # answers errors in the XML API's shape
    query: str = ""  # a query parameter the request must carry (XML API: "uploads", "uploadId")
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.escape(self.template)
        for name, group in (
            ("bucket", r"(?P<bucket_name>[^/]+)"),
            ("object", r"(?P<object_id>.+?)"),
            ("dest_bucket", r"(?P<dest_bucket>[^/]+)"),
            ("dest_object", r"(?P<dest_object>.+)"),
        ):
            regex = regex.replace(rf"\{{{name}\}}", group)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))
