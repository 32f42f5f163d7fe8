"""The routes of one cluster's apiserver: authentication, GKE's IAM authorization, and each request
sent to discovery, OpenAPI, the store (``kubestore``), a subresource (``kubesub``) or a stream
(``kubewatch``), answered as JSON, a Table (``kubetables``) or text.

Example::

    reply = Router(api, stopping).handle(Request("GET", "/api/v1/namespaces/default/pods", {}, headers, b""))
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from . import kubeopenapi, kubeproto, kuberbac, kubesub, kubetables, kubewatch
from .core import Identity
from .kubediscovery import discovery, version
from .kubeerrors import bad_request, details, kube_error
from .kubekinds import BY_PATH, PATH, Kind
from .kubestore import ClusterApi, WriteOptions, dry_run, field_validation, manager_from_agent, matcher
from .kubewire import PROTOBUF, Reply, Request, parse_body, parse_json, refuse_protobuf

USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
NO_ROUTE = "the server could not find the requested resource"
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class Router:
    """Routes one cluster's requests to its ``ClusterApi``."""

    def __init__(self, api: ClusterApi, stopping: threading.Event) -> None:
        self.api = api
        self.world = api.world
        self.project = api.project
        self.stopping = stopping

    # ---- entry point ------------------------------------------------------------------------------
    def handle(self, req: Request, alive: Callable[[], bool] = lambda: True) -> Reply:
        """Answer one request (``alive`` tells a stream whether its client is still there)."""
        mutating = req.verb in ("POST", "PUT", "PATCH", "DELETE")
        req.path = req.path.rstrip("/") or "/"  # the client asks for "/version/"
        with self.world.call("k8s", req.verb, req.path, mutating) as info:
            if req.path in ("/healthz", "/livez", "/readyz"):
                return Reply(200, "ok")
            if req.path == "/version":
                return Reply(200, version())
            with self.world.lock:
                req.account = kuberbac.service_account_of(self.api.rec, req.headers.get("Authorization"))
            if req.account is not None:  # a pod's Kubernetes service account: RBAC decides
                req.member, req.user = "", kuberbac.user_name(req.account)
            else:
                identity = self.world.identify(req.headers.get("Authorization"))
                req.member, req.user = identity.member, self.kube_user(identity)
            info.caller = (
                req.user
                if req.user.startswith(("user:", "serviceAccount:"))
                else f"serviceAccount:{req.user}"
            )
            if req.path.startswith("/openapi/"):
                return self._openapi(req)
            with self.world.lock:
                listing = discovery(req.path, self.api.rec["endpoint"], req.accept)
            if listing is not None:
                return Reply(200, listing[0], content_type=listing[1])
            return self._resource(req, alive)

    def kube_user(self, identity: Identity) -> str:
        """The member as GKE names it in Kubernetes: a service account's email only when its token
        carries the userinfo.email scope, else the account's numeric unique ID (IAM still decides)."""
        member = identity.member
        if (
            not member.startswith("serviceAccount:")
            or identity.scopes is None
            or USERINFO_EMAIL in identity.scopes
        ):
            return member
        from .iam import _accounts

        with self.world.lock:
            sa = _accounts(self.world).get(member.split(":", 1)[1])
        return str(sa["unique_id"]) if sa else member

    # ---- OpenAPI ------------------------------------------------------------------------------------
    def _openapi(self, req: Request) -> Reply:
        if req.path == "/openapi/v2":
            accept = req.accept
            if accept and "json" not in accept and "*/*" not in accept:
                raise kube_error(
                    406,
                    "NotAcceptable",
                    "only application/json is served at /openapi/v2 by the sdcluster emulator "
                    "(kubectl reads /openapi/v3)",
                )
            return Reply(200, kubeopenapi.v2_document())
        if req.path == "/openapi/v3":
            return Reply(200, kubeopenapi.v3_index())
        doc = kubeopenapi.v3_document(req.path.removeprefix("/openapi/v3/"))
        if doc is None:
            raise kube_error(404, "NotFound", NO_ROUTE)
        # A document named by its hash never changes: clients keep it (kube-openapi's handler does so).
        cache = "public, immutable" if req.query.get("hash") else "no-cache, private"
        return Reply(200, doc, headers={"Cache-Control": cache})

    # ---- resources ----------------------------------------------------------------------------------
    def _resource(self, req: Request, alive: Callable[[], bool]) -> Reply:
        m = PATH.match(req.path)
        kind = (
            BY_PATH.get(("", "v1", m["plural"]) if m["core"] else (m["group"], m["version"], m["plural"]))
            if m
            else None
        )
        if m is None or kind is None or (m["ns"] and not kind.namespaced):
            raise kube_error(404, "NotFound", NO_ROUTE)
        ns, name, sub = m["ns"] or "", m["name"] or "", m["sub"] or ""
        verb = _VERBS[req.verb]
        if req.verb == "GET" and not name:
            verb = "watch" if req.flag("watch") else "list"
        elif req.verb == "DELETE" and not name:
            verb = "deletecollection"
        subresource = kind.subresource(sub) if sub else None
        if sub and (not name or subresource is None):
            raise kube_error(404, "NotFound", NO_ROUTE)
        if verb not in (subresource.verbs if subresource else kind.verbs):
            raise kube_error(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({kind.resource})",
            )
        self._authorize(req, kind, verb, ns, name, sub)
        if kind.kind == "SelfSubjectAccessReview":
            return Reply(201, self._review(req))
        if sub:
            return self._subresource(req, kind, ns, name, sub, alive)
        if verb == "watch":
            return self._watch(req, kind, ns, alive)
        if req.verb == "GET":
            return self._read(req, kind, ns, name)
        return self._write(req, kind, ns, name)

    def _authorize(self, req: Request, kind: Kind, verb: str, ns: str, name: str, sub: str = "") -> None:
        """GKE authorizes through IAM: ``container.<resource>.<verb>`` on the project."""
        if kind.kind == "SelfSubjectAccessReview":
            return  # every authenticated user may ask what they may do
        if req.account is not None:
            with self.world.lock:
                if kuberbac.allows(self.api.rec, req.account, kind, verb, ns, name, sub):
                    return
            message = kuberbac.forbidden_message(req.account, kind, verb, ns, name, sub)
            raise kube_error(403, "Forbidden", message, details(kind, name))
        needed = kubesub.permission(kind, verb, sub)
        if self.world.has_permission(req.member, needed, self.project):
            return
        user = req.user.split(":", 1)[-1]
        subject = f'{kind.resource} "{name}"' if name else kind.resource
        scope = f'in the namespace "{ns}"' if kind.namespaced and ns else "at the cluster scope"
        resource = f"{kind.plural}/{sub}" if sub else kind.plural
        raise kube_error(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API '
            f'group "{kind.group}" {scope}: requires one of ["{needed}"] permission(s).',
            details(kind, name),
        )

    def _read(self, req: Request, kind: Kind, ns: str, name: str) -> Reply:
        table = kubetables.wants_table(req.accept)
        include = req.query.get("includeObject", "")
        if include not in ("", "None", "Metadata", "Object"):
            raise bad_request(f'unrecognized includeObject value: "{include}"')
        with self.world.lock:
            if name:
                obj = self.api.get(kind, ns, name)
                body = (
                    kubetables.to_table(kind, [obj], self.world.now(), include or "Metadata")
                    if table
                    else obj
                )
                return Reply(200, body)
            listing = self.api.list_objects(kind, ns, req.query)
            if not table:
                return Reply(200, listing)
            items = [{"apiVersion": kind.api_version, "kind": kind.kind, **o} for o in listing["items"]]
            return Reply(
                200,
                kubetables.to_table(
                    kind, items, self.world.now(), include or "Metadata", listing["metadata"]
                ),
            )

    def _options(self, req: Request) -> WriteOptions:
        manager = req.query.get("fieldManager") or manager_from_agent(req.headers.get("User-Agent", ""))
        return WriteOptions(
            manager=manager,
            dry=dry_run(req.query.get("dryRun", "")),
            validation=field_validation(req.query),
            warnings=req.warnings,
        )

    def _write(self, req: Request, kind: Kind, ns: str, name: str) -> Reply:
        if req.verb == "DELETE":
            return self._delete(req, kind, ns, name)
        refuse_protobuf(req)
        opts = self._options(req)
        with self.world.lock:
            if req.verb == "POST":
                body = parse_body(req, opts.duplicates)
                return Reply(201, self.api.create(kind, ns, body, opts), warnings=opts.warnings)
            if req.verb == "PUT":
                body = parse_body(req, opts.duplicates)
                return Reply(200, self.api.replace(kind, ns, name, body, opts), warnings=opts.warnings)
            status, obj = self.api.patch(kind, ns, name, req.content_type, req.body, req.query, opts)
            return Reply(status, obj, warnings=opts.warnings)

    def _delete(self, req: Request, kind: Kind, ns: str, name: str) -> Reply:
        """DeleteOptions come from the body when it has one (kubectl sends dryRun and
        propagationPolicy there), else from the query, as upstream's delete handler reads them."""
        refuse_protobuf(req)
        if req.body.strip():
            options = parse_json(req.body)
            if not isinstance(options, dict):
                raise bad_request("decoded object cannot be converted to DeleteOptions")
            dry = dry_run(options.get("dryRun"))
        else:
            options = {k: req.query[k] for k in ("propagationPolicy", "gracePeriodSeconds") if k in req.query}
            dry = dry_run(req.query.get("dryRun", ""))
        with self.world.lock:
            if not name:
                return Reply(200, self.api.delete_collection(kind, ns, req.query, options, dry))
            if kind.plural == "pods":
                return Reply(200, self.api.delete_pod(ns, name, dry))
            return Reply(200, self.api.delete(kind, ns, name, options, dry))

    def _review(self, req: Request) -> dict[str, Any]:
        if req.content_type == PROTOBUF:
            try:
                review: Any = kubeproto.self_subject_access_review(req.body)
            except kubeproto.ProtoError as e:
                raise bad_request(f"error decoding protobuf: {e}") from None
        else:
            review = parse_body(req)
        with self.world.lock:
            return kubesub.access_review(self.api, req.member, review)

    # ---- subresources -----------------------------------------------------------------------------------
    def _subresource(
        self, req: Request, kind: Kind, ns: str, name: str, sub: str, alive: Callable[[], bool]
    ) -> Reply:
        if sub in ("exec", "attach", "portforward"):
            with self.world.lock:
                self.api.get(kind, ns, name)  # a missing pod is still 404
            kubesub.refuse_connect(kind, name, sub)
        if sub == "log":
            with self.world.lock:
                lines = kubesub.pod_log(self.api, ns, name, req.query)
                if not req.flag("follow"):
                    return Reply(200, "".join(f"{line}\n" for line in lines))
                read = kubesub.follow_reader(self.api, ns, name, req.query)
            return Reply(
                200, stream=kubewatch.log_stream(read, alive, self.stopping), content_type="text/plain"
            )
        if sub == "status":
            return self._read(req, kind, ns, name)
        if sub == "scale":
            refuse_protobuf(req)
            with self.world.lock:
                current = kubesub.get_scale(self.api, ns, name)
                if req.verb == "GET":
                    return Reply(200, current)
                opts = self._options(req)
                if req.verb == "PUT":
                    scale = parse_body(req)
                else:
                    scale = self.api.patched(kind, name, current, req.content_type, req.body)
                return Reply(
                    200, kubesub.update_scale(self.api, ns, name, scale, opts), warnings=opts.warnings
                )
        raise kube_error(404, "NotFound", NO_ROUTE)

    # ---- watch ------------------------------------------------------------------------------------------
    def _watch(self, req: Request, kind: Kind, ns: str, alive: Callable[[], bool]) -> Reply:
        q = req.query
        matches = matcher(kind, q)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds", "").isdigit() else 1800.0
        table = kubetables.wants_table(req.accept)
        include = q.get("includeObject", "") or "Metadata"
        headers = [True]

        def encode(etype: str, obj: dict[str, Any]) -> bytes:
            if table and etype != "BOOKMARK":
                obj = kubetables.to_table(kind, [obj], self.world.now(), include, {}, headers=headers[0])
                headers[0] = False  # column definitions come with the first event only
            return json.dumps({"type": etype, "object": obj}).encode() + b"\n"

        spec = kubewatch.WatchSpec(
            kind=kind,
            ns=ns,
            matches=matches,
            rv=q.get("resourceVersion", ""),
            initial_events=req.flag("sendInitialEvents"),
            bookmarks=req.flag("allowWatchBookmarks"),
            timeout_s=timeout,
            encode=encode,
        )
        if spec.initial_events and q.get("resourceVersionMatch") != "NotOlderThan":
            raise kube_error(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )
        with self.world.lock:
            if spec.rv not in ("", "0") and not spec.initial_events:
                self.api.journal.since(
                    kind, int(spec.rv) if spec.rv.isdigit() else 0
                )  # 410 before the stream
        return Reply(200, stream=kubewatch.watch_stream(self.api, spec, alive, self.stopping))
