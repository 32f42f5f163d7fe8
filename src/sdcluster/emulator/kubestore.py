"""The object store of one cluster's apiserver and its verbs (get, list, create, replace, patch,
server-side apply, delete, deletecollection), on ``world.data["kube"][key]`` under ``world.lock``.

Reads go through the cluster's change journal (``kubewatch.Journal``), so that a list, a get and a
watch agree on every object's ``resourceVersion``, including the objects the controllers keep (pods,
ReplicaSets, events, nodes, EndpointSlices). Writes run one pipeline (``_commit``): unknown fields as
``fieldValidation`` says, the schema, the semantic checks, defaults, ownership, version.

Example (under ``world.lock``)::

    api = ClusterApi(hub, key)
    api.create(BY_PLURAL["configmaps"], "default", body, WriteOptions(manager="kubectl"))
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import kubemerge, kubeschema, kubesim
from .core import World
from .kubeerrors import (
    Invalid,
    bad_request,
    conflict_modified,
    details,
    invalid,
    kube_error,
    not_found,
)
from .kubekinds import BY_PLURAL, LB_FINALIZER, PROTECTED_NAMESPACES, Kind
from .kubeselect import field_matcher, label_matcher
from .kubevalidate import apply_defaults, semantic_errors, validate_schema
from .kubewire import parse_json, parse_yaml

if TYPE_CHECKING:
    from .kube import Hub
    from .kubewatch import Journal

VALIDATION = ("Ignore", "Warn", "Strict")


def _now_str(world: World) -> str:
    return kubesim.rfc3339(world.now())


@dataclass
class WriteOptions:
    """How a write is made: by whom (``fieldManager``), for real or not, and what unknown fields do."""

    manager: str = "unknown"
    dry: bool = False
    validation: str = "Warn"  # upstream's default when fieldValidation is not given
    warnings: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # keys the JSON body gave twice


class ClusterApi:
    """The object store of cluster ``key`` and its verbs."""

    def __init__(self, hub: Hub, key: str) -> None:
        self.hub = hub
        self.world = hub.world
        self.key = key
        self.project = key.split("/")[1]

    @property
    def rec(self) -> dict[str, Any]:
        rec = self.world.data.get("kube", {}).get(self.key)
        if rec is None:
            raise kube_error(503, "ServiceUnavailable", "the cluster is being deleted")
        return rec  # type: ignore[no-any-return]

    @property
    def journal(self) -> Journal:
        return self.hub.journal(self.key)

    # ---- store helpers ------------------------------------------------------------------------------
    def _objects(self, kind: Kind) -> dict[str, dict[str, Any]]:
        return self.rec["objects"].setdefault(kind.plural, {})  # type: ignore[no-any-return]

    @staticmethod
    def oid(kind: Kind, ns: str, name: str) -> str:
        return f"{ns}/{name}" if kind.namespaced else name

    def bump_version(self) -> str:
        """The next resourceVersion (one counter per cluster, like etcd's revision)."""
        self.rec["rv"] = int(self.rec.get("rv", 1)) + 1
        return str(self.rec["rv"])

    def _require_namespace(self, kind: Kind, ns: str) -> None:
        if kind.namespaced and ns not in self._objects(BY_PLURAL["namespaces"]):
            raise not_found(BY_PLURAL["namespaces"], ns)

    def current(self, kind: Kind) -> list[dict[str, Any]]:
        """Every object of ``kind`` as it is now (stored, or kept by the controllers), with its
        apiVersion and kind; the journal stamps the versions of what the controllers keep."""
        if kind.writable:
            return list(self._objects(kind).values())
        if kind.plural == "endpointslices":
            from . import kubeslices

            return kubeslices.endpoint_slices(self.rec)
        sim = self.hub.sim(self.key, self.rec)
        return {
            "nodes": sim.node_objects,
            "pods": sim.pod_objects,
            "replicasets": sim.replicaset_objects,
            "events": sim.event_objects,
        }[kind.plural]()

    # ---- reads --------------------------------------------------------------------------------------
    def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        obj = self.journal.objects(self, kind).get(self.oid(kind, ns, name))
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def select(self, kind: Kind, ns: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``ns`` (all namespaces when empty) that the label and field
        selectors of ``query`` match, in key order."""
        items = [
            o
            for o in self.journal.objects(self, kind).values()
            if not ns or o["metadata"].get("namespace") == ns
        ]
        return sorted(filter(matcher(kind, query), items), key=_key)

    def list_objects(self, kind: Kind, ns: str, query: dict[str, str]) -> dict[str, Any]:
        """A list, paged by ``limit`` and ``continue`` (the token names the last key served)."""
        items = self.select(kind, ns, query)
        meta: dict[str, Any] = {"resourceVersion": str(self.rec.get("rv", 1))}
        token = query.get("continue", "")
        if token:
            start = _continue_start(token)
            items = [o for o in items if "/".join(_key(o)) > start]
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 0
        if limit and len(items) > limit:
            last = "/".join(_key(items[limit - 1]))
            meta["continue"] = _continue_token(int(meta["resourceVersion"]), last)
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        out = []
        for o in items:
            o = copy.deepcopy(o)
            o.pop("apiVersion", None)  # list items carry no kind/apiVersion, as upstream
            o.pop("kind", None)
            out.append(o)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": out}

    def delete_pod(self, ns: str, name: str, dry: bool) -> dict[str, Any]:
        """Delete a pod (its ReplicaSet makes a new one, the scheduler places it anew): a restart by
        hand. A DaemonSet's pod comes back at once on its node (the emulator keeps no state for it)."""
        pods = BY_PLURAL["pods"]
        obj = self.get(pods, ns, name)
        if dry:
            return obj
        self.rec["pods"].pop(f"{ns}/{name}", None)
        if ns == "kube-system":
            self.rec.get("addons", {}).pop(name, None)
        self.bump_version()
        self.journal.sync(self, [pods])
        self.world.changed()
        return obj

    # ---- writes -------------------------------------------------------------------------------------
    def create(self, kind: Kind, ns: str, body: Any, opts: WriteOptions) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, "", body)
        self._unknown_fields(kind, obj, opts)
        name = obj["metadata"].get("name")
        if not name:
            raise invalid(
                kind,
                "",
                [
                    Invalid(
                        "metadata.name",
                        "Required value: name or generateName is required",
                        "FieldValueRequired",
                    )
                ],
            )
        if obj["metadata"].get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        self._require_namespace(kind, ns)
        existing = self._objects(kind).get(self.oid(kind, ns, name))
        if existing is not None:
            being_deleted = (
                "object is being deleted: " if existing["metadata"].get("deletionTimestamp") else ""
            )
            raise kube_error(
                409,
                "AlreadyExists",
                f'{being_deleted}{kind.resource} "{name}" already exists',
                details(kind, name),
            )
        now = _now_str(self.world)
        return self._commit(
            kind,
            ns,
            name,
            None,
            obj,
            opts,
            lambda new: kubemerge.update_ownership(None, new, opts.manager, now),
        )

    def replace(self, kind: Kind, ns: str, name: str, body: Any, opts: WriteOptions) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, name, body)
        self._unknown_fields(kind, obj, opts)
        old = self._objects(kind).get(self.oid(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict_modified(kind, name)
        now = _now_str(self.world)
        return self._commit(
            kind,
            ns,
            name,
            old,
            obj,
            opts,
            lambda new: kubemerge.update_ownership(old, new, opts.manager, now),
        )

    def patch(
        self,
        kind: Kind,
        ns: str,
        name: str,
        content_type: str,
        body: bytes,
        query: dict[str, str],
        opts: WriteOptions,
    ) -> tuple[int, dict[str, Any]]:
        force = query.get("force", "").lower() in ("true", "1")
        if content_type == "application/apply-patch+yaml":
            return self.apply(kind, ns, name, body, query.get("fieldManager", ""), force, opts)
        if force:
            raise invalid(
                kind,
                name,
                [
                    Invalid(
                        "force", "Forbidden: may not be specified for non-apply patch", "FieldValueForbidden"
                    )
                ],
            )
        old = self._objects(kind).get(self.oid(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        merged = self.patched(kind, name, old, content_type, body)
        obj = self._checked_body(kind, ns, name, merged)
        unknown = kubeschema.unknown_fields(obj)
        if unknown and opts.validation == "Strict":
            text = "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
            raise kube_error(
                422,
                "Invalid",
                f' "" is invalid: patch: Invalid value: "{body.decode(errors="replace")}": {text}',
                {
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": f"Invalid value: {text}", "field": "patch"}
                    ]
                },
            )
        self._unknown_fields(kind, obj, opts)
        now = _now_str(self.world)
        return 200, self._commit(
            kind,
            ns,
            name,
            old,
            obj,
            opts,
            lambda new: kubemerge.update_ownership(old, new, opts.manager, now),
        )

    @staticmethod
    def patched(kind: Kind, name: str, old: dict[str, Any], content_type: str, body: bytes) -> Any:
        """``old`` with a JSON, merge or strategic merge patch applied."""
        patch = parse_json(body)
        try:
            if content_type == "application/merge-patch+json":
                return kubemerge.merge_patch(old, patch)
            if content_type == "application/strategic-merge-patch+json":
                return kubemerge.strategic_merge(old, patch)
            if content_type == "application/json-patch+json":
                return kubemerge.json_patch(old, patch)
        except kubemerge.MergeError as e:
            raise invalid(kind, name, [Invalid(e.field, e.message)]) from None
        raise kube_error(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
        )

    def apply(
        self, kind: Kind, ns: str, name: str, body: bytes, manager: str, force: bool, opts: WriteOptions
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply: create when missing, else merge with conflict detection."""
        if not manager:
            raise kube_error(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                {
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        raw = parse_yaml(body)
        if "apiVersion" not in raw or "kind" not in raw:
            raise bad_request(
                "error decoding YAML: Object 'Kind' is missing or 'apiVersion' is missing in the applied configuration"
            )
        applied = self._checked_body(kind, ns, name, raw)
        unknown = kubeschema.unknown_fields(applied)
        if unknown:
            # Structured merge types the applied configuration against the schema whatever
            # fieldValidation says; upstream answers this with a 500 (kubernetes/kubernetes#139253).
            where = f"{ns}/{name}; {kind.group}/{kind.version}, Kind={kind.kind}"
            errors = [f".{u}: field not declared in schema" for u in unknown]
            text = errors[0] if len(errors) == 1 else "errors:\n" + "\n".join(f"  {e}" for e in errors)
            raise kube_error(500, "", f"failed to create typed patch object ({where}): {text}")
        old = self._objects(kind).get(self.oid(kind, ns, name))
        if old is None:
            self._require_namespace(kind, ns)
        rv = applied["metadata"].get("resourceVersion")
        if rv and (old is None or rv != old["metadata"]["resourceVersion"]):
            raise conflict_modified(kind, name)
        try:
            merged = kubemerge.apply(old, applied, manager, _now_str(self.world), force=force)
        except kubemerge.ApplyConflict as e:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{c.manager}" using {c.api_version}',
                    "field": kubemerge.path_str(c.path),
                }
                for c in e.conflicts
            ]
            raise kube_error(409, "Conflict", str(e), {**details(kind, name), "causes": causes}) from None
        except kubemerge.MergeError as e:
            raise invalid(kind, name, [Invalid(e.field, e.message)]) from None
        result = self._commit(kind, ns, name, old, merged, opts, None)
        return (201 if old is None else 200), result

    def delete(self, kind: Kind, ns: str, name: str, options: dict[str, Any], dry: bool) -> dict[str, Any]:
        """Delete one object; ``options`` is the DeleteOptions (preconditions, propagationPolicy)."""
        objects = self._objects(kind)
        oid = self.oid(kind, ns, name)
        obj = objects.get(oid)
        if obj is None:
            raise not_found(kind, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise kube_error(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {obj['metadata']['uid']}",
                details(kind, name),
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise kube_error(
                409,
                "Conflict",
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in meta: {obj['metadata']['resourceVersion']}",
                details(kind, name),
            )
        if kind.plural == "namespaces" and name in PROTECTED_NAMESPACES:
            raise kube_error(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                details(kind, name),
            )
        if LB_FINALIZER in (obj["metadata"].get("finalizers") or []):
            # GKE keeps the Service until its load balancer is released (the finalizer goes then).
            if dry:  # the answer a real delete would give, nothing done
                marked = copy.deepcopy(obj)
                marked["metadata"].setdefault("deletionTimestamp", _now_str(self.world))
                return marked
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now_str(self.world)
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self.bump_version()
                self.rec["lbs"].setdefault(oid, {"ip": "", "since": self.world.now()})["deleting"] = (
                    self.world.now()
                )
                self.journal.sync(self, [kind])
                self.world.changed()
            return copy.deepcopy(obj)
        if not dry:
            self.hub.forget(self.rec, kind, oid)
            self.bump_version()
            self.journal.sync(self, [kind])
            self.world.changed()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**details(kind, name), "uid": obj["metadata"]["uid"]},
        }

    def delete_collection(
        self, kind: Kind, ns: str, query: dict[str, str], options: dict[str, Any], dry: bool
    ) -> dict[str, Any]:
        """``DELETE`` on a collection: every selected object, answered as the list of what went."""
        gone = []
        for o in self.select(kind, ns, query):
            if o["metadata"].get("namespace", "") == "kube-system" and not ns:
                continue
            self.delete(kind, o["metadata"].get("namespace", ""), o["metadata"]["name"], options, dry)
            gone.append({k: v for k, v in o.items() if k not in ("apiVersion", "kind")})
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.rec.get("rv", 1))},
            "items": gone,
        }

    # ---- the write pipeline -------------------------------------------------------------------------
    def _checked_body(self, kind: Kind, ns: str, name: str, body: Any) -> dict[str, Any]:
        """The body as an object of ``kind`` at (ns, name): 400 when it names something else."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {kind.kind} object")
        obj = copy.deepcopy(body)
        if obj.get("kind", kind.kind) != kind.kind:
            raise bad_request(
                f'{obj.get("kind")} in version "{obj.get("apiVersion")}" cannot be handled as a {kind.kind}'
            )
        if obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version "
                f"({kind.api_version})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(
                f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: metadata must be an object'
            )
        if name and meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if kind.namespaced and meta.get("namespace", ns) != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name:
            meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        return obj

    @staticmethod
    def _unknown_fields(kind: Kind, obj: dict[str, Any], opts: WriteOptions) -> None:
        """``fieldValidation``: Strict refuses unknown and duplicate fields (400), Warn drops them with
        a warning each, Ignore drops them silently."""
        problems = [f'unknown field "{u}"' for u in kubeschema.unknown_fields(obj)]
        problems += [f'duplicate field "{d}"' for d in opts.duplicates]
        if not problems:
            return
        if opts.validation == "Strict":
            raise bad_request(
                f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: strict decoding error: '
                + ", ".join(problems)
            )
        if opts.validation == "Warn":
            opts.warnings += problems
        kubeschema.drop_unknown(obj)

    def _commit(
        self,
        kind: Kind,
        ns: str,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        opts: WriteOptions,
        ownership: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        """Validate, default, record ownership, version and store ``new`` (``old``: the stored one)."""
        meta = new["metadata"]
        for f in (
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(f, None)
            if old and f in old["metadata"]:
                meta[f] = old["metadata"][f]
        if ownership is not None:  # Update operations: the stored managedFields are the starting point
            meta.pop("managedFields", None)
            if old and "managedFields" in old["metadata"]:
                meta["managedFields"] = copy.deepcopy(old["metadata"]["managedFields"])
        # The main resource never writes status (that is the status subresource's job).
        new.pop("status", None)
        if old and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        drop_nulls(new)  # a JSON null means "not set", as upstream decodes it
        if kind.kind == "Secret":
            _merge_string_data(new)
        validate_schema(kind, new)
        errs = semantic_errors(kind, new, old)
        if errs:
            raise invalid(kind, name, errs)
        apply_defaults(kind, new)
        kubeschema.drop_empty(new)  # Go's omitempty: annotations: {} is not kept
        self.hub.server_fields(self.rec, kind, self.oid(kind, ns, name), new, old)
        if ownership is not None:
            ownership(new)
        if old is not None and kubemerge.without_times(new) == kubemerge.without_times(old):
            return copy.deepcopy(old)  # nothing changed: same resourceVersion, no write
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_str(self.world)
            if kind.generation:
                meta["generation"] = 1
        elif kind.generation and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if opts.dry:
            return copy.deepcopy(new)
        meta["resourceVersion"] = self.bump_version()
        self._objects(kind)[self.oid(kind, ns, name)] = new
        self.hub.after_write(self.key, self.rec, kind, self.oid(kind, ns, name), new)
        self.journal.sync(self, [kind])
        self.world.changed()
        return copy.deepcopy(new)


def matcher(kind: Kind, query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    """The label and field selectors of a list or watch; a field the kind cannot select by is 400."""
    labels = label_matcher(query["labelSelector"]) if query.get("labelSelector") else None
    fields = (
        field_matcher(query["fieldSelector"], ("metadata.name", "metadata.namespace", *kind.fields))
        if query.get("fieldSelector")
        else None
    )
    return lambda o: (
        (labels is None or labels(o["metadata"].get("labels") or {})) and (fields is None or fields(o))
    )


def _key(o: dict[str, Any]) -> tuple[str, str]:
    return o["metadata"].get("namespace", ""), o["metadata"]["name"]


def _continue_token(rv: int, start: str) -> str:
    return base64.urlsafe_b64encode(
        json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    ).decode()


def _continue_start(token: str) -> str:
    try:
        return str(json.loads(base64.urlsafe_b64decode(token.encode()))["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(f"continue key is not valid: {token}") from None


def _merge_string_data(secret: dict[str, Any]) -> None:
    """``stringData`` is write-only: its values join ``data`` base64-encoded (upstream's conversion);
    ``data`` values must be base64."""
    string_data = secret.pop("stringData", None) or {}
    data = secret.setdefault("data", {})
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]'
            ) from None
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if not data:
        del secret["data"]


def drop_nulls(value: Any) -> None:
    if isinstance(value, dict):
        for k in [k for k, v in value.items() if v is None]:
            del value[k]
        for v in value.values():
            drop_nulls(v)
    elif isinstance(value, list):
        for v in value:
            drop_nulls(v)


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def dry_run(values: Any) -> bool:
    """``dryRun`` (the query's string or DeleteOptions' list): only All is supported."""
    items = [values] if isinstance(values, str) else list(values or [])
    for value in items:
        if value and value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return "All" in items


def field_validation(query: dict[str, str]) -> str:
    value = query.get("fieldValidation", "") or "Warn"
    if value not in VALIDATION:
        raise bad_request(
            f"fieldValidation: Unsupported value: {json.dumps(value)}: supported values: "
            '"Ignore", "Strict", "Warn"'
        )
    return value


def manager_from_agent(agent: str) -> str:
    """Upstream's default field manager: the User-Agent up to its first "/"."""
    return agent.split("/", 1)[0][:128] or "unknown"
