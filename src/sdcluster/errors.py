"""The error tree, and the ONE place where library exceptions become sdcluster errors.

::

    SdclusterError                  every error sdcluster raises; carries a one-line ``hint``
    ├── ConfigError                 invalid sdcluster.toml / flags / environment
    ├── StateError                  the state file cannot be used
    │   ├── StateLocked             another run holds the lock (names the holder)
    │   ├── StateCorrupt            truncated / unparseable (points at the backup)
    │   ├── StateVersionError       written by a newer sdcluster
    │   ├── StateConflict           remote state changed under us (lost a compare-and-swap)
    │   ├── StateWriteError         the state could not be written (full disk, read-only, not a file)
    │   └── StateMismatch           the state belongs to another project / identity than the config
    ├── StalePlan                   a saved plan no longer matches the state
    ├── CredentialsError            no / expired Application Default Credentials, clock skew
    ├── ApiDisabled                 a required Google API is not enabled
    ├── PermissionDenied            a principal lacks a permission (names both)
    ├── NotFound                    a resource that must exist does not
    ├── AlreadyExists               a name is taken by something we do not manage
    │   └── AdoptionRefused         apply will not take over what sdcluster did not make (import/--adopt)
    ├── QuotaExceeded               metric, need, limit, options
    ├── Conflict                    concurrent modification / operation in progress
    ├── InvalidRequest              the API rejected the request (invalid argument)
    ├── TransientError              retryable: unavailable, deadline, rate-limited
    ├── WaitTimeout                 a wait exceeded its deadline (propagation, rollout, LB)
    ├── ApplyError                  a resource change failed (address, completed addresses)
    ├── Interrupted                 a signal / Ctrl-C stopped the run (waits cut short, state saved)
    ├── DestroyIncomplete           destroy left something under sdcluster's addresses running
    ├── RolloutStuck                a Deployment cannot become ready (pod reason)
    └── UsageError                  a wrong use of the CLI / library (bad directory, prompt too long)

``translate(exc)`` maps google.api_core, google.auth, grpc and kubernetes exceptions onto this tree;
every module calls it (``raise translate(e) from e``) instead of inspecting library errors itself.
"""

from __future__ import annotations

import re
from typing import Any


class SdclusterError(Exception):
    """Root of every error sdcluster raises. ``hint`` tells the user what to do next."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(SdclusterError):
    pass


class StateError(SdclusterError):
    pass


class StateLocked(StateError):
    def __init__(self, message: str, *, hint: str = "", holder: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder or {}


class StateCorrupt(StateError):
    pass


class StateVersionError(StateError):
    pass


class StateConflict(StateError):
    pass


class StateWriteError(StateError):
    """Nothing was written: ``path`` is where the state should have gone."""

    def __init__(self, message: str, *, hint: str = "", path: str = "") -> None:
        super().__init__(message, hint=hint)
        self.path = path


class StateMismatch(StateError):
    pass


class StalePlan(SdclusterError):
    pass


class CredentialsError(SdclusterError):
    pass


class ApiDisabled(SdclusterError):
    def __init__(self, message: str, *, hint: str = "", service: str = "") -> None:
        super().__init__(message, hint=hint)
        self.service = service


class PermissionDenied(SdclusterError):
    pass


class NotFound(SdclusterError):
    pass


class AlreadyExists(SdclusterError):
    pass


class AdoptionRefused(AlreadyExists):
    def __init__(self, message: str, *, hint: str = "", addresses: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.addresses = addresses or []


class QuotaExceeded(SdclusterError):
    pass


class Conflict(SdclusterError):
    pass


class InvalidRequest(SdclusterError):
    pass


class TransientError(SdclusterError):
    pass


class WaitTimeout(SdclusterError):
    def __init__(self, message: str, *, hint: str = "", last_error: SdclusterError | None = None) -> None:
        super().__init__(message, hint=hint)
        self.last_error = last_error


class ApplyError(SdclusterError):
    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        address: str = "",
        completed: list[str] | None = None,
        cause: SdclusterError | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.address = address
        self.completed = completed or []
        self.cause = cause


class Interrupted(SdclusterError):
    """The run was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP): waits were cut short and the state
    saved; ``completed`` lists the changes that finished. The CLI exits 130."""

    def __init__(self, message: str, *, hint: str = "", completed: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.completed = completed or []


class DestroyIncomplete(SdclusterError):
    def __init__(self, message: str, *, hint: str = "", addresses: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.addresses = addresses or []


class RolloutStuck(SdclusterError):
    pass


class UsageError(SdclusterError):
    pass


ADC_HINT = "run: gcloud auth application-default login"

_QUOTA_RE = re.compile(
    r"Quota '([A-Z0-9_]+)' exceeded\.\s*Limit:\s*([0-9.]+)\s*(?:in region ([a-z0-9-]+)|globally)?"
)
# The JSON error body google-auth quotes when a token endpoint fails (e.g. impersonation's
# generateAccessToken): {"error": {"code": 503, ..., "status": "UNAVAILABLE"}}.
_AUTH_TRANSIENT_RE = re.compile(
    r'"status":\s*"(?:UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED)"|"code":\s*(?:429|500|502|503|504)\b'
)
# Google's SERVICE_DISABLED message names the API only in its activation URL ("... Enable it by
# visiting https://console.developers.google.com/apis/api/container.googleapis.com/overview?project=N
# then retry. ..."): the fallback when a response carries no google.rpc.ErrorInfo.
_ACTIVATION_URL_RE = re.compile(r"apis/api/([a-z0-9.-]+)/")
# GKE refuses a create the project's Compute Engine quota cannot hold with 403 PERMISSION_DENIED
# (public reports: googlecodelabs/feedback#950, GoogleCloudPlatform/cloud-ops-sandbox#44), e.g.
# Insufficient regional quota to satisfy request: resource "N2_CPUS": request requires '4.0' and is
# short '2.0'. project has a quota of '2.0' with '2.0' available. View and manage quotas at ...
_GKE_QUOTA_RE = re.compile(
    r"[Ii]nsufficient (regional|project) quota to satisfy request: resource \"([A-Z0-9_]+)\": request "
    r"requires '([0-9.]+)' and is short '([0-9.]+)'\. project has a quota of '([0-9.]+)' with '([0-9.]+)' "
    r"available"
)
# A zone out of capacity (GKE's statusMessage and cluster condition GCE_STOCKOUT; Compute Engine's
# ZONE_RESOURCE_POOL_EXHAUSTED), e.g. kubeflow/pipelines#673: "Try a different location, or try again
# later: Google Compute Engine does not have enough resources available to fulfill request: us-central1-a."
_STOCKOUT_RE = re.compile(
    r"ZONE_RESOURCE_POOL_EXHAUSTED|GCE_STOCKOUT|does not have enough resources available to fulfill"
)


def translate(e: BaseException, *, project: str = "", context: str = "") -> SdclusterError:
    """Map a library exception onto the error tree. Returns (does not raise) the new error.

    Example::

        try:
            client.get_service_account(name=name)
        except Exception as e:
            raise translate(e, project=p) from e
    """
    if isinstance(e, SdclusterError):
        return e
    prefix = f"{context}: " if context else ""
    text = _message_of(e)

    # google.auth: missing, expired or unusable credentials.
    auth_kind = _google_auth_kind(e)
    if auth_kind:
        if "certificate has expired or is not yet valid" in text or "clock" in text.lower():
            return CredentialsError(
                f"{prefix}credentials rejected because of the clock: {text}",
                hint=f"sync this machine's clock (e.g. `sudo hwclock -s` on WSL), then {ADC_HINT}",
            )
        if _AUTH_TRANSIENT_RE.search(text):
            # A token endpoint that answered 503/429/... (e.g. IAM Credentials behind impersonation):
            # transient like any other call, not a credentials problem the user must fix.
            return TransientError(f"{prefix}{text}", hint="a transient failure; run the command again")
        if "Gaia id not found" in text or re.search(r'"status":\s*"NOT_FOUND"', text):
            # generateAccessToken for a service account IAM Credentials does not know (yet): a
            # just-created account is not visible everywhere at once. Not the user's login.
            return NotFound(
                f"{prefix}the service account to impersonate was not found: {text}",
                hint="if it was created moments ago, IAM is still propagating it: run the command again; "
                "else check iam.admin_account (gcloud iam service-accounts list)",
            )
        if auth_kind == "DefaultCredentialsError":
            return CredentialsError(f"{prefix}no Application Default Credentials found", hint=ADC_HINT)
        if "getAccessToken" in text or "iam.serviceAccounts" in text:
            return PermissionDenied(
                f"{prefix}cannot impersonate the service account: {text}",
                hint="grant roles/iam.serviceAccountTokenCreator on it and wait for IAM propagation",
            )
        return CredentialsError(f"{prefix}credentials could not be refreshed: {text}", hint=ADC_HINT)

    if _connection_failed(e):
        # E.g. the Kubernetes API answering "connection refused" while its control plane restarts,
        # or an answer cut off on its way back (the request may have taken effect: callers of
        # conditional writes read back what is stored when their retry meets its own write).
        return TransientError(
            f"{prefix}the connection failed or the answer was lost: {text}",
            hint="a transient failure (the server may be restarting); run the command again",
        )
    code = _status_code(e)
    if code is None:
        return SdclusterError(f"{prefix}{type(e).__name__}: {text}")
    reason, metadata = error_info(e)
    if reason == "SERVICE_DISABLED" and code in ("PERMISSION_DENIED", "403"):
        return api_disabled(metadata.get("service", ""), text, project=project, prefix=prefix)
    return classify(code, text, project=project, context=context)


def _connection_failed(e: BaseException) -> bool:
    """A connection refused/reset or dropped before the whole answer came (urllib3, as the
    kubernetes client raises it; requests, as Cloud Storage's client does, including a JSON answer
    cut short; or the builtin errors). TLS failures and timeouts on an open connection are not."""
    if isinstance(e, ConnectionError):
        return True
    module, name = type(e).__module__, type(e).__name__
    if module.startswith("urllib3"):
        if name == "MaxRetryError":
            reason = getattr(e, "reason", None)
            return reason is not None and _connection_failed(reason)
        return name in ("NewConnectionError", "ProtocolError")
    if module.startswith("requests"):
        return name in ("ConnectionError", "ChunkedEncodingError", "JSONDecodeError")
    return False


def error_info(e: BaseException) -> tuple[str, dict[str, str]]:
    """The ``google.rpc.ErrorInfo`` of a google-api-core exception: (reason, metadata).

    Google sends it in the gRPC status details and in the REST body's ``error.details``;
    google-api-core exposes it as ``reason``/``domain``/``metadata``. Only ``googleapis.com``'s
    reasons are read (("", {}) when there is none).
    """
    reason = getattr(e, "reason", None)
    if not isinstance(reason, str) or getattr(e, "domain", None) != "googleapis.com":
        return "", {}
    metadata = getattr(e, "metadata", None)
    return reason, {str(k): str(v) for k, v in (metadata or {}).items()}


def api_disabled(service: str, text: str, *, project: str = "", prefix: str = "") -> ApiDisabled:
    """An API the project has not enabled (or whose enabling has not propagated yet)."""
    if not service:
        m = _ACTIVATION_URL_RE.search(text)
        service = m.group(1) if m else "the required"
    p = f" --project {project}" if project else ""
    return ApiDisabled(
        f"{prefix}the {service} API is not enabled: {text}",
        hint=f"enable the API: gcloud services enable {service}{p}",
        service=service,
    )


_RPC_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}


def from_rpc_status(code: int, message: str, *, project: str = "", context: str = "") -> SdclusterError:
    """An error carried inside a result (e.g. a failed GKE Operation's google.rpc.Status)."""
    return classify(_RPC_CODES.get(code, "UNKNOWN"), message, project=project, context=context)


def classify(code: str, text: str, *, project: str = "", context: str = "") -> SdclusterError:
    """Map a gRPC status name (or an HTTP status as text) and a message onto the error tree."""
    prefix = f"{context}: " if context else ""
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "503", "504", "500", "502", "429") or (
        code == "RESOURCE_EXHAUSTED" and "Quota '" not in text
    ):
        return TransientError(f"{prefix}{text}", hint="a transient failure; run the command again")
    if code in ("PERMISSION_DENIED", "403"):
        # GKE words a quota shortfall as a 403: it is no permission problem (and no IAM propagation).
        quota = _GKE_QUOTA_RE.search(text)
        if quota:
            return gke_quota_error(quota, text, project=project, prefix=prefix)
        if "has not been used in project" in text and _ACTIVATION_URL_RE.search(text):
            return api_disabled("", text, project=project, prefix=prefix)
        return PermissionDenied(f"{prefix}{text}", hint=_permission_hint(text))
    if code in ("UNAUTHENTICATED", "401"):
        return CredentialsError(f"{prefix}{text}", hint=ADC_HINT)
    if code in ("NOT_FOUND", "404"):
        return NotFound(f"{prefix}{text}")
    if code == "ALREADY_EXISTS":
        return AlreadyExists(f"{prefix}{text}")
    if code in ("ABORTED", "409", "412"):
        return Conflict(
            f"{prefix}{text}", hint="another change was made at the same time; run the command again"
        )
    if code == "FAILED_PRECONDITION" and "operation" in text.lower():
        return Conflict(f"{prefix}{text}", hint="another operation is in progress; wait for it and run again")
    if code == "RESOURCE_EXHAUSTED":
        return quota_error(text, prefix)
    if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "400", "422"):
        return InvalidRequest(f"{prefix}{text}")
    return SdclusterError(f"{prefix}{text}")


def quota_error(text: str, prefix: str = "", need: float | None = None) -> QuotaExceeded:
    m = _QUOTA_RE.search(text)
    metric = m.group(1) if m else "quota"
    limit = m.group(2) if m else "?"
    where = f"region {m.group(3)}" if m and m.group(3) else "all regions"
    need_s = f" (needs {need:g})" if need is not None else ""
    return QuotaExceeded(
        f"{prefix}quota {metric} exceeded{need_s}: limit {limit} in {where}. {text}",
        hint=(
            "use a smaller machine type or fewer initial nodes (cluster.machine_type, cluster.initial_nodes), "
            f"or request more {metric} quota: https://console.cloud.google.com/iam-admin/quotas"
        ),
    )


def gke_quota_error(m: re.Match[str], text: str, *, project: str = "", prefix: str = "") -> QuotaExceeded:
    scope, metric, need, short, limit, available = m.groups()
    where = "in the region" if scope == "regional" else "in the project (all regions)"
    p = f"&project={project}" if project else ""
    return QuotaExceeded(
        f"{prefix}quota {metric} exceeded {where}: the cluster needs {need}, {available} of the limit "
        f"{limit} are free (short by {short}). {text}",
        hint=(
            f"use fewer initial nodes or a smaller machine type (cluster.initial_nodes, cluster.machine_type), "
            f"or request more {metric} "
            f"quota: https://console.cloud.google.com/iam-admin/quotas?metric={metric}{p}"
        ),
    )


def stockout(text: str) -> bool:
    """Whether an error says the zone is out of capacity (Spot nodes, GPUs, a popular machine type)."""
    return bool(_STOCKOUT_RE.search(text))


def _permission_hint(text: str) -> str:
    if "iam.serviceAccounts.actAs" in text or "does not have access to service account" in text:
        return "grant roles/iam.serviceAccountUser on the node service account to the admin account (sdcluster apply does this)"
    if "getAccessToken" in text:
        return "grant roles/iam.serviceAccountTokenCreator on the admin service account to your user, then wait for IAM propagation"
    m = re.search(r"Permission '([a-zA-Z.]+)'", text)
    if m:
        return f"ask a project owner for a role that contains {m.group(1)}"
    return "check the IAM roles of the account in use (gcloud projects get-iam-policy PROJECT)"


def _google_auth_kind(e: BaseException) -> str:
    for cls in type(e).__mro__:
        if cls.__module__.startswith("google.auth") and cls.__name__ in (
            "DefaultCredentialsError",
            "RefreshError",
            "TransportError",
        ):
            return cls.__name__
    return ""


def _status_code(e: BaseException) -> str | None:
    """The gRPC status name (or HTTP status as text) of a library exception, if it has one."""
    grpc_status = getattr(e, "grpc_status_code", None)
    if grpc_status is not None:
        return str(grpc_status.name)
    mod = type(e).__module__
    if mod.startswith("google.api_core"):
        code = getattr(e, "code", None)
        if code is not None:
            return str(int(code))
    if mod.startswith("kubernetes") or type(e).__name__ == "ApiException":
        status = getattr(e, "status", None)
        if status:
            return str(status)
    code_fn = getattr(e, "code", None)
    if callable(code_fn) and mod.startswith("grpc"):
        try:
            return str(code_fn().name)
        except Exception:
            return None
    return None


def _message_of(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    if isinstance(msg, str) and msg:
        return msg
    body = getattr(e, "body", None)  # kubernetes ApiException carries a Status JSON
    if body:
        try:
            import json

            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
    details = getattr(e, "details", None)
    if callable(details):
        try:
            return str(details())
        except Exception:
            pass
    return str(e)
