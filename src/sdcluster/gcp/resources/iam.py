"""Service accounts, additive role members, and the required Google APIs.

Bindings are **additive members, never authoritative**: each (resource, role, member) is its own
resource; apply adds the member, destroy removes only that member, and other members of the same role
are never touched (the tutorial's ``google_project_iam_binding`` silently removes them, a known
lock-out cause). Every policy edit is a read-modify-write with the policy etag, redone whole on a
concurrent change (``retry.read_modify_write``).

Example addresses::

    iam.service_account.gke-admin
    iam.project_member.gke-admin/container.admin          (roles/container.admin)
    iam.sa_member.gke-node/iam.serviceAccountUser/gke-admin (serviceAccount:gke-admin@P.iam.gserviceaccount.com)
    iam.sa_member.gke-admin/iam.serviceAccountTokenCreator/demo@example.com   (user:demo@example.com)

Addresses name a role without its ``roles/`` prefix and a member by its short name (a service account
of the project by its id, a user by its email), so that a plan reads at 80 columns; the full role and
member are in the record's id. States written with the long forms are moved on read.
    project.service.container.googleapis.com
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ... import retry
from ...config.names import service_account_email, service_account_parts, short_member, short_role
from ...engine import Change, Resource
from ...errors import AlreadyExists, ApiDisabled, InvalidRequest, NotFound, SdclusterError
from ...state import ResourceState, State
from ..clients import CLOUD_PLATFORM
from ..context import GcpContext
from ..labels import SA_MARKER

REQUIRED_SERVICES = (
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "storage.googleapis.com",
)


# Google gives no bound for an enabling to propagate ("wait a few minutes", in its SERVICE_DISABLED
# message; Terraform's google_project_service guide: "eventually consistent"); ten minutes is ample.
API_PROPAGATION_TIMEOUT_S = 600.0

# --------------------------------------------------------------------------------------------------
# APIs


def _probes(ctx: GcpContext) -> dict[str, Callable[[], Any]]:
    """A cheap read of each API, as the project's user (what its propagation is checked with)."""
    f, p, cfg = ctx.factory, ctx.project, ctx.config
    return {
        "cloudresourcemanager.googleapis.com": lambda: f.projects().get_project(name=f"projects/{p}"),
        "compute.googleapis.com": lambda: f.compute("regions").get(project=p, region=cfg.region),
        "container.googleapis.com": lambda: f.cluster_manager().list_clusters(
            parent=f"projects/{p}/locations/-"
        ),
        "iam.googleapis.com": lambda: f.iam_admin().list_service_accounts(
            request={"name": f"projects/{p}", "page_size": 1}
        ),
        "iamcredentials.googleapis.com": lambda: f.iam_credentials().generate_access_token(
            name=f"projects/-/serviceAccounts/{cfg.admin_email}", scope=[CLOUD_PLATFORM]
        ),
        "storage.googleapis.com": lambda: next(iter(f.storage(p).list_buckets(max_results=1)), None),
    }


class ProjectService(Resource[GcpContext]):
    """A Google API enabled on the project (Service Usage). Left enabled on destroy.

    With ``manage_apis = false`` nothing is enabled: a disabled API is reported at plan time with
    the exact ``gcloud services enable`` command.
    """

    type = "project.service"

    def __init__(self, project: str, service: str, manage: bool) -> None:
        super().__init__(f"{self.type}.{service}", {"state": "ENABLED"})
        self.project = project
        self.service = service
        self.manage = manage
        self.retain_on_destroy = f"API {service} stays enabled (other workloads may use it)"
        self.forget_on_destroy = True

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> ProjectService:
        cfg = provider.config
        return cls(cfg.project, address.removeprefix(f"{cls.type}."), cfg.manage_apis)

    @property
    def resource_name(self) -> str:
        return f"projects/{self.project}/services/{self.service}"

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return self.resource_name

    @classmethod
    def upgrade_record(cls, record: ResourceState, state: State) -> None:
        """Ids before 0.2 were the bare service name: name the project too."""
        if "/" not in record.id and state.project:
            record.id = f"projects/{state.project}/services/{record.id}"

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        client = ctx.factory.service_usage()
        svc = retry.call(
            lambda: client.get_service(request={"name": self.resource_name}), project=self.project
        )
        enabled = svc.state.name == "ENABLED"
        if not enabled and not self.manage:
            raise ApiDisabled(
                f"the {self.service} API is not enabled in project {self.project}",
                hint=f"enable the API: gcloud services enable {self.service} --project {self.project}",
                service=self.service,
            )
        return {"state": "ENABLED"} if enabled else None

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"API {self.service} is enabled"

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return True  # an enabled API is the project's, not someone's: sdcluster only ever enables it

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        client = ctx.factory.service_usage()
        ctx.report(self.address, f"enabling {self.service}")
        op = retry.call(
            lambda: client.enable_service(request={"name": self.resource_name}), project=self.project
        )
        op.result(timeout=600)  # type: ignore[no-untyped-call]
        self._wait_until_answering(ctx)
        return {"state": "ENABLED"}

    def _wait_until_answering(self, ctx: GcpContext) -> None:
        """Enabling is eventually consistent: the operation is done, yet the API may answer
        SERVICE_DISABLED "for a few minutes" (Google's own message: "If you enabled this API
        recently, wait a few minutes for the action to propagate to our systems and retry").
        Call it until it answers anything else (an answer, a denial, a 404), up to
        ``API_PROPAGATION_TIMEOUT_S``, so what depends on it starts only once it serves."""
        probe = _probes(ctx).get(self.service)
        if probe is None:
            return

        def answers() -> bool:
            try:
                retry.call(probe, project=self.project)
            except ApiDisabled:
                ctx.report(self.address, f"waiting for {self.service} to answer (enabling propagates)")
                raise
            except SdclusterError:
                pass  # any other answer: the API is serving this project
            return True

        retry.until(
            answers,
            timeout_s=API_PROPAGATION_TIMEOUT_S,
            what=f"the {self.service} API to answer after it was enabled",
            retry_on=(ApiDisabled,),
            hint=f"check it: gcloud services list --enabled --project {self.project}",
            max_interval_s=10.0,
        )

    def delete(self, ctx: GcpContext, change: Change) -> None:  # never planned: retained
        return None


# --------------------------------------------------------------------------------------------------
# Service accounts


class ServiceAccount(Resource[GcpContext]):
    type = "iam.service_account"
    informative = frozenset({"email", "unique_id", "description"})

    def __init__(self, project: str, account_id: str, display_name: str, deps: tuple[str, ...]) -> None:
        email = service_account_email(account_id, project)
        super().__init__(
            f"{self.type}.{account_id}",
            {"email": email, "display_name": display_name},
            deps,
        )
        self.project = project
        self.account_id = account_id
        self.email = email

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> ServiceAccount | None:
        parts = service_account_parts(record.id)
        if parts is None:
            return None
        account_id, project = parts
        display = str(record.attributes.get("display_name", ""))
        return cls(project, account_id, display, tuple(record.dependencies))

    @property
    def resource_name(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.email}"

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return self.email

    def _get(self, ctx: GcpContext) -> dict[str, Any] | None:
        client = ctx.factory.iam_admin()
        try:
            sa = retry.call(lambda: client.get_service_account(name=self.resource_name), project=self.project)
        except NotFound:
            return None
        return {
            "email": sa.email,
            "display_name": sa.display_name,
            "unique_id": sa.unique_id,
            "description": sa.description,
        }

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        return self._get(ctx)

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return SA_MARKER in str(observed.get("description", ""))

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"service account {self.email} exists and matches"

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        from google.cloud import iam_admin_v1

        client = ctx.factory.iam_admin()
        request = iam_admin_v1.CreateServiceAccountRequest(
            name=f"projects/{self.project}",
            account_id=self.account_id,
            service_account=iam_admin_v1.ServiceAccount(
                display_name=self._desired["display_name"],
                description=f"Created by sdcluster ({SA_MARKER})",
            ),
        )
        ctx.account_created()
        taken = False
        try:
            retry.call(lambda: client.create_service_account(request=request), project=self.project)
        except AlreadyExists:
            taken = True  # ours from an interrupted run or a retried call (marked)? else a conflict
        # New accounts are eventually consistent: read until visible instead of sleeping.
        observed = retry.until(
            lambda: self._get(ctx),
            timeout_s=ctx.config.iam.propagation_timeout_s,
            what=f"service account {self.email} to become visible",
        )
        if taken and not self.owned(observed):
            raise AlreadyExists(
                f"service account {self.email} already exists and was not made by sdcluster",
                hint=f"to adopt it: sdcluster import {self.address} {self.email}",
            )
        if observed["display_name"] != self._desired["display_name"]:
            return self.update(ctx, change)
        return observed

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        from google.cloud import iam_admin_v1
        from google.protobuf import field_mask_pb2

        client = ctx.factory.iam_admin()
        request = iam_admin_v1.PatchServiceAccountRequest(
            service_account=iam_admin_v1.ServiceAccount(
                name=self.resource_name, display_name=self._desired["display_name"]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
        retry.call(lambda: client.patch_service_account(request=request), project=self.project)
        return self._get(ctx) or dict(self._desired)

    def delete(self, ctx: GcpContext, change: Change) -> None:
        client = ctx.factory.iam_admin()
        try:
            retry.call(lambda: client.delete_service_account(name=self.resource_name), project=self.project)
        except NotFound:
            pass


# --------------------------------------------------------------------------------------------------
# Additive role members


class _Member(Resource[GcpContext]):
    """One member of one role on one policy. Subclasses say where the policy lives."""

    def __init__(self, address: str, role: str, member: str, deps: tuple[str, ...], project: str) -> None:
        super().__init__(address, {"role": role, "member": member}, deps)
        self.role = role
        self.member = member
        self.project = project

    # Policy access, as raw google.iam.v1 Policy messages, through the client that owns the policy.
    def _policy_client(self, ctx: GcpContext) -> Any:
        raise NotImplementedError

    def _get_policy(self, ctx: GcpContext) -> Any:
        from google.iam.v1 import iam_policy_pb2, options_pb2

        return self._policy_client(ctx).get_iam_policy(
            request=iam_policy_pb2.GetIamPolicyRequest(
                resource=self.policy_name, options=options_pb2.GetPolicyOptions(requested_policy_version=3)
            )
        )

    def _set_policy(self, ctx: GcpContext, policy: Any) -> Any:
        from google.iam.v1 import iam_policy_pb2

        return self._policy_client(ctx).set_iam_policy(
            request=iam_policy_pb2.SetIamPolicyRequest(resource=self.policy_name, policy=policy)
        )

    @property
    def policy_name(self) -> str:
        raise NotImplementedError

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return f"{self.policy_name} {self.role} {self.member}"

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        try:
            policy = retry.call(lambda: self._get_policy(ctx), project=self.project)
        except NotFound:
            return None  # the service account holding the policy does not exist (yet)
        if has_member(policy, self.role, self.member):
            return {"role": self.role, "member": self.member}
        return None

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"{self.member} already has {self.role} on {self.policy_name}"

    def _edit(self, ctx: GcpContext, add: bool) -> None:
        def once() -> None:
            policy = self._get_policy(ctx)
            changed = (
                add_member(policy, self.role, self.member)
                if add
                else remove_member(policy, self.role, self.member)
            )
            if changed:
                self._set_policy(ctx, policy)  # carries the etag read above: a concurrent edit -> retry whole

        retry.read_modify_write(once, project=self.project, context=self.address)

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        # A member that was created moments ago may not be accepted yet ("does not exist"):
        # retry with backoff until IAM sees it, within the propagation deadline.
        def add() -> bool:
            self._edit(ctx, add=True)
            return True

        ctx.iam_changed()
        retry.until(
            add,
            timeout_s=ctx.config.iam.propagation_timeout_s,
            what=f"IAM to accept {self.member} in {self.role}",
            retry_on=(InvalidRequest, NotFound),
        )
        return {"role": self.role, "member": self.member}

    def delete(self, ctx: GcpContext, change: Change) -> None:
        try:
            self._edit(ctx, add=False)
        except NotFound:
            pass  # the resource holding the policy is gone: so is the member


class ProjectMember(_Member):
    type = "iam.project_member"

    def __init__(self, project: str, role: str, member: str, who: str, deps: tuple[str, ...]) -> None:
        super().__init__(f"{self.type}.{who}/{short_role(role)}", role, member, deps, project)

    @classmethod
    def current_address(cls, address: str, record: ResourceState) -> str:
        return address.replace("/roles/", "/", 1)

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> ProjectMember | None:
        policy, role, member = _policy_role_member(record)
        who = address.removeprefix(f"{cls.type}.").partition("/")[0]
        project = policy.removeprefix("projects/")
        return cls(project, role, member, who, tuple(record.dependencies)) if "/" not in project else None

    @property
    def policy_name(self) -> str:
        return f"projects/{self.project}"

    def _policy_client(self, ctx: GcpContext) -> Any:
        return ctx.factory.projects()


class ServiceAccountMember(_Member):
    """A member on a service account's own policy (e.g. actAs on gke-node only, not project-wide)."""

    type = "iam.sa_member"

    def __init__(self, project: str, account_id: str, role: str, member: str, deps: tuple[str, ...]) -> None:
        address = f"{self.type}.{account_id}/{short_role(role)}/{short_member(member, project)}"
        super().__init__(address, role, member, deps, project)
        self.email = service_account_email(account_id, project)

    @classmethod
    def current_address(cls, address: str, record: ResourceState) -> str:
        policy, role, member = _policy_role_member(record)
        parts = service_account_parts(policy.rpartition("/serviceAccounts/")[2])
        if parts is None:
            return address
        account_id, project = parts
        return f"{cls.type}.{account_id}/{short_role(role)}/{short_member(member, project)}"

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> ServiceAccountMember | None:
        policy, role, member = _policy_role_member(record)
        parts = service_account_parts(policy.rpartition("/serviceAccounts/")[2])
        if parts is None:
            return None
        account_id, project = parts
        return cls(project, account_id, role, member, tuple(record.dependencies))

    @property
    def policy_name(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.email}"

    def _policy_client(self, ctx: GcpContext) -> Any:
        return ctx.factory.iam_admin()


def _policy_role_member(record: ResourceState) -> tuple[str, str, str]:
    """A member's state id is ``POLICY ROLE MEMBER`` (see ``_Member.state_id``)."""
    policy, _, rest = record.id.partition(" ")
    role, _, member = rest.partition(" ")
    return (
        policy,
        role or str(record.attributes.get("role", "")),
        member or str(record.attributes.get("member", "")),
    )


# Pure helpers on google.iam.v1.Policy (unconditional bindings only; conditional ones are kept).


def has_member(policy: Any, role: str, member: str) -> bool:
    return any(b.role == role and not b.condition.expression and member in b.members for b in policy.bindings)


def add_member(policy: Any, role: str, member: str) -> bool:
    if has_member(policy, role, member):
        return False
    for b in policy.bindings:
        if b.role == role and not b.condition.expression:
            b.members.append(member)
            return True
    policy.bindings.add(role=role, members=[member])
    return True


def remove_member(policy: Any, role: str, member: str) -> bool:
    changed = False
    for b in list(policy.bindings):
        if b.role == role and not b.condition.expression and member in b.members:
            b.members.remove(member)
            changed = True
            if not b.members:
                policy.bindings.remove(b)
    return changed
