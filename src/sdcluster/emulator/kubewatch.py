"""Watch: one change journal per cluster, and the streams that serve it (``?watch=true`` and
``pods/NAME/log?follow=true``).

The journal compares each kind's objects (stored, or kept by the controllers) with what it saw last
and records ADDED / MODIFIED / DELETED events, each at a resourceVersion: the object's own when it
moved past the last one recorded for the kind, else a fresh one (a controller changed a status).
It syncs a kind whenever the store writes or reads it, and every kind on each tick while someone
watches the cluster. A watch from a resourceVersion replays what came after it; one older than the
journal's memory of the kind is 410 Expired (the client lists again), as from an apiserver whose
watch cache has moved on. ``sendInitialEvents=true`` (client-go's watch-list) starts with the
current objects and a bookmark annotated ``k8s.io/initial-events-end``.

Example (under ``world.lock``)::

    journal.sync(api, [BY_PLURAL["pods"]])
    events = journal.since("pods", 42)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .kubeerrors import kube_error
from .kubekinds import KINDS, Kind

if TYPE_CHECKING:
    from .kubestore import ClusterApi

HISTORY = 4096  # events kept per cluster (the watch cache's window)
WATCHED_RECENTLY_S = 30.0  # ticks sync every kind while a watch ended less than this ago
BOOKMARK_S = 30.0


@dataclass
class Event:
    rv: int
    plural: str
    type: str  # ADDED MODIFIED DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the object before a MODIFIED (selectors may stop or start matching)


def _fingerprint(obj: dict[str, Any]) -> str:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return json.dumps({**obj, "metadata": meta}, sort_keys=True, default=str)


def _oid(obj: dict[str, Any]) -> str:
    ns = obj["metadata"].get("namespace")
    return f"{ns}/{obj['metadata']['name']}" if ns else str(obj["metadata"]["name"])


class Journal:
    """The change feed of one cluster (in memory: a restarted emulator starts a new one)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}  # plural -> oid -> (print, obj)
        self.last: dict[str, int] = {}  # plural -> newest rv recorded
        self.floor: dict[str, int] = {}  # plural -> rv up to which history is unknown
        self.events: deque[Event] = deque()
        self.changed = threading.Condition()
        self.generation = 0
        self.watchers: dict[str, int] = {}  # plural -> open watches
        self.watched_at: dict[str, float] = {}  # plural -> when its last watch ended

    def watched(self) -> list[Kind]:
        """The kinds someone watches, or watched a moment ago (a client between two watches)."""
        now = time.monotonic()
        return [
            k
            for k in KINDS
            if self.watchers.get(k.plural) or now - self.watched_at.get(k.plural, -1e9) < WATCHED_RECENTLY_S
        ]

    def sync(self, api: ClusterApi, kinds: list[Kind]) -> None:
        """Record what changed in ``kinds``. Call under world.lock."""
        appended = False
        for kind in kinds:
            appended |= self._sync_kind(api, kind)
        if appended:
            self._notify()

    def _sync_kind(self, api: ClusterApi, kind: Kind) -> bool:
        current = {_oid(o): o for o in api.current(kind)}
        first = kind.plural not in self.seen
        seen = self.seen.setdefault(kind.plural, {})
        if first:
            self.floor[kind.plural] = self.last[kind.plural] = int(api.rec.get("rv", 1))
        changes: list[tuple[int, str, dict[str, Any], dict[str, Any] | None]] = []
        for oid, obj in current.items():
            # A stored object changes only with a new resourceVersion; what controllers keep, by content.
            fp = str(obj["metadata"].get("resourceVersion")) if kind.writable else _fingerprint(obj)
            before = seen.get(oid)
            if before is not None and before[0] == fp:
                continue
            rv = int(obj["metadata"].get("resourceVersion") or 0)
            if first:
                rv = max(rv, 1)
            elif rv <= self.last[kind.plural]:
                rv = int(api.bump_version())
            stamped = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
            seen[oid] = (fp, stamped)
            if not first:
                changes.append((rv, "ADDED" if before is None else "MODIFIED", stamped, before and before[1]))
        for oid in [o for o in seen if o not in current]:
            _, obj = seen.pop(oid)
            rv = int(api.rec.get("rv", 1))
            if rv <= self.last[kind.plural]:
                rv = int(api.bump_version())
            gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
            changes.append((rv, "DELETED", gone, None))
        for rv, etype, obj, old in sorted(changes, key=lambda c: c[0]):
            self._append(Event(rv, kind.plural, etype, obj, old))
            self.last[kind.plural] = max(self.last[kind.plural], rv)
        return bool(changes)

    def _append(self, event: Event) -> None:
        self.events.append(event)
        while len(self.events) > HISTORY:
            dropped = self.events.popleft()
            self.floor[dropped.plural] = max(self.floor.get(dropped.plural, 0), dropped.rv)

    def objects(self, api: ClusterApi, kind: Kind) -> dict[str, dict[str, Any]]:
        """The current objects of ``kind`` by oid, versions as the journal stamped them."""
        if self._sync_kind(api, kind):
            self._notify()
        return {oid: obj for oid, (_, obj) in self.seen[kind.plural].items()}

    def _notify(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def since(self, kind: Kind, rv: int) -> list[Event]:
        """The events of ``kind`` after ``rv``; 410 when the journal no longer knows that far back."""
        if rv < self.floor.get(kind.plural, 0):
            raise kube_error(
                410,
                "Expired",
                f"too old resource version: {rv} ({self.floor[kind.plural]})",
            )
        return [e for e in self.events if e.plural == kind.plural and e.rv > rv]


# ---- streams ----------------------------------------------------------------------------------------


@dataclass
class WatchSpec:
    """What one watch request asked for."""

    kind: Kind
    ns: str
    matches: Callable[[dict[str, Any]], bool]
    rv: str  # "" / "0": start with the current objects; else replay after it
    initial_events: bool  # sendInitialEvents=true: current objects, then the end bookmark
    bookmarks: bool
    timeout_s: float
    encode: Callable[[str, dict[str, Any]], bytes]  # (type, object) -> one framed event


def watch_stream(
    api: ClusterApi, spec: WatchSpec, alive: Callable[[], bool], stopping: threading.Event
) -> Iterator[bytes]:
    """The events of one watch as framed chunks, until the client leaves, the timeout passes or the
    cluster stops. Yields under no lock."""
    journal = api.journal
    world = api.world
    deadline = time.monotonic() + spec.timeout_s
    in_scope = _scope(spec)
    with world.lock:
        current = sorted(journal.objects(api, spec.kind).values(), key=_oid)
        list_rv = int(api.rec.get("rv", 1))
        start: list[tuple[str, dict[str, Any]]] = []
        if spec.initial_events or spec.rv in ("", "0"):
            start = [("ADDED", o) for o in current if in_scope(o)]
            cursor = list_rv
        else:
            cursor = int(spec.rv) if spec.rv.isdigit() else list_rv
            start = [pair for e in journal.since(spec.kind, cursor) if (pair := _filtered(e, in_scope))]
            cursor = max([cursor, *(int(o["metadata"]["resourceVersion"]) for _, o in start)])
        journal.watchers[spec.kind.plural] = journal.watchers.get(spec.kind.plural, 0) + 1
    try:
        for etype, obj in start:
            yield spec.encode(etype, obj)
        if spec.initial_events:
            yield spec.encode("BOOKMARK", _bookmark(spec.kind, cursor, end=True))
        last_bookmark = time.monotonic()
        while not stopping.is_set() and time.monotonic() < deadline:
            with world.lock:
                if world.data.get("kube", {}).get(api.key) is None:
                    return
                generation = journal.generation
                events = journal.since(spec.kind, cursor)
            for event in events:
                cursor = event.rv
                pair = _filtered(event, in_scope)
                if pair is not None:
                    yield spec.encode(*pair)
            if spec.bookmarks and time.monotonic() - last_bookmark > BOOKMARK_S:
                last_bookmark = time.monotonic()
                yield spec.encode("BOOKMARK", _bookmark(spec.kind, cursor, end=False))
            if not alive():
                return
            with journal.changed:
                if journal.generation == generation:
                    journal.changed.wait(0.25)
    finally:
        with world.lock:
            journal.watchers[spec.kind.plural] -= 1
            journal.watched_at[spec.kind.plural] = time.monotonic()


def _scope(spec: WatchSpec) -> Callable[[dict[str, Any]], bool]:
    return lambda o: (not spec.ns or o["metadata"].get("namespace") == spec.ns) and spec.matches(o)


def _filtered(event: Event, in_scope: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """The event as a watcher with selectors sees it: an object that starts to match is ADDED, one
    that stops matching is DELETED."""
    now = in_scope(event.obj)
    if event.type != "MODIFIED" or event.old is None:
        return (event.type, event.obj) if now else None
    before = in_scope(event.old)
    if now and before:
        return "MODIFIED", event.obj
    if now:
        return "ADDED", event.obj
    if before:
        return "DELETED", event.obj
    return None


def _bookmark(kind: Kind, rv: int, end: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}


def log_stream(
    read: Callable[[], tuple[list[str], bool]], alive: Callable[[], bool], stopping: threading.Event
) -> Iterator[bytes]:
    """``logs -f``: the lines ``read`` returns (all so far, and whether the container still runs),
    as they come, until the container stops or the client leaves."""
    sent = 0
    while not stopping.is_set():
        lines, running = read()
        if len(lines) < sent:  # the log restarted (a new incarnation): the stream of the old one ends
            return
        if len(lines) > sent:
            yield "".join(f"{line}\n" for line in lines[sent:]).encode()
            sent = len(lines)
        if not running or not alive():
            return
        time.sleep(0.2)
