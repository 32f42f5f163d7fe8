"""The model bucket and its additive IAM members (service accounts, and the Workload Identity
principal of the Kubernetes service account TF Serving runs as).

``<project>-bucket`` in the region, uniform bucket-level access on, public access prevention
enforced, labelled. Kept on destroy by default (the model lives there); ``destroy --delete-bucket``
deletes it only if it is empty, ``--force`` deletes its objects too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ... import retry
from ...engine import Action, Change, Resource
from ...errors import AlreadyExists, ApiDisabled, Conflict, NotFound, PermissionDenied, UsageError
from ...state import ResourceState
from ..context import GcpContext
from ..labels import MANAGED_BY, marked

if TYPE_CHECKING:
    from ...config import Config


class Bucket(Resource[GcpContext]):
    type = "storage.bucket"
    replace_on = frozenset({"location"})

    def __init__(
        self, cfg: Config, deps: tuple[str, ...], *, delete: bool = False, force: bool = False
    ) -> None:
        super().__init__(
            f"{self.type}.{cfg.bucket_name}",
            {
                "location": cfg.bucket_location.upper(),  # Cloud Storage reports locations upper-cased
                "uniform_bucket_level_access": True,
                "public_access_prevention": "enforced",
                "labels": dict(MANAGED_BY),
            },
            deps,
        )
        self.cfg = cfg
        self.bucket = cfg.bucket_name
        self.force = force
        if not delete:
            self.retain_on_destroy = (
                f"bucket {self.bucket} is kept on destroy (bucket.keep_on_destroy; it holds the model). "
                "To delete it: sdcluster destroy --delete-bucket"
            )

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> Bucket:
        cfg = _with_bucket(provider.config, record.id.removeprefix("gs://"))
        return cls(
            cfg, tuple(record.dependencies), delete=provider.delete_bucket, force=provider.force_bucket
        )

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return f"gs://{self.bucket}"

    def _client(self, ctx: GcpContext) -> Any:
        return ctx.factory.storage(self.cfg.project)

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        client = self._client(ctx)
        try:
            b = retry.call(lambda: client.lookup_bucket(self.bucket), project=self.cfg.project)
        except PermissionDenied as e:
            raise AlreadyExists(
                f"the bucket name {self.bucket} is taken by another project (bucket names are global)",
                hint="choose another name: bucket.name in sdcluster.toml",
            ) from e
        return bucket_attributes(b) if b is not None else None

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"bucket {self.bucket} exists and matches"

    def owned(self, observed: Mapping[str, Any]) -> bool:
        return marked(observed.get("labels"))

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        client = self._client(ctx)
        d = self.desired()
        bucket = client.bucket(self.bucket)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = d["uniform_bucket_level_access"]
        bucket.iam_configuration.public_access_prevention = d["public_access_prevention"]
        bucket.labels = dict(d["labels"])
        try:
            retry.call(
                lambda: client.create_bucket(
                    bucket, project=self.cfg.project, location=self.cfg.bucket_location
                ),
                project=self.cfg.project,
            )
        except (Conflict, AlreadyExists):
            observed = self.read(ctx, None)  # ours from an interrupted run? adopt; else the name is taken
            if observed is None or not self.owned(observed):
                raise AlreadyExists(
                    f"the bucket name {self.bucket} is taken (by a bucket sdcluster did not make)",
                    hint=f"choose another name (bucket.name), or adopt it: sdcluster import {self.address} gs://{self.bucket}",
                ) from None
            if self.diff(d, observed).action is Action.UPDATE:
                return self.update(ctx, change)
            return observed
        return self.read(ctx, None) or d

    def update(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        client = self._client(ctx)
        d = self.desired()

        def patch() -> None:
            b = client.get_bucket(self.bucket)
            b.iam_configuration.uniform_bucket_level_access_enabled = d["uniform_bucket_level_access"]
            b.iam_configuration.public_access_prevention = d["public_access_prevention"]
            b.labels = {**(b.labels or {}), **d["labels"]}
            b.patch()

        retry.call(patch, project=self.cfg.project)
        return self.read(ctx, None) or d

    def delete(self, ctx: GcpContext, change: Change) -> None:
        client = self._client(ctx)

        def remove() -> None:
            from google.api_core import exceptions as gexc

            b = client.bucket(self.bucket)
            blobs = list(client.list_blobs(self.bucket, max_results=1))
            if blobs and not self.force:
                raise UsageError(
                    f"bucket {self.bucket} is not empty",
                    hint="keep it (the default), or also delete its objects: sdcluster destroy --delete-bucket --force",
                )
            try:
                b.delete(force=self.force)
            except gexc.NotFound:
                return

        retry.call(remove, project=self.cfg.project)


def _with_bucket(cfg: Config, name: str) -> Config:
    return cfg.model_copy(update={"bucket": cfg.bucket.model_copy(update={"name": name})})


def bucket_attributes(b: Any) -> dict[str, Any]:
    return {
        "location": str(b.location or "").upper(),
        "uniform_bucket_level_access": bool(b.iam_configuration.uniform_bucket_level_access_enabled),
        "public_access_prevention": str(b.iam_configuration.public_access_prevention or "inherited"),
        "labels": dict(b.labels or {}),
    }


def bucket_role(role: str) -> str:
    """A bucket's roles are Cloud Storage's: addresses name them without ``roles/storage.``
    (``roles/storage.objectViewer`` -> ``objectViewer``), so a plan reads at 80 columns."""
    return role.removeprefix("roles/storage.")


class BucketMember(Resource[GcpContext]):
    """One member of one role on the bucket's IAM policy (additive, like iam.ProjectMember)."""

    type = "storage.bucket_member"

    def __init__(self, cfg: Config, role: str, member: str, who: str, deps: tuple[str, ...]) -> None:
        super().__init__(
            f"{self.type}.{cfg.bucket_name}/{bucket_role(role)}/{who}", {"role": role, "member": member}, deps
        )
        self.cfg = cfg
        self.role = role
        self.member = member

    @classmethod
    def from_state(cls, provider: Any, address: str, record: ResourceState) -> BucketMember:
        bucket, _, rest = record.id.removeprefix("gs://").partition(" ")
        role, _, member = rest.partition(" ")
        who = address.rsplit("/", 1)[-1]
        return cls(_with_bucket(provider.config, bucket), role, member, who, tuple(record.dependencies))

    @classmethod
    def current_address(cls, address: str, record: ResourceState) -> str:
        # Older forms: ".../roles/storage.objectViewer/ksa.default.tf-serving".
        head, _, who = address.replace("/roles/storage.", "/", 1).rpartition("/")
        return f"{head}/{who.removeprefix('ksa.')}"

    def state_id(self, attributes: Mapping[str, Any]) -> str:
        return f"gs://{self.cfg.bucket_name} {self.role} {self.member}"

    def _bucket(self, ctx: GcpContext) -> Any:
        return ctx.factory.storage(self.cfg.project).bucket(self.cfg.bucket_name)

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        try:
            policy = retry.call(
                lambda: self._bucket(ctx).get_iam_policy(requested_policy_version=3), project=self.cfg.project
            )
        except NotFound:
            return None
        for b in policy.bindings:
            if b["role"] == self.role and self.member in b["members"] and not b.get("condition"):
                return {"role": self.role, "member": self.member}
        return None

    def noop_reason(self, observed: Mapping[str, Any]) -> str:
        return f"{self.member} already has {self.role} on gs://{self.cfg.bucket_name}"

    def _edit(self, ctx: GcpContext, add: bool) -> None:
        def once() -> None:
            bucket = self._bucket(ctx)
            policy = bucket.get_iam_policy(requested_policy_version=3)
            for b in policy.bindings:
                if b["role"] == self.role and not b.get("condition"):
                    members = set(b["members"])
                    if (self.member in members) == add:
                        return
                    (members.add if add else members.discard)(self.member)
                    b["members"] = members
                    break
            else:
                if not add:
                    return
                policy.bindings.append({"role": self.role, "members": {self.member}})
            policy.bindings = [b for b in policy.bindings if b["members"]]
            bucket.set_iam_policy(policy)  # sends the etag read above: a concurrent edit -> 412 -> retry

        retry.read_modify_write(once, project=self.cfg.project, context=self.address)

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        ctx.iam_changed()
        self._edit(ctx, add=True)
        return {"role": self.role, "member": self.member}

    def delete(self, ctx: GcpContext, change: Change) -> None:
        try:
            self._edit(ctx, add=False)
        except NotFound:
            pass


def ksa_principal(project: str, number: str, namespace: str, ksa: str) -> str:
    """The IAM principal of a Kubernetes service account under Workload Identity Federation for GKE.

    Example: ``ksa_principal("p", "123", "default", "tf-serving")`` ->
    ``principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p.svc.id.goog/subject/ns/default/sa/tf-serving``.
    """
    return (
        f"principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/"
        f"{project}.svc.id.goog/subject/ns/{namespace}/sa/{ksa}"
    )


class KsaBucketMember(BucketMember):
    """A bucket role for a Kubernetes service account's principal: what pods running as that KSA
    hold on GKE_METADATA nodes (cloud.google.com/kubernetes-engine/docs/concepts/workload-identity).

    The principal names the project by NUMBER. It comes from Resource Manager when this member is
    read or created, or from the state once recorded (a project's number never changes); until then
    the plan shows ``projects/PROJECT_NUMBER`` (e.g. in a fresh project whose Resource Manager API is
    not enabled yet: the member is created after it is).
    """

    def __init__(self, cfg: Config, role: str, namespace: str, ksa: str, deps: tuple[str, ...]) -> None:
        super().__init__(
            cfg,
            role,
            ksa_principal(cfg.project, "PROJECT_NUMBER", namespace, ksa),
            f"{namespace}.{ksa}",  # a Kubernetes service account: NAMESPACE.NAME
            deps,
        )
        self.namespace = namespace
        self.ksa = ksa

    def _resolve(self, number: str) -> None:
        self.member = ksa_principal(self.cfg.project, number, self.namespace, self.ksa)
        self._desired["member"] = self.member

    def read(self, ctx: GcpContext, prior: ResourceState | None) -> dict[str, Any] | None:
        recorded = str((prior.attributes if prior else {}).get("member", ""))
        if (
            recorded.startswith("principal://iam.googleapis.com/projects/")
            and "PROJECT_NUMBER" not in recorded
        ):
            self.member = recorded
            self._desired["member"] = recorded
        else:
            try:
                self._resolve(ctx.project_number())
            except (PermissionDenied, NotFound, ApiDisabled):
                return None  # Resource Manager is not usable yet: the member is created later
        return super().read(ctx, prior)

    def create(self, ctx: GcpContext, change: Change) -> dict[str, Any]:
        if "PROJECT_NUMBER" in self.member:
            self._resolve(ctx.project_number())
        return super().create(ctx, change)
