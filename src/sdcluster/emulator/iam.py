"""IAM Admin, IAM Credentials, Resource Manager and Service Usage, as GCP answers them.

Four gRPC services over the official protos:

- ``google.iam.admin.v1.IAM``: service accounts (create/get/list/delete) and their IAM policies;
- ``google.iam.credentials.v1.IAMCredentials``: GenerateAccessToken (impersonation);
- ``google.cloud.resourcemanager.v3.Projects``: GetProject and the project IAM policy;
- ``google.api.serviceusage.v1.ServiceUsage``: get/list/enable services (already-done operations).

The rules that catch real mistakes are GCP's: a service account is not usable as a binding member
until ``sa_propagation_s`` after its creation ("Service account X does not exist."), minting a token
needs roles/iam.serviceAccountTokenCreator (a project owner alone cannot), a policy write with a
stale etag is ABORTED, and every call needs its API enabled on the project.

State lives in ``world.data["iam"]["service_accounts"]`` (keyed by email) and, for policies, in
``world.data["policies"]`` through ``World.policy``/``World.set_policy``.

Example::

    sa = service_account(world, "demo-proj", "gke-node@demo-proj.iam.gserviceaccount.com")
    if sa is None:
        raise invalid("Service account gke-node@... does not exist.")
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from functools import partial
from typing import Any

import grpc
from google.cloud import iam_admin_v1, iam_credentials_v1, resourcemanager_v3, service_usage_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2

from .core import EmulatorError, World, already_exists, invalid, not_found
from .grpcutil import Method, Service, method
from .rest import Call, JsonMethod, parse_into, to_json

SA_DOMAIN = "iam.gserviceaccount.com"
MAX_TOKEN_LIFETIME_S = 3600.0
_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
_SA_NAME = re.compile(r"^projects/([^/]+)/serviceAccounts/([^/]+)$")
_PROJECT_NAME = re.compile(r"^projects/([^/]+)$")
_SERVICE_NAME = re.compile(r"^projects/([^/]+)/services/([^/]+)$")

# Member forms GCP accepts in a binding (``deleted:`` ones come back from a deleted account).
_MEMBER_PREFIXES = (
    "user:",
    "group:",
    "serviceAccount:",
    "domain:",
    "principal:",
    "principalSet:",
    "deleted:user:",
    "deleted:group:",
    "deleted:serviceAccount:",
    "projectOwner:",
    "projectEditor:",
    "projectViewer:",
)
_PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")

# APIs a project can enable, beyond the ones the world already names (World._SERVICE_TITLES).
_EXTRA_SERVICES = {
    "logging.googleapis.com": "Cloud Logging API",
    "monitoring.googleapis.com": "Cloud Monitoring API",
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "containerregistry.googleapis.com": "Container Registry API",
    "cloudbuild.googleapis.com": "Cloud Build API",
    "oslogin.googleapis.com": "Cloud OS Login API",
    "pubsub.googleapis.com": "Cloud Pub/Sub API",
    "bigquery.googleapis.com": "BigQuery API",
    "secretmanager.googleapis.com": "Secret Manager API",
    "aiplatform.googleapis.com": "Vertex AI API",
}


def _service_titles() -> dict[str, str]:
    return {**World.service_titles(), **_EXTRA_SERVICES}


def _timestamp(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _iam_denied(permission: str) -> EmulatorError:
    # IAM's own services leave the resource out of the message (unlike world.check's wording).
    return EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"Permission '{permission}' denied on resource (or it may not exist).",
    )


def _iam_check(world: World, caller: str, permission: str, project: str, email: str | None = None) -> None:
    """Project-level bindings, or the service account's own policy when ``email`` is given."""
    if not world.has_permission(caller, permission, project, service_account=email):
        raise _iam_denied(permission)


def _page(
    items: list[Any], page_size: int, page_token: str, default: int, maximum: int
) -> tuple[list[Any], str]:
    """One page of ``items`` and the next token (an offset, as a string; "" on the last page)."""
    size = min(page_size or default, maximum)
    try:
        start = int(page_token or "0")
    except ValueError as e:
        raise invalid(f"Invalid page token: {page_token}") from e
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


# --------------------------------------------------------------------------------------------------
# Service accounts (data)


def _accounts(world: World) -> dict[str, dict[str, Any]]:
    return world.data.setdefault("iam", {}).setdefault("service_accounts", {})  # type: ignore[no-any-return]


def _project_of_email(email: str) -> str | None:
    """``gke-admin@demo-proj.iam.gserviceaccount.com`` -> ``demo-proj`` (None for other domains)."""
    _, _, domain = email.partition("@")
    suffix = "." + SA_DOMAIN
    return domain[: -len(suffix)] if domain.endswith(suffix) else None


def _propagated(world: World, sa: dict[str, Any]) -> bool:
    return bool(world.now() - sa["create_time"] >= world.knobs.sa_propagation_s)


def service_account(world: World, project: str, email: str, usable: bool = True) -> dict[str, Any] | None:
    """The service account ``email`` of ``project`` (a copy), or None.

    With ``usable`` (the default) an account created less than ``sa_propagation_s`` ago counts as
    missing, as it does on GCP for bindings, node pools and token minting.

    Example: ``service_account(world, "demo-proj", "gke-node@demo-proj.iam.gserviceaccount.com")``.
    """
    with world.lock:
        sa = _accounts(world).get(email)
        if sa is None or sa["project_id"] != project:
            return None
        if usable and not _propagated(world, sa):
            return None
        return dict(sa)


def _find_account(world: World, key: str) -> dict[str, Any] | None:
    """By email, or by unique id (GetServiceAccount accepts both)."""
    accounts = _accounts(world)
    if key in accounts:
        return accounts[key]
    return next((sa for sa in accounts.values() if sa["unique_id"] == key), None)


def _resolve_name(world: World, name: str) -> tuple[str, str, dict[str, Any] | None]:
    """``projects/P|-/serviceAccounts/EMAIL|UNIQUE_ID`` -> (project, email-or-key, account or None).

    The project is the account's own when it exists, else the one the name or the email implies;
    permission checks need it even for an account that does not exist.
    """
    m = _SA_NAME.match(name)
    if not m:
        raise invalid(f"Invalid service account name: {name}")
    project, key = m.groups()
    if project != "-":
        project = world.project(project)["project_id"]  # by id or number; unknown: PERMISSION_DENIED
    sa = _find_account(world, key)
    if sa is not None and project in ("-", sa["project_id"]):
        return sa["project_id"], sa["email"], sa
    if project == "-":
        project = _project_of_email(key) or ""
        if not project:
            raise not_found("Unknown service account")
        world.project(project)
    return project, key, None


def _sa_proto(sa: dict[str, Any]) -> iam_admin_v1.ServiceAccount:
    return iam_admin_v1.ServiceAccount(
        name=sa["name"],
        project_id=sa["project_id"],
        unique_id=sa["unique_id"],
        email=sa["email"],
        display_name=sa["display_name"],
        description=sa["description"],
        etag=base64.b64decode(sa["etag"]),
        oauth2_client_id=sa["oauth2_client_id"],
        disabled=sa["disabled"],
    )


def _validate_account_id(account_id: str) -> None:
    # GCP's texts: the length rule first, then the pattern.
    if not 6 <= len(account_id) <= 30:
        raise invalid(f'The account ID "{account_id}" does not have a length between 6 and 30.')
    if not _ACCOUNT_ID.match(account_id):
        raise invalid(f"{account_id} does not match [a-z]([-a-z0-9]*[a-z0-9]).")


def _tombstone(world: World, project: str, email: str, unique_id: str) -> None:
    """Rewrite bindings of a deleted account as GCP shows them: ``deleted:serviceAccount:E?uid=N``.

    This is why a re-created account with the same email does not inherit the old grants.
    """
    old = f"serviceAccount:{email}"
    new = f"deleted:serviceAccount:{email}?uid={unique_id}"
    for resource, pol in world.data.get("policies", {}).items():
        if resource != f"projects/{project}" and not resource.startswith(f"projects/{project}/"):
            continue
        if not any(old in b["members"] for b in pol["bindings"]):
            continue
        for b in pol["bindings"]:
            b["members"] = sorted(new if m == old else m for m in b["members"])
        pol["added"] = {k: v for k, v in pol["added"].items() if k.split("|", 1)[1] != old}
        pol["etag_n"] += 1


# --------------------------------------------------------------------------------------------------
# google.iam.admin.v1.IAM


def _parent_project(world: World, caller: str, name: str, permission: str) -> str:
    """The project of a ``projects/P`` parent, with the API enabled and ``permission`` held."""
    m = _PROJECT_NAME.match(name)
    if not m:
        raise invalid(f"Invalid project resource name: {name}")
    project: str = world.project(m.group(1))["project_id"]
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, permission, project)
    return project


def create_service_account(
    world: World, request: iam_admin_v1.CreateServiceAccountRequest, caller: str
) -> iam_admin_v1.ServiceAccount:
    project = _parent_project(world, caller, request.name, "iam.serviceAccounts.create")
    _validate_account_id(request.account_id)
    email = f"{request.account_id}@{project}.{SA_DOMAIN}"
    with world.lock:
        accounts = _accounts(world)
        if email in accounts:
            raise already_exists(
                f"Service account {request.account_id} already exists within project projects/{project}."
            )
        unique_id = str(10**20 + world.rng.randrange(9 * 10**20))  # 21 digits, starts with 1..9
        sa = {
            "name": f"projects/{project}/serviceAccounts/{email}",
            "project_id": project,
            "unique_id": unique_id,
            "email": email,
            "display_name": request.service_account.display_name,
            "description": request.service_account.description,
            "etag": "MDEwMjE5MjA=",
            "oauth2_client_id": unique_id,  # GCP reuses the unique id as the OAuth2 client id
            "disabled": False,
            "create_time": world.now(),
        }
        accounts[email] = sa
        world.changed()
        return _sa_proto(sa)


def get_service_account(
    world: World, request: iam_admin_v1.GetServiceAccountRequest, caller: str
) -> iam_admin_v1.ServiceAccount:
    project, email, sa = _resolve_name(world, request.name)
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, "iam.serviceAccounts.get", project, email)
    if sa is None:
        raise not_found("Unknown service account")
    return _sa_proto(sa)


def patch_service_account(
    world: World, request: iam_admin_v1.PatchServiceAccountRequest, caller: str
) -> iam_admin_v1.ServiceAccount:
    """PatchServiceAccount: display_name and description, as named by the update mask."""
    project, email, sa = _resolve_name(world, request.service_account.name)
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, "iam.serviceAccounts.update", project, email)
    if sa is None:
        raise not_found("Unknown service account")
    paths = set(request.update_mask.paths)
    unknown = paths - {"display_name", "description"}
    if not paths or unknown:
        raise invalid(f"Invalid update mask: {sorted(unknown) or 'empty'}; only display_name and description")
    with world.lock:
        for path in paths:
            sa[path] = getattr(request.service_account, path)
        world.changed()
        return _sa_proto(sa)


def list_service_accounts(
    world: World, request: iam_admin_v1.ListServiceAccountsRequest, caller: str
) -> iam_admin_v1.ListServiceAccountsResponse:
    project = _parent_project(world, caller, request.name, "iam.serviceAccounts.list")
    with world.lock:
        mine = sorted(
            (sa for sa in _accounts(world).values() if sa["project_id"] == project), key=lambda s: s["email"]
        )
        page, token = _page(mine, request.page_size, request.page_token, default=20, maximum=100)
        return iam_admin_v1.ListServiceAccountsResponse(
            accounts=[_sa_proto(sa) for sa in page], next_page_token=token
        )


def delete_service_account(
    world: World, request: iam_admin_v1.DeleteServiceAccountRequest, caller: str
) -> empty_pb2.Empty:
    project, email, sa = _resolve_name(world, request.name)
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, "iam.serviceAccounts.delete", project, email)
    with world.lock:
        if sa is None or email not in _accounts(world):
            raise not_found(f"Service account projects/{project}/serviceAccounts/{email} does not exist.")
        del _accounts(world)[email]
        world.data.get("policies", {}).pop(f"projects/{project}/serviceAccounts/{email}", None)
        _tombstone(world, project, email, sa["unique_id"])
        world.changed()
    return empty_pb2.Empty()


# --------------------------------------------------------------------------------------------------
# IAM policies (shared by the service-account and project levels)


def _policy_proto(pol: dict[str, Any]) -> policy_pb2.Policy:
    return policy_pb2.Policy(
        version=pol["version"],
        etag=World.etag_of(pol),
        bindings=[policy_pb2.Binding(role=b["role"], members=b["members"]) for b in pol["bindings"]],
    )


def _check_role(role: str) -> None:
    custom = re.match(r"^(projects|organizations)/[^/]+/roles/[\w.]+$", role)
    if not (role.startswith("roles/") or custom):
        raise invalid(f"Role {role} is not supported for this resource.")


def _check_member(world: World, member: str, project_level: bool) -> None:
    """GCP's checks on one binding member: its form, and that our own service accounts exist."""
    if member in _PUBLIC_MEMBERS:
        if project_level:
            raise invalid(f"Project does not support {member} as a member of a binding.")
        return
    if not member.startswith(_MEMBER_PREFIXES) or member.endswith(":"):
        raise invalid('Policy members must be of the form "<type>:<value>".')
    if member.startswith("serviceAccount:"):
        email = member.split(":", 1)[1]
        project = _project_of_email(email)
        # Only accounts of emulated projects can be checked; Google-managed ones pass.
        if (
            project
            and project in world.data.get("projects", {})
            and not service_account(world, project, email)
        ):
            raise invalid(f"Service account {email} does not exist.")


def _check_owners(old: dict[str, Any], bindings: list[dict[str, Any]]) -> None:
    """Project rules: owners are invited, never granted by setIamPolicy; the last one stays."""
    old_owners = {m for b in old["bindings"] if b["role"] == "roles/owner" for m in b["members"]}
    new_owners = {m for b in bindings if b["role"] == "roles/owner" for m in b["members"]}
    invited = {m for m in new_owners - old_owners if m.startswith(("user:", "group:"))}
    if invited:
        raise invalid(
            "Request contains an invalid argument. [SOLO_MUST_INVITE_OWNERS: "
            f"{', '.join(sorted(invited))} must be invited from the Cloud Console]"
        )
    if old_owners and not any(m.startswith("user:") for m in new_owners):
        raise invalid(
            "The policy must keep at least one owner who has accepted the Terms of Service; "
            "removing the last one is refused."
        )


def _write_policy(
    world: World, resource: str, policy: policy_pb2.Policy, project_level: bool
) -> policy_pb2.Policy:
    """Validate ``policy`` as GCP does, then compare-and-swap it into ``resource``."""
    bindings: list[dict[str, Any]] = []
    for b in policy.bindings:
        if b.HasField("condition"):
            if policy.version < 3:
                raise invalid("Policies with conditional role bindings must specify version 3.")
            raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, "The emulator does not model IAM conditions.")
        _check_role(b.role)
        for member in b.members:
            _check_member(world, member, project_level)
        bindings.append({"role": b.role, "members": list(b.members)})
    with world.lock:  # the checks below and the write form one atomic step
        if project_level:
            _check_owners(world.policy(resource), bindings)
        # Without conditional bindings (not modelled) a policy is version 1, whatever version the
        # writer named: Google answers version 1 then.
        pol = world.set_policy(resource, bindings, policy.etag, version=1)
        return _policy_proto(pol)


def _read_policy(world: World, resource: str) -> policy_pb2.Policy:
    with world.lock:
        return _policy_proto(world.policy(resource))


def sa_get_iam_policy(
    world: World, request: iam_policy_pb2.GetIamPolicyRequest, caller: str
) -> policy_pb2.Policy:
    project, email, sa = _resolve_name(world, request.resource)
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, "iam.serviceAccounts.getIamPolicy", project, email)
    if sa is None:
        raise not_found("Unknown service account")
    return _read_policy(world, sa["name"])


def sa_set_iam_policy(
    world: World, request: iam_policy_pb2.SetIamPolicyRequest, caller: str
) -> policy_pb2.Policy:
    project, email, sa = _resolve_name(world, request.resource)
    world.require_service(project, "iam.googleapis.com")
    _iam_check(world, caller, "iam.serviceAccounts.setIamPolicy", project, email)
    if sa is None:
        raise not_found("Unknown service account")
    return _write_policy(world, sa["name"], request.policy, project_level=False)


# --------------------------------------------------------------------------------------------------
# google.iam.credentials.v1.IAMCredentials


def _token_denied() -> EmulatorError:
    return _iam_denied("iam.serviceAccounts.getAccessToken")


def generate_access_token(
    world: World, caller: str, email: str, scopes: list[str], lifetime_s: float
) -> tuple[str, float]:
    """Mint an access token of ``email`` for ``caller`` -> (token, expiry as epoch seconds).

    Needs ``iam.serviceAccounts.getAccessToken`` on the account or its project, which only
    roles/iam.serviceAccountTokenCreator grants (not owner, not serviceAccountUser).

    Example: ``generate_access_token(world, "user:me@x.com", "gke-admin@p.iam.gserviceaccount.com",
    ["https://www.googleapis.com/auth/cloud-platform"], 1800)``.
    """
    lifetime = lifetime_s if lifetime_s > 0 else MAX_TOKEN_LIFETIME_S
    if lifetime > MAX_TOKEN_LIFETIME_S:
        raise invalid(
            f"The lifetime requested ({lifetime:g}s) exceeds the maximum of 3600s; longer lifetimes need "
            "the organization policy constraint iam.allowServiceAccountCredentialLifetimeExtension."
        )
    if not scopes:
        raise invalid("Scope required.")
    with world.lock:
        sa = _accounts(world).get(email)
        project = sa["project_id"] if sa else _project_of_email(email)
    if not project or project not in world.data.get("projects", {}):
        raise _token_denied()  # GCP does not tell callers whether a foreign account exists
    world.require_service(project, "iamcredentials.googleapis.com")
    if not world.has_permission(caller, "iam.serviceAccounts.getAccessToken", project, service_account=email):
        raise _token_denied()
    sa = service_account(world, project, email)
    if sa is None or world.now() - sa["create_time"] < world.knobs.token_propagation_s:
        raise not_found(f"Not found; Gaia id not found for email {email}")
    return world.mint_token(f"serviceAccount:{email}", lifetime, scopes)


def grpc_generate_access_token(
    world: World, request: iam_credentials_v1.GenerateAccessTokenRequest, caller: str
) -> iam_credentials_v1.GenerateAccessTokenResponse:
    m = _SA_NAME.match(request.name)
    if not m:
        raise invalid(f"Invalid service account name: {request.name}")
    if request.delegates:
        raise EmulatorError(grpc.StatusCode.UNIMPLEMENTED, "The emulator does not model delegation chains.")
    lifetime = request.lifetime.total_seconds() if "lifetime" in request else 0.0
    token, expiry = generate_access_token(world, caller, m.group(2), list(request.scope), lifetime)
    return iam_credentials_v1.GenerateAccessTokenResponse(
        access_token=token, expire_time=_timestamp(int(expiry))
    )


# --------------------------------------------------------------------------------------------------
# google.cloud.resourcemanager.v3.Projects


def _rm_project(world: World, name: str) -> dict[str, Any]:
    """``projects/ID`` or ``projects/NUMBER`` -> the project, its API enabled."""
    m = _PROJECT_NAME.match(name)
    if not m:
        raise invalid(f"Invalid project resource name: {name}")
    p = world.project(m.group(1))
    world.require_service(p["project_id"], "cloudresourcemanager.googleapis.com")
    return p


def _rm_check(world: World, caller: str, permission: str, p: dict[str, Any]) -> None:
    resource = f"//cloudresourcemanager.googleapis.com/projects/{p['project_id']}"
    world.check(caller, permission, p["project_id"], resource)


def get_project(
    world: World, request: resourcemanager_v3.GetProjectRequest, caller: str
) -> resourcemanager_v3.Project:
    p = _rm_project(world, request.name)
    _rm_check(world, caller, "resourcemanager.projects.get", p)
    return resourcemanager_v3.Project(
        name=f"projects/{p['number']}",
        project_id=p["project_id"],
        state=resourcemanager_v3.Project.State.ACTIVE,
        display_name=p["project_id"],
        create_time=_timestamp(p["create_time"]),
        update_time=_timestamp(p["create_time"]),
        etag=f'W/"{p["number"]}"',
    )


def project_get_iam_policy(
    world: World, request: iam_policy_pb2.GetIamPolicyRequest, caller: str
) -> policy_pb2.Policy:
    p = _rm_project(world, request.resource)
    _rm_check(world, caller, "resourcemanager.projects.getIamPolicy", p)
    return _read_policy(world, f"projects/{p['project_id']}")


def project_set_iam_policy(
    world: World, request: iam_policy_pb2.SetIamPolicyRequest, caller: str
) -> policy_pb2.Policy:
    p = _rm_project(world, request.resource)
    _rm_check(world, caller, "resourcemanager.projects.setIamPolicy", p)
    return _write_policy(world, f"projects/{p['project_id']}", request.policy, project_level=True)


# Resource Manager v1 over REST (what gcloud calls: ``projects describe``, ``get-iam-policy``,
# ``add-iam-policy-binding``): the same project and policy rules, v1's resource names and shapes.


def _v1_project(world: World, call: Call, caller: str) -> dict[str, Any]:
    p = _rm_project(world, f"projects/{call.params['projectId']}")
    _rm_check(world, caller, "resourcemanager.projects.get", p)
    return {
        "projectNumber": p["number"],
        "projectId": p["project_id"],
        "lifecycleState": "ACTIVE",
        "name": p["project_id"],
        "createTime": _timestamp(p["create_time"]).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def _v1_policy_call(world: World, fn: Any, request_type: Any) -> Any:
    def run(call: Call, caller: str) -> dict[str, Any]:
        request = parse_into(request_type(), {**call.body, "resource": f"projects/{call.params['resource']}"})
        return to_json(fn(world, request, caller))

    return run


def json_methods(world: World) -> dict[str, JsonMethod]:
    """REST-only methods (Resource Manager v1), by discovery method id."""

    def project_of(call: Call) -> str:
        return f"projects/{call.params.get('projectId') or call.params.get('resource')}"

    rm = "resourcemanager"
    return {
        "cloudresourcemanager.v1:projects.get": JsonMethod(
            partial(_v1_project, world), rm, "GetProject", resource=project_of
        ),
        "cloudresourcemanager.v1:projects.getIamPolicy": JsonMethod(
            _v1_policy_call(world, project_get_iam_policy, iam_policy_pb2.GetIamPolicyRequest),
            rm,
            "GetIamPolicy",
            resource=project_of,
        ),
        "cloudresourcemanager.v1:projects.setIamPolicy": JsonMethod(
            _v1_policy_call(world, project_set_iam_policy, iam_policy_pb2.SetIamPolicyRequest),
            rm,
            "SetIamPolicy",
            mutating=True,
            resource=project_of,
        ),
    }


def project_test_iam_permissions(
    world: World, request: iam_policy_pb2.TestIamPermissionsRequest, caller: str
) -> iam_policy_pb2.TestIamPermissionsResponse:
    """The asked permissions the caller holds on the project. No permission is needed to ask
    (https://cloud.google.com/resource-manager/reference/rest/v3/projects/testIamPermissions)."""
    p = _rm_project(world, request.resource)
    if len(request.permissions) > 100:
        raise invalid("No more than 100 permissions can be tested at once.")
    held = [perm for perm in request.permissions if world.has_permission(caller, perm, p["project_id"])]
    return iam_policy_pb2.TestIamPermissionsResponse(permissions=held)


# --------------------------------------------------------------------------------------------------
# google.api.serviceusage.v1.ServiceUsage


def _unknown_services(names: list[str]) -> EmulatorError:
    return EmulatorError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"Not found or permission denied for service(s): {', '.join(names)}.",
    )


def _su_project(world: World, caller: str, project_ref: str, permission: str) -> dict[str, Any]:
    p = world.project(project_ref)
    world.check(caller, permission, p["project_id"], f"projects/{p['project_id']}")
    return p


def _service_proto(p: dict[str, Any], service_id: str) -> service_usage_v1.Service:
    titles = _service_titles()
    if service_id not in titles:
        raise _unknown_services([service_id])
    state = (
        service_usage_v1.State.ENABLED
        if service_id in p["enabled_services"]
        else service_usage_v1.State.DISABLED
    )
    return service_usage_v1.Service(
        name=f"projects/{p['number']}/services/{service_id}",
        parent=f"projects/{p['number']}",
        config=service_usage_v1.types.ServiceConfig(name=service_id, title=titles[service_id]),
        state=state,
    )


def _parse_service_name(name: str) -> tuple[str, str]:
    m = _SERVICE_NAME.match(name)
    if not m:
        raise invalid(f"Invalid service name: {name}")
    return m.group(1), m.group(2)


def _parse_parent(parent: str) -> str:
    m = _PROJECT_NAME.match(parent)
    if not m:
        raise invalid(f"Invalid parent: {parent}")
    return m.group(1)


def get_service(
    world: World, request: service_usage_v1.GetServiceRequest, caller: str
) -> service_usage_v1.Service:
    project, service_id = _parse_service_name(request.name)
    p = _su_project(world, caller, project, "serviceusage.services.get")
    return _service_proto(p, service_id)


def batch_get_services(
    world: World, request: service_usage_v1.BatchGetServicesRequest, caller: str
) -> service_usage_v1.BatchGetServicesResponse:
    p = _su_project(world, caller, _parse_parent(request.parent), "serviceusage.services.get")
    if len(request.names) > 30:
        raise invalid("A maximum of 30 services can be requested in one batch.")
    services = []
    for name in request.names:
        project, service_id = _parse_service_name(name)
        if world.project(project) is not p:
            raise invalid(f"Service {name} is not in parent {request.parent}.")
        services.append(_service_proto(p, service_id))
    return service_usage_v1.BatchGetServicesResponse(services=services)


def list_services(
    world: World, request: service_usage_v1.ListServicesRequest, caller: str
) -> service_usage_v1.ListServicesResponse:
    p = _su_project(world, caller, _parse_parent(request.parent), "serviceusage.services.list")
    filt = request.filter.replace(" ", "")
    if filt not in ("", "state:ENABLED", "state:DISABLED"):
        raise invalid(f"Invalid filter: {request.filter}")
    with world.lock:
        services = [_service_proto(p, s) for s in sorted(_service_titles())]
    if filt:
        wanted = filt.split(":", 1)[1]
        services = [s for s in services if s.state.name == wanted]
    page, token = _page(services, request.page_size, request.page_token, default=50, maximum=200)
    return service_usage_v1.ListServicesResponse(services=page, next_page_token=token)


def _enable(world: World, p: dict[str, Any], service_ids: list[str]) -> list[service_usage_v1.Service]:
    """Enable ``service_ids`` all or none (GCP fails the whole batch on one unknown name)."""
    titles = _service_titles()
    unknown = [s for s in service_ids if s not in titles]
    if unknown:
        raise _unknown_services(unknown)
    world.enable_services(p, service_ids)
    with world.lock:
        return [_service_proto(p, s) for s in service_ids]


def _done_operation(p: dict[str, Any], response: Any, resource_names: list[str]) -> operations_pb2.Operation:
    """An operation that is already done, so the client's ``.result()`` returns with no polling."""
    packed = any_pb2.Any()
    packed.Pack(type(response).pb(response))
    metadata = any_pb2.Any()
    metadata.Pack(
        service_usage_v1.types.OperationMetadata.pb(
            service_usage_v1.types.OperationMetadata(resource_names=resource_names)
        )
    )
    return operations_pb2.Operation(
        name=f"operations/acat.p2-{p['number']}-{uuid.uuid4()}", done=True, response=packed, metadata=metadata
    )


def enable_service(
    world: World, request: service_usage_v1.EnableServiceRequest, caller: str
) -> operations_pb2.Operation:
    project, service_id = _parse_service_name(request.name)
    p = _su_project(world, caller, project, "serviceusage.services.enable")
    (svc,) = _enable(world, p, [service_id])
    return _done_operation(p, service_usage_v1.EnableServiceResponse(service=svc), [svc.name])


def batch_enable_services(
    world: World, request: service_usage_v1.BatchEnableServicesRequest, caller: str
) -> operations_pb2.Operation:
    p = _su_project(world, caller, _parse_parent(request.parent), "serviceusage.services.enable")
    if not request.service_ids or len(request.service_ids) > 20:
        raise invalid("Between 1 and 20 services can be enabled in one batch.")
    services = _enable(world, p, list(request.service_ids))
    response = service_usage_v1.BatchEnableServicesResponse(services=services)
    return _done_operation(p, response, [s.name for s in services])


# --------------------------------------------------------------------------------------------------
# Wiring


def services(world: World) -> list[Service]:
    """The four services, bound to ``world`` (served over gRPC and REST alike)."""

    def m(req: Any, resp: Any, fn: Any, mutating: bool = False) -> Method:
        return method(req, resp, partial(fn, world), mutating=mutating)

    iam = iam_admin_v1
    iam_methods = {
        "CreateServiceAccount": m(
            iam.CreateServiceAccountRequest, iam.ServiceAccount, create_service_account, True
        ),
        "GetServiceAccount": m(iam.GetServiceAccountRequest, iam.ServiceAccount, get_service_account),
        "PatchServiceAccount": m(
            iam.PatchServiceAccountRequest, iam.ServiceAccount, patch_service_account, True
        ),
        "ListServiceAccounts": m(
            iam.ListServiceAccountsRequest, iam.ListServiceAccountsResponse, list_service_accounts
        ),
        "DeleteServiceAccount": m(
            iam.DeleteServiceAccountRequest, empty_pb2.Empty, delete_service_account, True
        ),
        "GetIamPolicy": m(iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy, sa_get_iam_policy),
        "SetIamPolicy": m(iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy, sa_set_iam_policy, True),
    }
    creds = iam_credentials_v1
    creds_methods = {
        "GenerateAccessToken": m(
            creds.GenerateAccessTokenRequest, creds.GenerateAccessTokenResponse, grpc_generate_access_token
        ),
    }
    rm = resourcemanager_v3
    rm_methods = {
        "GetProject": m(rm.GetProjectRequest, rm.Project, get_project),
        "GetIamPolicy": m(iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy, project_get_iam_policy),
        "SetIamPolicy": m(
            iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy, project_set_iam_policy, True
        ),
        "TestIamPermissions": m(
            iam_policy_pb2.TestIamPermissionsRequest,
            iam_policy_pb2.TestIamPermissionsResponse,
            project_test_iam_permissions,
        ),
    }
    su = service_usage_v1
    su_methods = {
        "GetService": m(su.GetServiceRequest, su.Service, get_service),
        "BatchGetServices": m(su.BatchGetServicesRequest, su.BatchGetServicesResponse, batch_get_services),
        "ListServices": m(su.ListServicesRequest, su.ListServicesResponse, list_services),
        "EnableService": m(su.EnableServiceRequest, operations_pb2.Operation, enable_service, True),
        "BatchEnableServices": m(
            su.BatchEnableServicesRequest, operations_pb2.Operation, batch_enable_services, True
        ),
    }
    return [
        Service("google.iam.admin.v1.IAM", "iam", iam_methods),
        Service("google.iam.credentials.v1.IAMCredentials", "iamcredentials", creds_methods),
        Service("google.cloud.resourcemanager.v3.Projects", "resourcemanager", rm_methods),
        Service("google.api.serviceusage.v1.ServiceUsage", "serviceusage", su_methods),
    ]
