"""The validated configuration model of sdcluster: ``sdcluster.toml`` + environment + overrides.

Sources, lowest precedence first (a later source wins key by key):

1. the TOML file (``sdcluster.toml`` in the working directory, or ``$SDCLUSTER_CONFIG``, or the
   ``path`` given); a missing file is fine only when ``project`` comes from a later source;
2. environment variables: ``SDCLUSTER_<FIELD>`` for top-level fields (``SDCLUSTER_PROJECT``,
   ``SDCLUSTER_REGION``, ``SDCLUSTER_USER``, ``SDCLUSTER_MANAGE_APIS``) and
   ``SDCLUSTER_<SECTION>__<FIELD>`` for the others (``SDCLUSTER_CLUSTER__ZONE``); ``SDCLUSTER_STATE``
   is an alias of ``SDCLUSTER_STATE__PATH``. Values are read by the field's type: strings verbatim;
   integers, and arrays/tables as TOML (``["10.0.0.0/8"]``; lists also as ``a,b``); booleans as
   true/false/1/0/yes/no/on/off. Empty values count as unset. ``SDCLUSTER_EMULATOR`` and
   ``SDCLUSTER_CONFIG`` belong to other parts of sdcluster and are not fields. Any other
   ``SDCLUSTER_<SECTION>__<NAME>`` that is not a field is an error, and so is a top-level name close
   to a field's (``SDCLUSTER_PROJCT``): typos are never ignored;
3. ``overrides``: dotted keys (``{"cluster.zone": "us-central1-a"}``), what CLI flags become; ``None``
   values are skipped so the CLI can pass every flag.

Every problem is reported at once, one per line, naming the file, the field path and the rule broken,
as :class:`sdcluster.errors.ConfigError` whose ``hint`` says how to fix it. Unknown keys are errors,
with a suggestion when one is close (``cluster.machine_tpye`` -> ``machine_type``).

Two fields are templates: ``bucket.name`` (``{project}``) and ``serving.model_path`` (``{project}``,
``{bucket}``). The model keeps them as written, so a rendered file round-trips; the resolved values
are properties (:attr:`Config.bucket_name`, :attr:`Config.model_path`).

Library callers (notebooks) use :meth:`Config.build`, which validates the same way and raises
``ConfigError``; ``Config(project=..., user=...)`` also works but raises pydantic's
``ValidationError``.

Example::

    cfg = Config.load("sdcluster.toml", overrides={"cluster.zone": "us-central1-a"})
    cfg.cluster_key   # 'projects/demo-proj/locations/us-central1-a/clusters/sd-cluster'
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import string
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sdcluster.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "BucketConfig",
    "ClusterConfig",
    "Config",
    "IamConfig",
    "ServingConfig",
    "StateConfig",
    "normalize_member",
    "quantity_value",
    "render_toml",
    "write_init",
]

DEFAULT_CONFIG_FILE = "sdcluster.toml"
ENV_PREFIX = "SDCLUSTER_"
ENV_CONFIG = "SDCLUSTER_CONFIG"
# Names in the SDCLUSTER_ namespace owned by other parts of sdcluster (clients.py, the CLI).
NON_CONFIG_ENV = frozenset({"EMULATOR", "CONFIG"})
ENV_ALIASES = {"STATE": "state.path"}
INIT_HINT = "create one: sdcluster init --project P --user EMAIL"


# --------------------------------------------------------------------------------------------------
# Problems: what validators raise, carrying a hint and (for cross-field rules) the field they blame.


class _Invalid(ValueError):
    """One broken rule; ``field`` is relative to the model whose validator raised it."""

    def __init__(self, message: str, hint: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


class _Problems(ValueError):
    """Several broken cross-field rules of one model, reported together."""

    def __init__(self, problems: list[_Invalid]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def _raise_all(problems: list[_Invalid]) -> None:
    if problems:
        raise _Problems(problems)


def _q(value: object) -> str:
    """A value as it would be written in TOML (strings double-quoted), for messages."""
    try:
        return _toml(value)
    except TypeError:  # not a config value type (None, a date from TOML, ...)
        return repr(value)


# --------------------------------------------------------------------------------------------------
# Naming rules of GCP and Kubernetes, each checked in the order that gives the most useful message.

LOWER = string.ascii_lowercase
DIGITS = string.digits


@dataclass(frozen=True)
class _NameRule:
    """A length + charset + first/last character rule, as GCP documents its resource names.

    Example: ``PROJECT_ID.problem("My-Proj")`` -> ``'may contain only lowercase letters, ...'``.
    """

    kind: str
    min_len: int
    max_len: int
    charset: str
    charset_desc: str
    first: str
    first_desc: str
    last: str
    last_desc: str
    hint: str

    def problem(self, value: str) -> str | None:
        if not self.min_len <= len(value) <= self.max_len:
            return f"must be {self.min_len}-{self.max_len} characters long (it has {len(value)})"
        bad = sorted({c for c in value if c not in self.charset})
        if bad:
            return f"may contain only {self.charset_desc} (found {', '.join(map(_q, bad))})"
        if value[0] not in self.first:
            return f"must start with {self.first_desc}"
        if value[-1] not in self.last:
            return f"must end with {self.last_desc}"
        return None

    def __call__(self, value: str) -> str:
        problem = self.problem(value)
        if problem:
            raise _Invalid(f"{self.kind} {_q(value)} {problem}", self.hint)
        return value


def _lowercase_name(kind: str, lo: int, hi: int, hint: str, *, first: str = LOWER) -> _NameRule:
    return _NameRule(
        kind=kind,
        min_len=lo,
        max_len=hi,
        charset=LOWER + DIGITS + "-",
        charset_desc="lowercase letters, digits and hyphens",
        first=first,
        first_desc="a lowercase letter" if first == LOWER else "a lowercase letter or digit",
        last=LOWER + DIGITS,
        last_desc="a lowercase letter or digit",
        hint=hint,
    )


PROJECT_ID = _lowercase_name(
    "project id",
    6,
    30,
    "use the project ID (e.g. my-project-123), not its name or number: gcloud projects list",
)
SERVICE_ACCOUNT_ID = _lowercase_name(
    "service account id", 6, 30, 'use 6-30 characters like "gke-admin" (the part before @ of the email)'
)
GKE_NAME = _lowercase_name("GKE name", 1, 40, 'use 1-40 characters like "sd-cluster"')
DNS_LABEL = _lowercase_name(
    "DNS-1123 label", 1, 63, 'use 1-63 characters like "stable-diffusion"', first=LOWER + DIGITS
)
BUCKET_NAME = _NameRule(
    kind="bucket name",
    min_len=3,
    max_len=63,
    charset=LOWER + DIGITS + "-_.",
    charset_desc="lowercase letters, digits, hyphens, underscores and dots",
    first=LOWER + DIGITS,
    first_desc="a lowercase letter or digit",
    last=LOWER + DIGITS,
    last_desc="a lowercase letter or digit",
    hint="see Cloud Storage bucket naming rules; e.g. my-project-bucket",
)
# Names with dots may be up to 222 characters, each dot-separated part at most 63.
DOTTED_BUCKET_NAME = dataclasses.replace(BUCKET_NAME, max_len=222)


def check_project_id(value: str) -> str:
    if value.isdigit():
        raise _Invalid(f"project id {_q(value)} looks like a project number", PROJECT_ID.hint)
    return PROJECT_ID(value)


def check_bucket_name(name: str) -> str:
    """Cloud Storage bucket naming rules; the message names the rule broken.

    Example: ``check_bucket_name("goog-models")`` raises: must not start with "goog".
    """
    (DOTTED_BUCKET_NAME if "." in name else BUCKET_NAME)(name)
    problem = None
    if "." in name and any(len(part) > 63 for part in name.split(".")):
        problem = "has a dot-separated part longer than 63 characters"
    elif _is_ip_address(name):
        problem = "must not be an IP address"
    elif name.startswith("goog"):
        problem = 'must not start with "goog"'
    elif re.search(r"g[o0][o0]gle", name):
        problem = 'must not contain "google" (or a close misspelling)'
    if problem:
        raise _Invalid(f"bucket name {_q(name)} {problem}", BUCKET_NAME.hint)
    return name


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_REGION = r"[a-z]+(?:-[a-z]+)+[0-9]+"
REGION_RE = re.compile(_REGION)
ZONE_RE = re.compile(rf"({_REGION})-[a-z]")


def check_region(value: str) -> str:
    zone = ZONE_RE.fullmatch(value)
    if zone:
        raise _Invalid(
            f"{_q(value)} is a zone, not a region (its region is {_q(zone.group(1))})",
            f'set region = "{zone.group(1)}" and put the zone under [cluster] zone',
        )
    if not REGION_RE.fullmatch(value):
        raise _Invalid(
            f'{_q(value)} is not a region name like "us-central1"', "list them: gcloud compute regions list"
        )
    return value


def check_zone(value: str) -> str:
    if REGION_RE.fullmatch(value):
        raise _Invalid(
            f"{_q(value)} is a region, not a zone: sdcluster creates a zonal cluster (a regional "
            "one would run nodes in three zones, tripling their cost)",
            f'pick a zone of that region, e.g. zone = "{value}-c" (gcloud compute zones list --filter=region:{value})',
        )
    if not ZONE_RE.fullmatch(value):
        raise _Invalid(
            f'{_q(value)} is not a zone name like "us-central1-c"', "list them: gcloud compute zones list"
        )
    return value


MEMBER_KINDS = ("user", "group", "serviceAccount", "domain")
_EMAIL_RE = re.compile(r"[^@\s:]+@[^@\s:]+\.[^@\s:]+")
_DOMAIN_RE = re.compile(r"(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.IGNORECASE)
_MEMBER_HINT = 'write the member with its type, e.g. user = "user:me@example.com"'


def check_member(value: str) -> str:
    """An IAM member that may impersonate gke-admin: ``user:``, ``group:``, ``serviceAccount:`` or ``domain:``.

    Example: ``check_member("me@example.com")`` raises: has no member type prefix; write "user:me@example.com".
    """
    kind, sep, rest = value.partition(":")
    if not sep:
        if _EMAIL_RE.fullmatch(value):
            raise _Invalid(
                f"{_q(value)} has no member type prefix; write {_q('user:' + value)}", _MEMBER_HINT
            )
        raise _Invalid(f'{_q(value)} is not an IAM member like "user:me@example.com"', _MEMBER_HINT)
    if kind not in MEMBER_KINDS:
        near = [k for k in MEMBER_KINDS if k.lower() == kind.lower()]
        did_you_mean = f"; did you mean {_q(near[0] + ':' + rest)}?" if near else ""
        raise _Invalid(
            f"member type {_q(kind)} is not one of {', '.join(MEMBER_KINDS)}{did_you_mean}", _MEMBER_HINT
        )
    pattern, what = (_DOMAIN_RE, "a domain") if kind == "domain" else (_EMAIL_RE, "an email address")
    if not pattern.fullmatch(rest):
        raise _Invalid(f"{_q(value)}: {_q(rest)} is not {what}", _MEMBER_HINT)
    return value


def normalize_member(value: str) -> str:
    """What ``sdcluster init`` accepts for ``--user``: a bare email becomes ``user:EMAIL``.

    Example: ``normalize_member("me@example.com")`` -> ``'user:me@example.com'``.
    """
    value = value.strip()
    return f"user:{value}" if ":" not in value and _EMAIL_RE.fullmatch(value) else value


_DASHED_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+")


def _dashed_name(kind: str, example: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not _DASHED_NAME_RE.fullmatch(value):
            raise _Invalid(f"{_q(value)} is not a {kind} name like {_q(example)}", f"e.g. {_q(example)}")
        return value

    return check


check_machine_type = _dashed_name("Compute Engine machine type", "n2-standard-4")
check_accelerator_type = _dashed_name("GPU accelerator type", "nvidia-tesla-t4")

# The Kubernetes resource.Quantity grammar (apimachinery/pkg/api/resource/quantity.go):
# <signedNumber><suffix>, suffix = binarySI | decimalExponent | decimalSI.
QUANTITY_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[eE][+-]?[0-9]+|[mkMGTPE]?)")
_SUFFIX_SCALE = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def quantity_value(quantity: str) -> Decimal:
    """The numeric value of a Kubernetes quantity (ValueError if it is not one).

    Example: ``quantity_value("512Mi")`` -> ``Decimal('536870912')``; ``quantity_value("500m")`` -> ``0.5``.
    """
    match = QUANTITY_RE.fullmatch(quantity)
    if not match:
        raise ValueError(f"{_q(quantity)} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _SUFFIX_SCALE[suffix]
    except (ArithmeticError, ValueError) as e:  # decimal overflow; int() of a 5000-digit exponent
        raise ValueError(f"{_q(quantity)} is out of range") from e


# A memory request this small is a forgotten unit ("12" = 12 bytes): the container would be OOM-killed.
MIN_MEMORY_BYTES = 16 * 1024**2


def _quantity(kind: str, examples: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            amount = quantity_value(value)
        except ValueError:
            raise _Invalid(
                f"{_q(value)} is not a Kubernetes quantity like {examples}",
                f"e.g. {kind} = {examples.split(',')[0]}",
            ) from None
        if amount <= 0:
            raise _Invalid(
                f"{_q(value)} must be greater than zero", f"e.g. {kind} = {examples.split(',')[0]}"
            )
        if kind == "memory" and amount < MIN_MEMORY_BYTES:
            guess = f"; did you mean {_q(value + 'Gi')}?" if value.isdigit() else ""
            raise _Invalid(f"{_q(value)} is only {amount} bytes{guess}", 'add a unit: "Mi", "Gi", "G"')
        return value

    return check


def _number_as_text(value: Any) -> Any:
    """TOML users write ``cpu = 3``; Kubernetes quantities are strings, so accept numbers as text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def check_cidr(value: str) -> str:
    """A CIDR range with no host bits set, as Kubernetes ``loadBalancerSourceRanges`` requires.

    Example: ``check_cidr("10.0.0.1/8")`` raises: has host bits set; did you mean "10.0.0.0/8"?
    """
    if "/" not in value and _is_ip_address(value):
        single = f"{value}/{128 if ':' in value else 32}"
        raise _Invalid(
            f"{_q(value)} is an address, not a CIDR range", f"for this address alone write {_q(single)}"
        )
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise _Invalid(f'{_q(value)} is not a CIDR range like "203.0.113.0/24"', "") from None
        raise _Invalid(f"{_q(value)} has host bits set", f"did you mean {_q(str(network))}?") from None
    return value


MAX_LABELS = 64


def _label_char(c: str) -> bool:
    # GCP allows international lowercase letters; caseless scripts have no uppercase, so "not upper".
    return c in "_-" or (c.isalnum() and not c.isupper())


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """GCP label rules: at most 64; keys 1-63 chars starting with a lowercase letter; values 0-63 chars;
    both only lowercase letters, digits, ``_`` and ``-``.

    Example: ``check_labels({"1team": "ml"})`` raises: label key "1team" must start with a lowercase letter.
    """
    hint = 'labels look like {team = "ml", env = "dev"}'
    if len(labels) > MAX_LABELS:
        raise _Invalid(f"has {len(labels)} labels; at most {MAX_LABELS} are allowed", hint)
    for key, value in labels.items():
        for what, text, lo in (("key", key, 1), ("value", value, 0)):
            if not lo <= len(text) <= 63:
                raise _Invalid(f"label {what} {_q(text)} must be {lo}-63 characters long", hint)
            bad = sorted({c for c in text if not _label_char(c)})
            if bad:
                raise _Invalid(
                    f"label {what} {_q(text)} may contain only lowercase letters, digits, '_' and '-' "
                    f"(found {', '.join(map(_q, bad))})",
                    hint,
                )
        if not (key[0].isalpha() and not key[0].isupper()):
            raise _Invalid(f"label key {_q(key)} must start with a lowercase letter", hint)
    return labels


# The image reference grammar of distribution/reference (what docker and the kubelet parse).
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# Like docker, a first component is a registry host only if it has a dot or a port or is localhost;
# otherwise it is a (lowercase) repository path, so "Tensorflow/serving" is rejected, not sent to a host.
_HOST = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})+(?::[0-9]+)?|{_HOST_PART}:[0-9]+|localhost(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = re.compile(rf"(?:{_HOST}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?")


def check_image(value: str) -> str:
    if not IMAGE_RE.fullmatch(value) or len(value) > 512:
        raise _Invalid(
            f'{_q(value)} is not a container image reference like "tensorflow/serving:2.11.0"',
            "repository paths are lowercase; tags follow ':' and digests '@sha256:'",
        )
    return value


_LOCATION_RE = re.compile(r"[A-Za-z]+[0-9]*(?:-[A-Za-z]+[0-9]+)?")


def check_bucket_location(value: str) -> str:
    if not _LOCATION_RE.fullmatch(value):
        raise _Invalid(
            f'{_q(value)} is not a Cloud Storage location like "us-central1", "US" or "EU"',
            "leave it unset to use the region",
        )
    return value


def _split_gs(url: str) -> tuple[str, str]:
    bucket, _, obj = url.removeprefix("gs://").partition("/")
    return bucket, obj


def check_gs_object(url: str, what: str, example: str) -> str:
    """``gs://BUCKET/OBJECT`` with a valid bucket and a non-empty object name."""
    if not url.startswith("gs://"):
        raise _Invalid(f"{what} {_q(url)} must start with gs://", f"e.g. {_q(example)}")
    bucket, obj = _split_gs(url)
    check_bucket_name(bucket)
    if not obj.strip("/"):
        raise _Invalid(f"{what} {_q(url)} has no object path after the bucket", f"e.g. {_q(example)}")
    return url


def check_state_path(value: str) -> str:
    """A local file path, or ``gs://BUCKET/PREFIX/state.json``."""
    example = "gs://my-bucket/sdcluster/state.json"
    if "://" in value:
        check_gs_object(value, "state path", example)
    elif not value.strip() or "\0" in value:
        raise _Invalid(f"state path {_q(value)} is not a file path", 'e.g. ".sdcluster/state.json"')
    if value.endswith("/"):
        raise _Invalid(f"state path {_q(value)} names a directory, not a file", f"e.g. {_q(example)}")
    return value


def _text(value: Any) -> Any:
    """Accept ``Path`` objects where a path string is expected (library callers)."""
    return str(value) if isinstance(value, os.PathLike) else value


ProjectId = Annotated[str, AfterValidator(check_project_id)]
Member = Annotated[str, AfterValidator(check_member)]
Region = Annotated[str, AfterValidator(check_region)]
Zone = Annotated[str, AfterValidator(check_zone)]
ServiceAccountId = Annotated[str, AfterValidator(SERVICE_ACCOUNT_ID)]
GkeName = Annotated[str, AfterValidator(GKE_NAME)]
DnsLabel = Annotated[str, AfterValidator(DNS_LABEL)]
MachineType = Annotated[str, AfterValidator(check_machine_type)]
AcceleratorType = Annotated[str, AfterValidator(check_accelerator_type)]
Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
BucketLocation = Annotated[str, AfterValidator(check_bucket_location)]
Image = Annotated[str, AfterValidator(check_image)]
Cidr = Annotated[str, AfterValidator(check_cidr)]
CpuQuantity = Annotated[
    str, BeforeValidator(_number_as_text), AfterValidator(_quantity("cpu", '"3", "500m", "2.5"'))
]
MemoryQuantity = Annotated[
    str, BeforeValidator(_number_as_text), AfterValidator(_quantity("memory", '"12Gi", "512Mi", "1G", "1e9"'))
]
StatePath = Annotated[str, BeforeValidator(_text), AfterValidator(check_state_path)]


# --------------------------------------------------------------------------------------------------
# Templates: bucket.name may use {project}; serving.model_path {project} and {bucket}.


def substitute(template: str, values: Mapping[str, str], field: str) -> str:
    """Fill ``{name}`` placeholders; unknown names, format specs and stray braces are errors.

    Example: ``substitute("{project}-bucket", {"project": "p1"}, "bucket.name")`` -> ``'p1-bucket'``.
    """
    allowed = ", ".join("{" + name + "}" for name in values)
    hint = f"{field} may use {allowed}"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise _Invalid(f"{_q(template)} is not a valid template ({e})", hint, field) from None
    out = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in values or spec or conversion:
            placeholder = (
                "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise _Invalid(f"{_q(template)} has unknown placeholder {placeholder}", hint, field)
        out.append(values[name])
    return "".join(out)


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
            raise _Invalid(
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
    min_nodes: int = Field(default=1, ge=0, description="autoscaler minimum")
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
        default_factory=dict, description="GCP labels put on the cluster when it is created"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        if self.min_nodes > self.initial_nodes:
            problems.append(
                _Invalid(f"{self.min_nodes} is above initial_nodes ({self.initial_nodes})", "", "min_nodes")
            )
        if self.initial_nodes > self.max_nodes:
            problems.append(
                _Invalid(f"{self.initial_nodes} is above max_nodes ({self.max_nodes})", "", "initial_nodes")
            )
        if problems:
            problems[0].hint = "keep 0 <= min_nodes <= initial_nodes <= max_nodes"
        if self.spot and self.preemptible:
            problems.append(
                _Invalid(
                    "cannot be true together with spot",
                    "set spot = false or preemptible = false",
                    "preemptible",
                )
            )
        if self.accelerator_type and self.accelerator_count < 1:
            problems.append(
                _Invalid(
                    f"must be at least 1 when accelerator_type is {_q(self.accelerator_type)}",
                    "",
                    "accelerator_count",
                )
            )
        if not self.accelerator_type and self.accelerator_count:
            problems.append(
                _Invalid(
                    "is set but accelerator_type is not",
                    'e.g. accelerator_type = "nvidia-tesla-t4"',
                    "accelerator_count",
                )
            )
        family = ACCELERATOR_FAMILIES.get(self.accelerator_type or "")
        if family and not self.machine_type.startswith(f"{family}-"):
            problems.append(
                _Invalid(
                    f"{_q(self.accelerator_type)} needs an {family.upper()} machine type, not {_q(self.machine_type)}",
                    f'e.g. machine_type = "{ACCELERATOR_EXAMPLE_MACHINE[family]}"',
                    "accelerator_type",
                )
            )
        _raise_all(problems)
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
    max_replicas: int = Field(default=2, ge=1, description="autoscaler maximum (>= replicas)")
    target_cpu_utilization: int = Field(
        default=80, ge=1, le=100, description="autoscaler CPU target, percent"
    )

    @model_validator(mode="after")
    def _autoscaling_bounds(self) -> Self:
        if self.autoscaling and self.max_replicas < self.replicas:
            message = f"{self.max_replicas} is below replicas ({self.replicas})"
            raise _Invalid(message, "raise max_replicas", "max_replicas")
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

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        bucket = self._bucket_problem()
        # A broken bucket name would be reported twice: once more through the model path using it.
        uses_bucket = "{bucket}" in self.serving.model_path
        model_path = None if bucket and uses_bucket else self._model_path_problem()
        _raise_all([p for p in (self._zone_problem(), bucket, model_path) if p])
        return self

    def _zone_problem(self) -> _Invalid | None:
        zone_region = self.cluster.zone.rsplit("-", 1)[0]
        if zone_region == self.region:
            return None
        hint = f'set [cluster] zone = "{self.region}-c" (gcloud compute zones list --filter=region:{self.region}) or region = "{zone_region}"'
        given = "defaults to" if "zone" not in self.cluster.model_fields_set else "is"
        return _Invalid(
            f"{given} {_q(self.cluster.zone)}, which is not in region {_q(self.region)}", hint, "cluster.zone"
        )

    def _bucket_problem(self) -> _Invalid | None:
        # The name matters only if the bucket is managed or the model path points into it.
        if not (self.bucket.enabled or "{bucket}" in self.serving.model_path):
            return None
        return _problem_of(lambda: check_bucket_name(self.bucket_name), "bucket.name", self.bucket.name)

    def _model_path_problem(self) -> _Invalid | None:
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
        return f"{self.iam.admin_account}@{self.project}.iam.gserviceaccount.com"

    @property
    def node_email(self) -> str:
        return f"{self.iam.node_account}@{self.project}.iam.gserviceaccount.com"

    @property
    def cluster_location(self) -> str:
        return self.cluster.zone

    @property
    def cluster_key(self) -> str:
        return f"projects/{self.project}/locations/{self.cluster_location}/clusters/{self.cluster.name}"

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
        return _validate(data, source=source, origins={})

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
        env = os.environ if env is None else env
        file = Path(path if path is not None else env.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE).expanduser()
        data = _read_toml(file) if file.exists() else {}
        origins: dict[str, str] = {}
        for key, value, var in _env_values(env):
            _set_dotted(data, key, value)
            origins[key] = var
        for key, value in _flatten(overrides or {}):
            _set_dotted(data, key, value)
            origins[key] = "overrides"
        if not file.exists() and "project" not in data:
            raise ConfigError(f"{file}: config file not found and no project given", hint=INIT_HINT)
        return _validate(data, source=str(file) if file.exists() else None, origins=origins)


def _problem_of(check: Callable[[], object], field: str, template: str) -> _Invalid | None:
    """Run a rule on a resolved template value, blaming ``field`` and showing the template."""
    try:
        check()
    except _Invalid as e:
        if not e.field and "{" in template:  # a rule broken by the resolved value, not the template itself
            e.message += f" (from template {_q(template)})"
        e.field = field
        return e
    return None


# --------------------------------------------------------------------------------------------------
# Loading: TOML, environment, overrides; translating pydantic errors into one ConfigError.


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}", hint="fix the syntax at that line") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: cannot read the config file: {e}", hint="check the path") from e


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``{"cluster": {"zone": z}, "cluster.name": n}`` -> ``("cluster.zone", z), ("cluster.name", n)``."""
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted in SECTIONS:
            yield from _flatten(value, dotted + ".")
        elif value is not None:
            yield dotted, value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _env_names() -> dict[str, str]:
    """Every configuration variable name (without prefix) -> its dotted field path."""
    names = {name.upper(): name for name in Config.model_fields if name not in SECTIONS}
    for section, model in SECTIONS.items():
        names.update({f"{section}__{name}".upper(): f"{section}.{name}" for name in model.model_fields})
    return names


def _env_values(env: Mapping[str, str]) -> Iterable[tuple[str, Any, str]]:
    """``(dotted key, typed value, variable name)`` for each configuration variable that is set."""
    names = _env_names()
    for var in sorted(env):
        name = var[len(ENV_PREFIX) :] if var.startswith(ENV_PREFIX) else None
        if not name or name in NON_CONFIG_ENV or not env[var]:
            continue
        dotted = ENV_ALIASES.get(name) or names.get(name)
        if dotted is None:
            _reject_unknown_env(var, name, names)
            continue
        yield dotted, _coerce_env(env[var], _annotation(dotted)), var


def _reject_unknown_env(var: str, name: str, names: Mapping[str, str]) -> None:
    # SDCLUSTER_<SECTION>__<FIELD> is unmistakably meant as configuration; other names may belong to
    # other tools, so they are errors only when they look like a misspelt field.
    close = difflib.get_close_matches(name, list(names) + list(ENV_ALIASES), n=1, cutoff=0.8)
    if "__" in name or close:
        suggestion = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        raise ConfigError(
            f"environment: {var} is not a configuration variable{suggestion}",
            hint=f"unset it or fix its name; fields are {ENV_PREFIX}<FIELD> and {ENV_PREFIX}<SECTION>__<FIELD>",
        )


def _annotation(dotted: str) -> Any:
    section, _, name = dotted.rpartition(".")
    model: type[BaseModel] = SECTIONS[section] if section else Config
    return model.model_fields[name].annotation


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce_env(raw: str, annotation: Any) -> Any:
    """Read an environment string as the field's type; leave it as text when it does not parse (the
    model then reports the type error, naming the variable)."""
    base = _unwrap(annotation)
    if base is bool:
        lowered = raw.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else raw
    if base is int:
        return _toml_value(raw)
    if get_origin(base) in (tuple, list):
        return (
            _toml_value(raw)
            if raw.lstrip().startswith("[")
            else [s.strip() for s in raw.split(",") if s.strip()]
        )
    if get_origin(base) is dict:
        return _toml_value(raw)
    return raw


def _unwrap(annotation: Any) -> Any:
    """``Annotated[str, ...] | None`` -> ``str``."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _validate(data: Mapping[str, Any], *, source: str | None, origins: Mapping[str, str]) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source or 'configuration'}: expected a table of settings, got {_toml_type(data)}"
        )
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        problems = [line for error in e.errors() for line in _explain(error)]
        raise _config_error(problems, source, origins) from None


@dataclass
class _Line:
    path: tuple[str | int, ...]
    message: str
    hint: str = ""


def _explain(error: Mapping[str, Any]) -> list[_Line]:
    """One pydantic error -> the problem lines a user reads."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _Problems):
        return [_Line(loc + tuple(p.field.split(".")), p.message, p.hint) for p in cause.problems]
    if isinstance(cause, _Invalid):
        return [
            _Line(loc + (tuple(cause.field.split(".")) if cause.field else ()), cause.message, cause.hint)
        ]
    if error["type"] == "extra_forbidden":
        return [_unknown_key(loc)]
    return [_Line(loc, _builtin_message(error), _builtin_hint(loc, error))]


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        if not (isinstance(part, str) and part in SECTIONS and model is Config):
            return None
        model = SECTIONS[part]
    return model


def _unknown_key(loc: tuple[str | int, ...]) -> _Line:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    fields = list(model.model_fields) if model else []
    where = f"in [{'.'.join(map(str, loc[:-1]))}]" if loc[:-1] else "at the top level"
    message = f"unknown key {_q(key)} {where}"
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return _Line(loc, f"{message}; did you mean {_q(close[0])}?", f"rename it to {close[0]}")
    # A field of another section written in the wrong place ("zone" at the top level).
    homes = [
        s for s, m in SECTIONS.items() if key in m.model_fields and s != (loc[0] if len(loc) > 1 else None)
    ]
    if homes:
        return _Line(loc, f"{message}; it belongs under [{homes[0]}]", f"move it under [{homes[0]}]")
    return _Line(loc, message, f"remove it; valid keys {where}: {', '.join(fields)}")


_TYPE_WORDS = {
    "int": "an integer",
    "bool": "true or false",
    "string": "a string",
    "dict": "a table",
    "model": "a table",
    "tuple": "an array",
    "list": "an array",
    "float": "a number",
}


def _builtin_message(error: Mapping[str, Any]) -> str:
    kind, ctx, value = str(error["type"]), error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "is required"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit} (got {_q(value)})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {_q(value)})"
    family = kind.split("_")[0]
    if family in _TYPE_WORDS and kind.endswith(("_type", "_parsing", "_instance_of")):
        return f"must be {_TYPE_WORDS[family]}, not {_toml_type(value)} {_short(value)}".rstrip()
    msg = str(error.get("msg", kind))
    return msg[:1].lower() + msg[1:]


def _builtin_hint(loc: tuple[str | int, ...], error: Mapping[str, Any]) -> str:
    if error["type"] == "missing" and loc in (("project",), ("user",)):
        return INIT_HINT
    return ""


def _toml_type(value: object) -> str:
    for typ, word in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string")):
        if isinstance(value, typ):
            return word
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def _short(value: object) -> str:
    if isinstance(value, Mapping | list | tuple):
        return ""
    text = _q(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _origin(path: tuple[str | int, ...], origins: Mapping[str, str]) -> str:
    """Where a value came from when not from the file: an environment variable or "overrides"."""
    keys = [str(p) for p in path if isinstance(p, str)]
    for n in range(len(keys), 0, -1):
        origin = origins.get(".".join(keys[:n]))
        if origin:
            return origin
    return ""


def _config_error(lines: list[_Line], source: str | None, origins: Mapping[str, str]) -> ConfigError:
    """One problem: ``FILE: path: message`` + its hint. Several: a header, then one line each with its
    own fix after ``; `` (a single joined hint would not say which fix goes with which line)."""
    where = f" in {source}" if source else ""
    texts, fallback = [], f"fix it{where}"
    for line in lines:
        origin = _origin(line.path, origins)
        texts.append(f"{_format_path(line.path)}{f' (from {origin})' if origin else ''}: {line.message}")
        fallback = f"fix {origin}" if origin else fallback
    if len(texts) == 1:
        return ConfigError(f"{source or 'invalid configuration'}: {texts[0]}", hint=lines[0].hint or fallback)
    head = f"{source}: {len(texts)} problems" if source else f"invalid configuration ({len(texts)} problems)"
    texts = [f"{text}; {line.hint}" if line.hint else text for text, line in zip(texts, lines, strict=True)]
    return ConfigError("\n  ".join([head + ":", *texts]), hint=f"fix the {len(texts)} problems above")


# --------------------------------------------------------------------------------------------------
# Rendering sdcluster.toml.

# Shown (commented) for fields whose default is "unset".
_EXAMPLES: dict[str, Any] = {"cluster.accelerator_type": "nvidia-tesla-t4", "cluster.labels": {"team": "ml"}}


def render_toml(cfg_or_fields: Config | Mapping[str, Any]) -> str:
    """A commented ``sdcluster.toml``: values that differ from the defaults are set, the defaults are
    shown commented out. ``Config.load`` reads it back to an equal Config.

    Example: ``render_toml({"project": "demo-proj", "user": "user:me@example.com"})``.
    """
    cfg = cfg_or_fields if isinstance(cfg_or_fields, Config) else Config.from_dict(cfg_or_fields)
    lines = [
        "# sdcluster configuration. Commented lines show defaults; uncomment a line to change it.",
        "# Precedence: this file < SDCLUSTER_* environment variables < command-line flags.",
        "",
    ]
    examples = {**_EXAMPLES, "bucket.location": cfg.region}
    lines += _render_fields(cfg, Config, "", examples)
    for section, model in SECTIONS.items():
        lines += ["", f"[{section}]", *_render_fields(getattr(cfg, section), model, section + ".", examples)]
    return "\n".join(lines) + "\n"


def _render_fields(
    values: BaseModel, model: type[BaseModel], prefix: str, examples: Mapping[str, Any]
) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if name in SECTIONS and model is Config:
            continue
        value = getattr(values, name)
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {field.description}")
        if value != default or field.is_required():
            lines.append(f"{name} = {_toml(value)}")
        else:
            lines.append(f"# {name} = {_toml(examples.get(prefix + name, default))}")
    return lines


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml(value: Any) -> str:
    """A TOML literal for a config value (strings, integers, booleans, arrays, string tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are valid TOML, except that TOML also forbids a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{k if _BARE_KEY.fullmatch(k) else _toml(k)} = {_toml(v)}" for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def write_init(path: str | os.PathLike[str], *, force: bool, **fields: Any) -> Path:
    """Write a new ``sdcluster.toml`` for ``sdcluster init``; refuses to overwrite without ``force``.

    ``fields`` are top-level values, sections as dicts, or dotted keys (``**{"cluster.zone": z}``);
    ``None`` values are skipped and a bare email ``user`` becomes ``user:EMAIL``.

    Example: ``write_init("sdcluster.toml", force=False, project="demo-proj", user="me@example.com")``.
    """
    target = Path(path)
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists", hint="pass --force to overwrite it")
    data: dict[str, Any] = {}
    for key, value in _flatten(fields):
        _set_dotted(data, key, value)
    if isinstance(data.get("user"), str):
        data["user"] = normalize_member(data["user"])
    text = render_toml(data)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)  # atomic: a crash never leaves a half-written config
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"{target}: cannot write the config file: {e}", hint="check the path and permissions"
        ) from e
    return target
