"""The configuration models: one pydantic model per section of ``sdcluster.toml`` and ``Config``.

Frozen and strict (a TOML string never silently becomes a number); cross-field rules report every
problem at once. ``Config.load`` reads the sources (``sources.py``), ``Config.from_dict`` validates a
mapping and turns pydantic's errors into one ConfigError (``messages.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .names import ClusterKey, service_account_email
from .rules import (
    AcceleratorType,
    BucketLocation,
    Cidr,
    ComputeName,
    CpuQuantity,
    DnsLabel,
    GkeName,
    Image,
    Invalid,
    Labels,
    MachineType,
    Member,
    MemoryQuantity,
    ProjectId,
    Region,
    ServiceAccountId,
    StatePath,
    Zone,
    check_bucket_name,
    check_gs_object,
    quote,
    raise_all,
    substitute,
)

# --------------------------------------------------------------------------------------------------
# The models.


class _Section(BaseModel):
    # strict: a TOML string never silently becomes a number or a boolean; frozen: configs are values.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class IamConfig(_Section):
    """``[iam]``: the two service accounts sdcluster creates."""

    admin_account: ServiceAccountId = Field(
        default="gke-admin", description="service account that creates the cluster (you impersonate it)"
    )
    node_account: ServiceAccountId = Field(default="gke-node", description="service account the nodes run as")
    propagation_timeout_s: int = Field(
        default=420, gt=0, description="seconds to wait for new IAM bindings to take effect"
    )

    @model_validator(mode="after")
    def _distinct_accounts(self) -> Self:
        if self.admin_account == self.node_account:
            raise Invalid(
                "must differ from iam.admin_account", "the nodes must not hold admin rights", "node_account"
            )
        return self


class ClusterConfig(_Section):
    """``[cluster]``: the zonal GKE cluster and its autoscaled node pool."""

    name: GkeName = Field(default="sd-cluster", description="GKE cluster name")
    zone: Zone = Field(default="us-central1-c", description="zone of the (zonal) cluster; must be in region")
    node_pool: GkeName = Field(default="sd-node-pool", description="node pool name")
    machine_type: MachineType = Field(
        default="n2-standard-4", description="Compute Engine machine type of the nodes"
    )
    min_nodes: int = Field(
        default=0,
        ge=0,
        description="autoscaler minimum (0: a paused cluster has no serving node; the pods keep theirs)",
    )
    max_nodes: int = Field(default=2, ge=1, description="autoscaler maximum")
    initial_nodes: int = Field(default=1, ge=0, description="nodes created with the pool")
    spot: bool = Field(default=True, description="use Spot VMs (cheaper, may be reclaimed)")
    preemptible: bool = Field(
        default=False, description="use legacy preemptible VMs (not together with spot)"
    )
    disk_size_gb: int = Field(default=100, ge=10, le=65536, description="boot disk size per node, GB")
    disk_type: Literal["pd-standard", "pd-balanced", "pd-ssd"] = Field(
        default="pd-balanced", description="boot disk type: pd-standard, pd-balanced or pd-ssd"
    )
    accelerator_type: AcceleratorType | None = Field(
        default=None, description='GPU type, e.g. "nvidia-tesla-t4"'
    )
    accelerator_count: int = Field(
        default=0, ge=0, description="GPUs per node (>= 1 when accelerator_type is set)"
    )
    labels: Labels = Field(
        default_factory=dict, description="GCP labels of the cluster (kept in sync in place)"
    )
    system_pool: bool = Field(
        default=True,
        description="a 1-node pool for GKE's system pods, so the serving pool can scale to zero (pause)",
    )
    system_machine_type: MachineType = Field(
        default="e2-medium", description="machine type of the system pool's node"
    )
    network: ComputeName = Field(
        default="default", description="VPC network of the cluster (must exist in the project)"
    )
    subnetwork: ComputeName | None = Field(
        default=None, description="subnetwork in the region (default: the network's own, auto mode)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        if self.min_nodes > self.initial_nodes:
            problems.append(
                Invalid(f"{self.min_nodes} is above initial_nodes ({self.initial_nodes})", "", "min_nodes")
            )
        if self.initial_nodes > self.max_nodes:
            problems.append(
                Invalid(f"{self.initial_nodes} is above max_nodes ({self.max_nodes})", "", "initial_nodes")
            )
        if problems:
            problems[0].hint = "keep 0 <= min_nodes <= initial_nodes <= max_nodes"
        if self.spot and self.preemptible:
            problems.append(
                Invalid(
                    "cannot be true together with spot",
                    "set spot = false or preemptible = false",
                    "preemptible",
                )
            )
        if self.accelerator_type and self.accelerator_count < 1:
            problems.append(
                Invalid(
                    f"must be at least 1 when accelerator_type is {quote(self.accelerator_type)}",
                    "",
                    "accelerator_count",
                )
            )
        if not self.accelerator_type and self.accelerator_count:
            problems.append(
                Invalid(
                    "is set but accelerator_type is not",
                    'e.g. accelerator_type = "nvidia-tesla-t4"',
                    "accelerator_count",
                )
            )
        family = ACCELERATOR_FAMILIES.get(self.accelerator_type or "")
        if family and not self.machine_type.startswith(f"{family}-"):
            problems.append(
                Invalid(
                    f"{quote(self.accelerator_type)} needs an {family.upper()} machine type, not {quote(self.machine_type)}",
                    f'e.g. machine_type = "{ACCELERATOR_EXAMPLE_MACHINE[family]}"',
                    "accelerator_type",
                )
            )
        raise_all(problems)
        return self


# GPUs attach only to some machine families (GKE rejects other combinations at apply time).
ACCELERATOR_FAMILIES = {
    "nvidia-tesla-t4": "n1",
    "nvidia-tesla-v100": "n1",
    "nvidia-tesla-p4": "n1",
    "nvidia-tesla-p100": "n1",
    "nvidia-l4": "g2",
    "nvidia-tesla-a100": "a2",
    "nvidia-a100-80gb": "a2",
}
ACCELERATOR_EXAMPLE_MACHINE = {"n1": "n1-standard-8", "g2": "g2-standard-8", "a2": "a2-highgpu-1g"}


class BucketConfig(_Section):
    """``[bucket]``: the Cloud Storage bucket that holds the model and outlives the cluster."""

    enabled: bool = Field(default=True, description="create and manage the bucket")
    name: str = Field(default="{project}-bucket", description="bucket name; {project} is replaced")
    keep_on_destroy: bool = Field(default=True, description="keep the bucket (and the model) on destroy")
    location: BucketLocation | None = Field(default=None, description="bucket location (default: the region)")


class ServingConfig(_Section):
    """``[serving]``: TensorFlow Serving on the cluster."""

    # model_name becomes part of Kubernetes object names, hence DNS-1123 rather than TF Serving's rules.
    namespace: DnsLabel = Field(default="default", description="Kubernetes namespace")
    model_name: DnsLabel = Field(default="stable-diffusion", description="TF Serving model name")
    model_path: str = Field(
        default="gs://{bucket}/stable_diffusion_model",
        description="model base path; {bucket} and {project} are replaced",
    )
    model_dir: str = Field(
        default="",
        description=(
            "a local SavedModel directory apply publishes as a model version (relative: to the "
            "config file's directory; empty: upload-model does it)"
        ),
    )
    image: Image = Field(default="tensorflow/serving:2.11.0", description="TF Serving container image")
    replicas: int = Field(default=1, ge=1, description="Deployment replicas")
    cpu: CpuQuantity = Field(default="3", description="CPU request per replica (Kubernetes quantity)")
    memory: MemoryQuantity = Field(
        default="12Gi", description="memory request per replica (Kubernetes quantity)"
    )
    rest_api_timeout_ms: int = Field(default=240000, gt=0, description="TF Serving REST timeout, ms")
    batching: bool = Field(default=False, description="enable TF Serving request batching")
    rollout_timeout_s: float = Field(
        default=900, gt=0, description="how long apply waits for the Deployment rollout"
    )
    lb_timeout_s: float = Field(
        default=600, gt=0, description="how long apply waits for the load balancer address"
    )
    allowed_source_ranges: tuple[Cidr, ...] = Field(
        default=(), strict=False, description="CIDR ranges allowed to reach the load balancer (empty: anyone)"
    )
    autoscaling: bool = Field(default=False, description="add a HorizontalPodAutoscaler")
    idle_stop_minutes: int | None = Field(
        default=None,
        ge=1,
        description="pause the cluster from inside after N minutes without a predict request (off by default)",
    )
    max_replicas: int = Field(default=2, ge=1, description="autoscaler maximum (>= replicas)")
    target_cpu_utilization: int = Field(
        default=80, ge=1, le=100, description="autoscaler CPU target, percent"
    )

    @model_validator(mode="after")
    def _autoscaling_bounds(self) -> Self:
        if self.autoscaling and self.max_replicas < self.replicas:
            message = f"{self.max_replicas} is below replicas ({self.replicas})"
            raise Invalid(message, "raise max_replicas", "max_replicas")
        return self


class StateConfig(_Section):
    """``[state]``: where the state document lives."""

    path: StatePath = Field(
        default=".sdcluster/state.json", description="local path or gs://BUCKET/PREFIX/state.json"
    )


SECTIONS: dict[str, type[_Section]] = {
    "iam": IamConfig,
    "cluster": ClusterConfig,
    "bucket": BucketConfig,
    "serving": ServingConfig,
    "state": StateConfig,
}


class Config(_Section):
    """The whole configuration; see the module docstring for sources and precedence.

    Example::

        cfg = Config.build(project="demo-proj", user="user:me@example.com")
        cfg.admin_email   # 'gke-admin@demo-proj.iam.gserviceaccount.com'
    """

    project: ProjectId = Field(description="GCP project id")
    region: Region = Field(default="us-central1", description="GCP region")
    user: Member = Field(description="member allowed to impersonate the admin account")
    manage_apis: bool = Field(
        default=True, description="enable the required Google APIs (false: only check them)"
    )
    iam: IamConfig = Field(default_factory=IamConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    bucket: BucketConfig = Field(default_factory=BucketConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    # The directory a relative state.path written in the config file is relative to (set by
    # Config.load; None: the working directory). Not a setting: it takes no part in equality.
    _state_base: str | None = PrivateAttr(default=None)
    # Likewise for a relative serving.model_dir written in the config file (--set: the working directory).
    _model_base: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @property
    def state_location(self) -> str:
        """Where the state lives: ``state.path``, a relative one taken from the config file's
        directory (so ``sdcluster -c ../sdcluster.toml plan`` finds the same state)."""
        path = self.state.path
        if self._state_base is None or "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self._state_base, path))

    @property
    def model_directory(self) -> str:
        """``serving.model_dir``, a relative one written in the config file taken from the file's
        directory, one given by ``--set`` or the environment from the working directory ("": unset)."""
        path = self.serving.model_dir
        if not path or self._model_base is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self._model_base, path))

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        bucket = self._bucket_problem()
        # A broken bucket name would be reported twice: once more through the model path using it.
        uses_bucket = "{bucket}" in self.serving.model_path
        model_path = None if bucket and uses_bucket else self._model_path_problem()
        raise_all([p for p in (self._zone_problem(), bucket, model_path) if p])
        return self

    def _zone_problem(self) -> Invalid | None:
        zone_region = self.cluster.zone.rsplit("-", 1)[0]
        if zone_region == self.region:
            return None
        hint = f'set [cluster] zone = "{self.region}-c" (gcloud compute zones list --filter=region:{self.region}) or region = "{zone_region}"'
        given = "defaults to" if "zone" not in self.cluster.model_fields_set else "is"
        return Invalid(
            f"{given} {quote(self.cluster.zone)}, which is not in region {quote(self.region)}",
            hint,
            "cluster.zone",
        )

    def _bucket_problem(self) -> Invalid | None:
        # The name matters only if the bucket is managed or the model path points into it.
        if not (self.bucket.enabled or "{bucket}" in self.serving.model_path):
            return None
        return _problem_of(lambda: check_bucket_name(self.bucket_name), "bucket.name", self.bucket.name)

    def _model_path_problem(self) -> Invalid | None:
        example = "gs://my-bucket/stable_diffusion_model"
        return _problem_of(
            lambda: check_gs_object(self.model_path, "model path", example),
            "serving.model_path",
            self.serving.model_path,
        )

    # --- resolved values ------------------------------------------------------------------------

    @property
    def bucket_name(self) -> str:
        """``bucket.name`` with ``{project}`` filled in."""
        return substitute(self.bucket.name, {"project": self.project}, "bucket.name")

    @property
    def bucket_location(self) -> str:
        return self.bucket.location or self.region

    @property
    def model_path(self) -> str:
        """``serving.model_path`` with ``{project}``/``{bucket}`` filled in."""
        values = {"project": self.project, "bucket": self.bucket_name}
        return substitute(self.serving.model_path, values, "serving.model_path")

    @property
    def admin_email(self) -> str:
        return service_account_email(self.iam.admin_account, self.project)

    @property
    def node_email(self) -> str:
        return service_account_email(self.iam.node_account, self.project)

    @property
    def cluster_location(self) -> str:
        return self.cluster.zone

    @property
    def cluster_ref(self) -> ClusterKey:
        return ClusterKey(self.project, self.cluster_location, self.cluster.name)

    @property
    def cluster_key(self) -> str:
        return self.cluster_ref.path

    def summary(self) -> dict[str, Any]:
        """The resolved configuration as JSON-friendly data (for ``--json`` outputs).

        Example: ``cfg.summary()["bucket"]["name"]`` -> ``'demo-proj-bucket'``.
        """
        data = self.model_dump(mode="json")
        data["iam"].update(admin_email=self.admin_email, node_email=self.node_email)
        data["cluster"]["key"] = self.cluster_key
        data["bucket"].update(name=self.bucket_name, location=self.bucket_location)
        data["serving"]["model_path"] = self.model_path
        return data

    # --- constructors ----------------------------------------------------------------------------

    @classmethod
    def build(cls, **fields: Any) -> Config:
        """Validate keyword arguments (sections as dicts or models); raises ConfigError.

        Example: ``Config.build(project="demo-proj", user="user:me@example.com", cluster={"max_nodes": 4})``.
        """
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Config:
        """Validate a mapping shaped like the TOML file; ``source`` names it in messages."""
        from .messages import validate  # the messages module reads the models: imported on use

        return validate(data, source=source, origins={})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Config:
        """Read the file, apply ``SDCLUSTER_*`` variables, then ``overrides``; validate; raise ConfigError.

        ``path`` defaults to ``$SDCLUSTER_CONFIG`` or ``sdcluster.toml``; ``env`` to ``os.environ``.

        Example: ``Config.load(overrides={"cluster.zone": "us-central1-a"}, env={})``.
        """
        from .sources import load  # the sources module reads the models: imported on use

        return load(path, overrides, env)


def _problem_of(check: Callable[[], object], field: str, template: str) -> Invalid | None:
    """Run a rule on a resolved template value, blaming ``field`` and showing the template."""
    try:
        check()
    except Invalid as e:
        if not e.field and "{" in template:  # a rule broken by the resolved value, not the template itself
            e.message += f" (from template {quote(template)})"
        e.field = field
        return e
    return None
