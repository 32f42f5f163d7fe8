"""Validation of writes: the upstream schemas (strict) and the semantic checks the apiserver makes;
the defaults it fills in."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from . import kubeschema, kubesim
from .kubeerrors import Invalid, invalid, value_str
from .kubekinds import KUBERNETES_VERSION, Kind

# --------------------------------------------------------------------------------------------------
# Validation: upstream schemas (strict) + the semantic checks the apiserver makes


@functools.cache
def prepare() -> None:
    """Parse the schemas and import the validator once per process, ahead of the first write."""
    import jsonschema  # noqa: F401
    import referencing  # noqa: F401

    kubeschema.by_gvk()


@functools.cache
def _validator(kind: str, api_version: str) -> Any:
    """The strict JSON Schema validator of one kind, built once: what ``kubernetes_validate.validate``
    does on every call (it re-reads and parses the 1.8 MB ``_definitions.json`` each time, ~15 ms of
    CPU per write under world.lock), with the same schema files, draft and registry."""
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    # The file naming of kubernetes_validate.validate: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1 -> rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = kubeschema.strict_file(f"{kind.lower()}-{group_version}.json")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise kubernetes_validate.SchemaNotFoundError(
            version=KUBERNETES_VERSION, kind=kind, api_version=api_version
        ) from None
    registry: Registry[Any] = Registry()
    registry = Resource.from_contents(schema) @ registry
    registry = Resource.from_contents(kubeschema.definitions_document()) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_schema(kind: Kind, obj: dict[str, Any]) -> None:
    """422 Invalid unless ``obj`` matches the upstream schema of ``KUBERNETES_VERSION`` (strict)."""
    import jsonschema

    try:
        _validator(str(obj["kind"]), str(obj["apiVersion"])).validate(obj)
    except jsonschema.ValidationError as e:
        path = _field_path(list(e.path))
        unknown = (
            re.findall(r"'([^']+)' (?:was|were) unexpected", e.message)
            if e.validator == "additionalProperties"
            else []
        )
        name = str((obj.get("metadata") or {}).get("name", ""))
        if unknown:
            errs = [
                Invalid(_join(path, u), f'unknown field "{_join(path, u)}"', "FieldValueNotSupported")
                for u in unknown
            ]
        elif e.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", e.message)
            errs = [Invalid(_join(path, m), "Required value", "FieldValueRequired") for m in missing]
        else:
            errs = [Invalid(path, f"Invalid value: {value_str(e.instance)}: {e.message}")]
        raise invalid(kind, name, errs) from None


def _field_path(parts: list[Any]) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _name_errors(kind: Kind, name: str) -> list[Invalid]:
    if kind.kind == "Service":
        if not _DNS1035_LABEL.match(name) or len(name) > 63:
            return [
                Invalid(
                    "metadata.name",
                    f'Invalid value: "{name}": a DNS-1035 label must consist of lower case alphanumeric characters '
                    "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
                    "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                )
            ]
    elif kind.kind == "Namespace":
        if not _DNS1123_LABEL.match(name) or len(name) > 63:
            return [
                Invalid(
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                    "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )
            ]
    elif not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [
            Invalid(
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )
        ]
    return []


def semantic_errors(kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Invalid]:
    """The checks beyond the schema that users run into (upstream's ValidateDeployment & co)."""
    errs = _name_errors(kind, str(obj["metadata"]["name"]))
    spec = obj.get("spec") or {}
    if kind.kind == "Deployment":
        errs += _deployment_errors(spec, (old or {}).get("spec"))
    elif kind.kind == "Service":
        errs += _service_errors(spec, (old or {}).get("spec"))
    elif kind.kind == "HorizontalPodAutoscaler":
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if hi < 1:
            errs.append(
                Invalid("spec.maxReplicas", f"Invalid value: {hi}: must be greater than or equal to 1")
            )
        elif lo > hi:
            errs.append(
                Invalid("spec.minReplicas", f"Invalid value: {lo}: must be less than or equal to maxReplicas")
            )
    elif kind.kind == "ConfigMap":
        for section in ("data", "binaryData"):
            for key in obj.get(section) or {}:
                if not _CONFIG_KEY.match(key):
                    errs.append(
                        Invalid(
                            f"{section}[{key}]",
                            f'Invalid value: "{key}": a valid config key must consist of alphanumeric characters, '
                            "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                            "validation is '[-._a-zA-Z0-9]+')",
                        )
                    )
        if len(json.dumps(obj.get("data") or {})) + len(json.dumps(obj.get("binaryData") or {})) > 1048576:
            errs.append(Invalid("", "Too long: must have at most 1048576 bytes", "FieldValueTooLong"))
    return errs


def _deployment_errors(spec: dict[str, Any], old_spec: dict[str, Any] | None) -> list[Invalid]:
    errs = []
    replicas = spec.get("replicas", 1)
    if replicas < 0:
        errs.append(
            Invalid("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    selector = spec.get("selector") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    match = selector.get("matchLabels") or {}
    if not match and not selector.get("matchExpressions"):
        errs.append(
            Invalid(
                "spec.selector",
                f"Invalid value: {value_str(selector)}: empty selector is invalid for deployment",
            )
        )
    elif any(labels.get(k) != v for k, v in match.items()):
        errs.append(
            Invalid(
                "spec.template.metadata.labels",
                f"Invalid value: {value_str(labels)}: `selector` does not match template `labels`",
            )
        )
    if old_spec is not None and old_spec.get("selector") != spec.get("selector"):
        errs.append(Invalid("spec.selector", f"Invalid value: {value_str(selector)}: field is immutable"))
    errs += _pod_spec_errors(template.get("spec") or {}, "spec.template.spec")
    return errs


def _pod_spec_errors(pod: dict[str, Any], at: str) -> list[Invalid]:
    containers = pod.get("containers") or []
    if not containers:
        return [Invalid(f"{at}.containers", "Required value", "FieldValueRequired")]
    errs, seen = [], set()
    for field in ("serviceAccountName", "serviceAccount"):
        sa = pod.get(field)
        if sa and (not _DNS1123_SUBDOMAIN.match(str(sa)) or len(str(sa)) > 253):
            errs.append(
                Invalid(
                    f"{at}.{field}",
                    f'Invalid value: "{sa}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                    "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                    "'example.com', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                )
            )
    for i, c in enumerate(containers):
        where = f"{at}.containers[{i}]"
        if c["name"] in seen:
            errs.append(Invalid(f"{where}.name", f'Duplicate value: "{c["name"]}"', "FieldValueDuplicate"))
        seen.add(c["name"])
        if not _DNS1123_LABEL.match(c["name"]):
            errs.append(
                Invalid(
                    f"{where}.name",
                    f"Invalid value: \"{c['name']}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
                )
            )
        if not c.get("image"):
            errs.append(Invalid(f"{where}.image", "Required value", "FieldValueRequired"))
        errs += _resource_errors(c.get("resources") or {}, f"{where}.resources")
    return errs


def _resource_errors(res: dict[str, Any], at: str) -> list[Invalid]:
    errs, parsed = [], {}
    for section in ("requests", "limits"):
        for rname, q in (res.get(section) or {}).items():
            try:
                parsed[(section, rname)] = kubesim.parse_quantity(q)
            except kubesim.QuantityError:
                errs.append(
                    Invalid(
                        f"{at}.{section}[{rname}]",
                        f"Invalid value: {value_str(q)}: quantities must match the regular expression "
                        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )
                )
    for (section, rname), v in parsed.items():
        limit = parsed.get(("limits", rname))
        if section == "requests" and limit is not None and v > limit:
            errs.append(
                Invalid(
                    f"{at}.requests",
                    f"Invalid value: {value_str(res['requests'][rname])}: must be less than or equal to {rname} limit "
                    f"of {res['limits'][rname]}",
                )
            )
    return errs


_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _service_errors(spec: dict[str, Any], old_spec: dict[str, Any] | None) -> list[Invalid]:
    errs = []
    stype = spec.get("type", "ClusterIP")
    if stype not in _SERVICE_TYPES:
        supported = ", ".join(f'"{t}"' for t in _SERVICE_TYPES)
        return [
            Invalid(
                "spec.type",
                f'Unsupported value: "{stype}": supported values: {supported}',
                "FieldValueNotSupported",
            )
        ]
    ports = spec.get("ports") or []
    if stype != "ExternalName" and not ports:
        errs.append(Invalid("spec.ports", "Required value", "FieldValueRequired"))
    for i, p in enumerate(ports):
        if not 1 <= int(p.get("port", 0)) <= 65535:
            errs.append(
                Invalid(
                    f"spec.ports[{i}].port",
                    f"Invalid value: {p.get('port')}: must be between 1 and 65535, inclusive",
                )
            )
        if len(ports) > 1 and not p.get("name"):
            errs.append(Invalid(f"spec.ports[{i}].name", "Required value", "FieldValueRequired"))
    wanted, had = spec.get("clusterIP"), (old_spec or {}).get("clusterIP")
    if old_spec is not None and wanted and had and wanted != had:
        errs.append(Invalid("spec.clusterIP", f'Invalid value: "{wanted}": field is immutable'))
    return errs


# --------------------------------------------------------------------------------------------------
# Server-set fields (defaults the apiserver fills in)


def apply_defaults(kind: Kind, obj: dict[str, Any]) -> None:
    # What a new object shows until its controller writes a status.
    if kind.kind == "HorizontalPodAutoscaler":
        obj.setdefault("status", {"currentReplicas": 0, "desiredReplicas": 0})
    elif kind.kind == "Deployment":
        obj.setdefault("status", {})
    if kind.kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        )
        _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif kind.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif kind.kind == "HorizontalPodAutoscaler":
        obj["spec"].setdefault("minReplicas", 1)
    elif kind.kind == "Secret":
        obj.setdefault("type", "Opaque")


def _default_pod_spec(pod: dict[str, Any]) -> None:
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("schedulerName", "default-scheduler")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("securityContext", {})
    for c in pod.get("containers") or []:
        image = str(c.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if isinstance(c.get(probe), dict):
                _default_probe(c[probe])


def _default_probe(probe: dict[str, Any]) -> None:
    """SetDefaults_Probe and SetDefaults_HTTPGetAction (pkg/apis/core/v1/defaults.go)."""
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")
