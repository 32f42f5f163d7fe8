"""The rules a value must follow, in the words a user reads: GCP and Kubernetes naming rules, member,
region/zone, CIDR, label, image and path rules, and the ``{placeholder}`` templates.

Each check returns the value or raises :class:`Invalid` (a message, a hint, and for cross-field rules
the field it blames); the model (``model.py``) attaches them to fields as pydantic validators.

Example: ``check_bucket_name("goog-models")`` raises Invalid: must not start with "goog".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from .quantity import quantity_value

# --------------------------------------------------------------------------------------------------
# Problems: what validators raise, carrying a hint and (for cross-field rules) the field they blame.


class Invalid(ValueError):
    """One broken rule; ``field`` is relative to the model whose validator raised it."""

    def __init__(self, message: str, hint: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


class Problems(ValueError):
    """Several broken cross-field rules of one model, reported together."""

    def __init__(self, problems: list[Invalid]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def raise_all(problems: list[Invalid]) -> None:
    if problems:
        raise Problems(problems)


def quote(value: object) -> str:
    """A value as it would be written in TOML (strings double-quoted), for messages."""
    try:
        return toml_literal(value)
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
            return f"may contain only {self.charset_desc} (found {', '.join(map(quote, bad))})"
        if value[0] not in self.first:
            return f"must start with {self.first_desc}"
        if value[-1] not in self.last:
            return f"must end with {self.last_desc}"
        return None

    def __call__(self, value: str) -> str:
        problem = self.problem(value)
        if problem:
            raise Invalid(f"{self.kind} {quote(value)} {problem}", self.hint)
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
# Compute Engine resource names (networks, subnetworks): RFC 1035, 1-63 characters.
COMPUTE_NAME = _lowercase_name("Compute Engine name", 1, 63, 'use 1-63 characters like "default"')
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
        raise Invalid(f"project id {quote(value)} looks like a project number", PROJECT_ID.hint)
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
        raise Invalid(f"bucket name {quote(name)} {problem}", BUCKET_NAME.hint)
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
        raise Invalid(
            f"{quote(value)} is a zone, not a region (its region is {quote(zone.group(1))})",
            f'set region = "{zone.group(1)}" and put the zone under [cluster] zone',
        )
    if not REGION_RE.fullmatch(value):
        raise Invalid(
            f'{quote(value)} is not a region name like "us-central1"',
            "list them: gcloud compute regions list",
        )
    return value


def check_zone(value: str) -> str:
    if REGION_RE.fullmatch(value):
        raise Invalid(
            f"{quote(value)} is a region, not a zone: sdcluster creates a zonal cluster (a regional "
            "one would run nodes in three zones, tripling their cost)",
            f'pick a zone of that region, e.g. zone = "{value}-c" (gcloud compute zones list --filter=region:{value})',
        )
    if not ZONE_RE.fullmatch(value):
        raise Invalid(
            f'{quote(value)} is not a zone name like "us-central1-c"', "list them: gcloud compute zones list"
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
            raise Invalid(
                f"{quote(value)} has no member type prefix; write {quote('user:' + value)}", _MEMBER_HINT
            )
        raise Invalid(f'{quote(value)} is not an IAM member like "user:me@example.com"', _MEMBER_HINT)
    if kind not in MEMBER_KINDS:
        near = [k for k in MEMBER_KINDS if k.lower() == kind.lower()]
        did_you_mean = f"; did you mean {quote(near[0] + ':' + rest)}?" if near else ""
        raise Invalid(
            f"member type {quote(kind)} is not one of {', '.join(MEMBER_KINDS)}{did_you_mean}", _MEMBER_HINT
        )
    pattern, what = (_DOMAIN_RE, "a domain") if kind == "domain" else (_EMAIL_RE, "an email address")
    if not pattern.fullmatch(rest):
        raise Invalid(f"{quote(value)}: {quote(rest)} is not {what}", _MEMBER_HINT)
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
            raise Invalid(
                f"{quote(value)} is not a {kind} name like {quote(example)}", f"e.g. {quote(example)}"
            )
        return value

    return check


check_machine_type = _dashed_name("Compute Engine machine type", "n2-standard-4")
check_accelerator_type = _dashed_name("GPU accelerator type", "nvidia-tesla-t4")


# A memory request this small is a forgotten unit ("12" = 12 bytes): the container would be OOM-killed.
MIN_MEMORY_BYTES = 16 * 1024**2


def _quantity(kind: str, examples: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            amount = quantity_value(value)
        except ValueError:
            raise Invalid(
                f"{quote(value)} is not a Kubernetes quantity like {examples}",
                f"e.g. {kind} = {examples.split(',')[0]}",
            ) from None
        if amount <= 0:
            raise Invalid(
                f"{quote(value)} must be greater than zero", f"e.g. {kind} = {examples.split(',')[0]}"
            )
        if kind == "memory" and amount < MIN_MEMORY_BYTES:
            guess = f"; did you mean {quote(value + 'Gi')}?" if value.isdigit() else ""
            raise Invalid(f"{quote(value)} is only {amount} bytes{guess}", 'add a unit: "Mi", "Gi", "G"')
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
        raise Invalid(
            f"{quote(value)} is an address, not a CIDR range", f"for this address alone write {quote(single)}"
        )
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise Invalid(f'{quote(value)} is not a CIDR range like "203.0.113.0/24"', "") from None
        raise Invalid(f"{quote(value)} has host bits set", f"did you mean {quote(str(network))}?") from None
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
        raise Invalid(f"has {len(labels)} labels; at most {MAX_LABELS} are allowed", hint)
    for key, value in labels.items():
        for what, text, lo in (("key", key, 1), ("value", value, 0)):
            if not lo <= len(text) <= 63:
                raise Invalid(f"label {what} {quote(text)} must be {lo}-63 characters long", hint)
            bad = sorted({c for c in text if not _label_char(c)})
            if bad:
                raise Invalid(
                    f"label {what} {quote(text)} may contain only lowercase letters, digits, '_' and '-' "
                    f"(found {', '.join(map(quote, bad))})",
                    hint,
                )
        if not (key[0].isalpha() and not key[0].isupper()):
            raise Invalid(f"label key {quote(key)} must start with a lowercase letter", hint)
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
        raise Invalid(
            f'{quote(value)} is not a container image reference like "tensorflow/serving:2.11.0"',
            "repository paths are lowercase; tags follow ':' and digests '@sha256:'",
        )
    return value


_LOCATION_RE = re.compile(r"[A-Za-z]+[0-9]*(?:-[A-Za-z]+[0-9]+)?")


def check_bucket_location(value: str) -> str:
    if not _LOCATION_RE.fullmatch(value):
        raise Invalid(
            f'{quote(value)} is not a Cloud Storage location like "us-central1", "US" or "EU"',
            "leave it unset to use the region",
        )
    return value


def _split_gs(url: str) -> tuple[str, str]:
    bucket, _, obj = url.removeprefix("gs://").partition("/")
    return bucket, obj


def check_gs_object(url: str, what: str, example: str) -> str:
    """``gs://BUCKET/OBJECT`` with a valid bucket and a non-empty object name."""
    if not url.startswith("gs://"):
        raise Invalid(f"{what} {quote(url)} must start with gs://", f"e.g. {quote(example)}")
    bucket, obj = _split_gs(url)
    check_bucket_name(bucket)
    if not obj.strip("/"):
        raise Invalid(f"{what} {quote(url)} has no object path after the bucket", f"e.g. {quote(example)}")
    return url


def check_state_path(value: str) -> str:
    """A local file path, or ``gs://BUCKET/PREFIX/state.json``."""
    example = "gs://my-bucket/sdcluster/state.json"
    if "://" in value:
        check_gs_object(value, "state path", example)
    elif not value.strip() or "\0" in value:
        raise Invalid(f"state path {quote(value)} is not a file path", 'e.g. ".sdcluster/state.json"')
    if value.endswith("/"):
        raise Invalid(f"state path {quote(value)} names a directory, not a file", f"e.g. {quote(example)}")
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
ComputeName = Annotated[str, AfterValidator(COMPUTE_NAME)]
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
        raise Invalid(f"{quote(template)} is not a valid template ({e})", hint, field) from None
    out = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in values or spec or conversion:
            placeholder = (
                "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise Invalid(f"{quote(template)} has unknown placeholder {placeholder}", hint, field)
        out.append(values[name])
    return "".join(out)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_literal(value: Any) -> str:
    """A TOML literal for a config value (strings, integers, booleans, arrays, string tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are valid TOML, except that TOML also forbids a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [
            f"{k if _BARE_KEY.fullmatch(k) else toml_literal(k)} = {toml_literal(v)}"
            for k, v in value.items()
        ]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")
