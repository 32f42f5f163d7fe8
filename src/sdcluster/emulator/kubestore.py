"""The object store of one cluster's apiserver and its verbs (get, list, create, replace, patch,
server-side apply, delete), on ``world.data["kube"][key]`` under ``world.lock``."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import kubemerge, kubesim
from .core import World
from .kubeerrors import Invalid, bad_request, conflict_modified, details, invalid, kube_error, not_found
from .kubekinds import BY_PLURAL, LB_FINALIZER, PROTECTED_NAMESPACES, Kind
from .kubeselect import field_matcher, label_matcher
from .kubevalidate import apply_defaults, semantic_errors, validate_schema

if TYPE_CHECKING:
    from .kube import Hub

# --------------------------------------------------------------------------------------------------
# One cluster's API (operations on world.data["kube"][key], all under world.lock)


def _now_str(world: World) -> str:
    return kubesim.rfc3339(world.now())


class ClusterApi:
    """The apiserver of cluster ``key``: routing, authorization and the object store."""

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

    # ---- store helpers ------------------------------------------------------------------------------
    def _objects(self, kind: Kind) -> dict[str, dict[str, Any]]:
        return self.rec["objects"].setdefault(kind.plural, {})  # type: ignore[no-any-return]

    @staticmethod
    def _id(kind: Kind, ns: str, name: str) -> str:
        return f"{ns}/{name}" if kind.namespaced else name

    def bump_version(self) -> str:
        """The next resourceVersion (one counter per cluster, like etcd's revision)."""
        self.rec["rv"] = int(self.rec.get("rv", 1)) + 1
        return str(self.rec["rv"])

    def _require_namespace(self, kind: Kind, ns: str) -> None:
        if kind.namespaced and ns not in self._objects(BY_PLURAL["namespaces"]):
            raise not_found(BY_PLURAL["namespaces"], ns)

    # ---- reads --------------------------------------------------------------------------------------
    def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        if kind.writable:
            obj = self._objects(kind).get(self._id(kind, ns, name))
        else:
            obj = next((o for o in self._synthesized(kind, ns) if o["metadata"]["name"] == name), None)
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def list_objects(self, kind: Kind, ns: str, query: dict[str, str]) -> dict[str, Any]:
        if kind.writable:
            items = [
                o for o in self._objects(kind).values() if not ns or o["metadata"].get("namespace") == ns
            ]
        else:
            items = self._synthesized(kind, ns)
        if query.get("labelSelector"):
            match = label_matcher(query["labelSelector"])
            items = [o for o in items if match(o["metadata"].get("labels") or {})]
        if query.get("fieldSelector"):
            fmatch = field_matcher(query["fieldSelector"])
            items = [o for o in items if fmatch(o)]
        items = sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        out = []
        for o in items:
            o = copy.deepcopy(o)
            o.pop("apiVersion", None)  # list items carry no kind/apiVersion, as upstream
            o.pop("kind", None)
            out.append(o)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.rec.get("rv", 1))},
            "items": out,
        }

    def _synthesized(self, kind: Kind, ns: str) -> list[dict[str, Any]]:
        """Objects the controllers keep (nodes, pods, ReplicaSets, events), as the API shows them."""
        sim = self.hub.sim(self.key, self.rec)
        items = {
            "nodes": sim.node_objects,
            "pods": sim.pod_objects,
            "replicasets": sim.replicaset_objects,
            "events": sim.event_objects,
        }[kind.plural]()
        return [o for o in items if not ns or o["metadata"].get("namespace") == ns]

    def pod_log(self, ns: str, name: str, query: dict[str, str]) -> str:
        """``GET pods/NAME/log``: the container's log as text (``container``, ``previous``, ``tailLines``)."""
        from . import kubelet

        pod = self.rec.get("pods", {}).get(f"{ns}/{name}")
        pods = BY_PLURAL["pods"]
        if pod is None:
            raise not_found(pods, name)
        names = list(pod["containers"]) or [c.get("name") for c in pod["spec"].get("containers") or []]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(map(str, names))}]"
            )
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        previous = query.get("previous", "").lower() in ("true", "1")
        lines = kubelet.logs(pod, container, previous) if pod["containers"] else None
        if lines is None or (previous and not pod["containers"][container]["restarts"]):
            if previous:
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        if query.get("tailLines", "").isdigit():
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        return "".join(f"{line}\n" for line in lines)

    def delete_pod(self, ns: str, name: str) -> dict[str, Any]:
        """Delete a pod (its ReplicaSet makes a new one): a restart by hand."""
        pod = self.rec.get("pods", {}).get(f"{ns}/{name}")
        if pod is None:
            raise not_found(BY_PLURAL["pods"], name)
        from . import kubelet

        obj = kubelet.pod_object(pod, self.world.now())
        del self.rec["pods"][f"{ns}/{name}"]
        self.bump_version()
        self.world.changed()
        return obj

    # ---- writes -------------------------------------------------------------------------------------
    def create(self, kind: Kind, ns: str, body: Any, manager: str, dry: bool) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, "", body)
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
        existing = self._objects(kind).get(self._id(kind, ns, name))
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
            kind, ns, name, None, obj, dry, lambda new: kubemerge.update_ownership(None, new, manager, now)
        )

    def replace(self, kind: Kind, ns: str, name: str, body: Any, manager: str, dry: bool) -> dict[str, Any]:
        obj = self._checked_body(kind, ns, name, body)
        old = self._objects(kind).get(self._id(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict_modified(kind, name)
        now = _now_str(self.world)
        return self._commit(
            kind, ns, name, old, obj, dry, lambda new: kubemerge.update_ownership(old, new, manager, now)
        )

    def patch(
        self,
        kind: Kind,
        ns: str,
        name: str,
        content_type: str,
        body: bytes,
        query: dict[str, str],
        manager: str,
        dry: bool,
    ) -> tuple[int, dict[str, Any]]:
        ctype = content_type.split(";")[0].strip().lower()
        force = query.get("force", "").lower() in ("true", "1")
        if ctype == "application/apply-patch+yaml":
            return self.apply(kind, ns, name, body, query.get("fieldManager", ""), force, dry)
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
        old = self._objects(kind).get(self._id(kind, ns, name))
        if old is None:
            raise not_found(kind, name)
        patch = parse_json(body)
        try:
            if ctype == "application/merge-patch+json":
                merged = kubemerge.merge_patch(old, patch)
            elif ctype == "application/strategic-merge-patch+json":
                merged = kubemerge.strategic_merge(old, patch)
            elif ctype == "application/json-patch+json":
                merged = kubemerge.json_patch(old, patch)
            else:
                raise kube_error(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
        except kubemerge.MergeError as e:
            raise invalid(kind, name, [Invalid(e.field, e.message)]) from None
        obj = self._checked_body(kind, ns, name, merged)
        now = _now_str(self.world)
        return 200, self._commit(
            kind, ns, name, old, obj, dry, lambda new: kubemerge.update_ownership(old, new, manager, now)
        )

    def apply(
        self, kind: Kind, ns: str, name: str, body: bytes, manager: str, force: bool, dry: bool
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
        old = self._objects(kind).get(self._id(kind, ns, name))
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
        result = self._commit(kind, ns, name, old, merged, dry, None)
        return (201 if old is None else 200), result

    def delete(self, kind: Kind, ns: str, name: str, options: Any, dry: bool) -> dict[str, Any]:
        objects = self._objects(kind)
        oid = self._id(kind, ns, name)
        obj = objects.get(oid)
        if obj is None:
            raise not_found(kind, name)
        pre = (options or {}).get("preconditions") or {}
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
        if dry:
            return copy.deepcopy(obj)
        if LB_FINALIZER in (obj["metadata"].get("finalizers") or []):
            # GKE keeps the Service until its load balancer is released (the finalizer goes then).
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now_str(self.world)
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self.bump_version()
                self.rec["lbs"].setdefault(oid, {"ip": "", "since": self.world.now()})["deleting"] = (
                    self.world.now()
                )
                self.world.changed()
            return copy.deepcopy(obj)
        self.hub.forget(self.rec, kind, oid)
        self.bump_version()
        self.world.changed()
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**details(kind, name), "uid": obj["metadata"]["uid"]},
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

    def _commit(
        self,
        kind: Kind,
        ns: str,
        name: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        dry: bool,
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
        validate_schema(kind, new)
        errs = semantic_errors(kind, new, old)
        if errs:
            raise invalid(kind, name, errs)
        apply_defaults(kind, new)
        self.hub.server_fields(self.rec, kind, self._id(kind, ns, name), new, old)
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
        if dry:
            return copy.deepcopy(new)
        meta["resourceVersion"] = self.bump_version()
        self._objects(kind)[self._id(kind, ns, name)] = new
        self.hub.after_write(self.key, self.rec, kind, self._id(kind, ns, name), new)
        self.world.changed()
        return copy.deepcopy(new)


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


def dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun", "")
    if value and value != "All":
        raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return value == "All"


def manager_from_agent(agent: str) -> str:
    """Upstream's default field manager: the User-Agent up to its first "/"."""
    return agent.split("/", 1)[0][:128] or "unknown"


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"error decoding JSON: {e}") from None


def parse_yaml(body: bytes) -> Any:
    import yaml

    try:
        data = yaml.safe_load(body or b"")
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None
    if not isinstance(data, dict):
        raise bad_request("error decoding YAML: the applied configuration must be an object")
    return data
