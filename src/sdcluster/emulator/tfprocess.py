"""One TensorFlow Serving 2.11 process in an emulated pod: start-up, file-system polling, loading.

What real TF Serving does (tensorflow/serving at 2.11.0), and so this process:

- ``model_servers/server.cc`` builds ``ServerCore`` before it starts the gRPC and REST servers, and
  ``ServerCore`` waits until the model's latest version is AVAILABLE (``core/load_servables_fast.cc``).
  So **nothing listens until the first version has loaded**; if that version fails for good, start-up
  fails (``Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: ...``) and
  the process exits 255 (``main.cc`` returns -1).
- ``sources/storage_path/file_system_storage_path_source.cc`` polls the base path every
  ``--file_system_poll_wait_seconds`` (1 s): a base path it cannot read or that does not exist is an
  error logged on every poll; no numeric child is a warning ("No versions of servable ... found under
  base path ..."); otherwise the **highest numeric version** is aspired (latest policy, one version).
- The loader (``core/loader_harness.cc`` + ``util/retrier.cc``) retries a failed load
  ``--max_num_load_retries`` (5) times, ``--load_retry_interval_micros`` (60 s) apart; a version still
  failing ends in state END with its error, and is not retried (errored versions are not reloaded).
  A version without ``saved_model.pb``/``.pbtxt`` fails with TF's ``NOT_FOUND: Could not find
  SavedModel .pb or .pbtxt at supplied export directory path: ...``.
- A newer version is loaded while the old one serves, then the old one is unloaded
  (AvailabilityPreservingPolicy, ``server.cc``).

The process is a JSON-able dict (it lives in the emulator's state), advanced by two calls: ``apply_read``
with what a read of the bucket returned (done outside the emulator's lock, as the pod's identity) and
``advance`` (time passes: loads complete). Intervals come from the container's flags, scaled by the
emulator's ``tfserving_scale``; loading takes ``model_load_s``.

Example::

    proc = start(parse_flags(["--model_name=sd", "--model_base_path=gs://b/m"], {}), now, 0.05, 0.3)
    due(proc, now)                       # True: poll the bucket now
    apply_read(proc, read_model_dir(reader, "gs://b/m", wants_attempt(proc)), now)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import tfmetrics
from .tfserving import Servable, VersionStatus

POLL_S = 1.0  # --file_system_poll_wait_seconds (Server::Options default, server.h)
RETRY_S = 60.0  # --load_retry_interval_micros (1 minute)
MAX_RETRIES = 5  # --max_num_load_retries
REST_TIMEOUT_MS = 30000  # --rest_api_timeout_in_ms
GRPC_PORT = 8500
MAX_LOG_LINES = 400  # what the emulated kubelet keeps of one container's log
_PB = ("saved_model.pb", "saved_model.pbtxt")
_SHARD = re.compile(r"^variables/variables\.data-(\d{5})-of-(\d{5})$")


# --------------------------------------------------------------------------------------------------
# Flags: the container's command line, as the tensorflow/serving image builds it


@dataclass(frozen=True)
class Flags:
    model_name: str
    base_path: str
    grpc_port: int = GRPC_PORT
    rest_port: int = 0
    rest_timeout_ms: int = REST_TIMEOUT_MS
    poll_s: float = POLL_S
    retry_s: float = RETRY_S
    max_retries: int = MAX_RETRIES
    monitoring_config_file: str = ""


def parse_flags(argv: list[str], env: dict[str, str], command: list[str] | None = None) -> Flags:
    """The flags ``tensorflow_model_server`` runs with in a container.

    Without ``command`` the image's entrypoint runs ``tensorflow_model_server --port=8500
    --rest_api_port=8501 --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}
    "$@"`` (MODEL_NAME=model, MODEL_BASE_PATH=/models; tools/docker/Dockerfile), so ``args`` come
    last and win.
    """
    if command:
        words = [*command[1:], *argv]
    else:
        name = env.get("MODEL_NAME", "model")
        base = env.get("MODEL_BASE_PATH", "/models")
        words = [
            "--port=8500",
            "--rest_api_port=8501",
            f"--model_name={name}",
            f"--model_base_path={base}/{name}",
            *argv,
        ]
    values: dict[str, str] = {}
    i = 0
    while i < len(words):
        w = words[i].lstrip("-")
        if "=" in w:
            key, value = w.split("=", 1)
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            key, value = w, words[i + 1]
            i += 1
        else:
            key, value = w, "true"
        values[key] = value
        i += 1

    def number(key: str, default: float) -> float:
        try:
            return float(values[key]) if key in values else default
        except ValueError:
            return default

    return Flags(
        model_name=values.get("model_name", "default"),
        base_path=values.get("model_base_path", ""),
        grpc_port=int(number("port", GRPC_PORT)),
        rest_port=int(number("rest_api_port", 0)),
        rest_timeout_ms=int(number("rest_api_timeout_in_ms", REST_TIMEOUT_MS)),
        poll_s=number("file_system_poll_wait_seconds", POLL_S),
        retry_s=number("load_retry_interval_micros", RETRY_S * 1e6) / 1e6,
        max_retries=int(number("max_num_load_retries", MAX_RETRIES)),
        monitoring_config_file=values.get("monitoring_config_file", ""),
    )


# --------------------------------------------------------------------------------------------------
# Reading the model directory as the pod's identity


class ReadError(Exception):
    """A failed read, in the words TF's file systems use (``PERMISSION_DENIED: Error executing ...``)."""


class GcsReader:
    """Cloud Storage's JSON API at ``address`` with one bearer token (the pod's identity)."""

    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.token = token

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        url = f"http://{self.address}/storage/v1/{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return json.loads(r.read() or b"{}")  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            raise ReadError(_http_status_text(e.code, body)) from None
        except OSError as e:
            raise ReadError(
                f"UNAVAILABLE: Error executing an HTTP request: libcurl code 7 meaning '{e}'"
            ) from None

    def names(self, bucket: str, prefix: str) -> list[str]:
        """Every object name below ``prefix`` (all pages)."""
        names: list[str] = []
        query = {"prefix": prefix, "fields": "items/name,nextPageToken"}
        while True:
            page = self._get(f"b/{urllib.parse.quote(bucket, safe='')}/o", query)
            names += [str(o["name"]) for o in page.get("items") or []]
            if not page.get("nextPageToken"):
                return names
            query["pageToken"] = str(page["nextPageToken"])

    def stat(self, bucket: str, name: str) -> None:
        """The object's metadata exists and can be read (ReadError otherwise)."""
        self._get(f"b/{urllib.parse.quote(bucket, safe='')}/o/{urllib.parse.quote(name, safe='')}", {})


def _http_status_text(status: int, body: str) -> str:
    """TF's curl_http_request.cc: ``Error executing an HTTP request: HTTP response code N with body '...'``."""
    code = {
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        412: "FAILED_PRECONDITION",
    }.get(status, "UNAVAILABLE")
    return f"{code}: Error executing an HTTP request: HTTP response code {status} with body '{body[:500]}'"


@dataclass
class Listing:
    """What one poll read: ``error`` (the base path's read failed), else object names below it and,
    for each version whose load is attempted, "" (saved_model.pb readable) or the read's error."""

    error: str = ""
    names: list[str] = field(default_factory=list)
    pb: dict[int, str] = field(default_factory=dict)


def split_gs(path: str) -> tuple[str, str]:
    """``gs://b/a/b/`` -> ``("b", "a/b")``."""
    bucket, _, prefix = path.removeprefix("gs://").partition("/")
    return bucket, prefix.strip("/")


def read_model_dir(reader: GcsReader | None, base: str, attempt: set[int] | None) -> Listing:
    """List ``base`` (FileExists + GetChildren) and, for the highest version, when its load is due
    (``attempt`` None: any new version; else the versions whose retry is due), stat its SavedModel."""
    if not base.startswith("gs://") or reader is None:
        return Listing(error=f"NOT_FOUND: {base} not found")  # nothing of the model lives in the container
    bucket, prefix = split_gs(base)
    try:
        names = reader.names(bucket, f"{prefix}/" if prefix else "")
    except ReadError as e:
        return Listing(error=f"{e} when reading metadata of {base}")
    if not names:
        return Listing(error=f"NOT_FOUND: The specified path {base} was not found.")
    rel = [n[len(prefix) + 1 :] if prefix else n for n in names]
    listing = Listing(names=rel)
    top = max(versions_in(rel), default=None)
    if top is not None and (attempt is None or top in attempt):
        listing.pb[top] = _stat_pb(reader, bucket, prefix, top, rel)
    return listing


def _stat_pb(reader: GcsReader, bucket: str, prefix: str, version: int, rel: list[str]) -> str:
    for pb in _PB:
        if f"{version}/{pb}" in rel:
            try:
                reader.stat(bucket, f"{prefix}/{version}/{pb}" if prefix else f"{version}/{pb}")
            except ReadError as e:
                return str(e)
            return ""
    return "missing"


def versions_in(names: list[str]) -> list[int]:
    """Numeric children of the base path (TF's ParseVersionNumber: non-numeric ones are skipped)."""
    out = set()
    for n in names:
        child = n.split("/", 1)[0]
        if child.isdigit():
            out.add(int(child))
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# The process


def _log(proc: dict[str, Any], now: float, sev: str, where: str, message: str) -> None:
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    proc["log"].append(f"{stamp}: {sev} {where}] {message}")
    del proc["log"][:-MAX_LOG_LINES]


def _sid(proc: dict[str, Any], version: int) -> str:
    return f"{{name: {proc['model']} version: {version}}}"


def start(flags: Flags, now: float, scale: float, load_s: float, prometheus_path: str = "") -> dict[str, Any]:
    """A freshly started ``tensorflow_model_server`` (it polls at once). ``prometheus_path``: where
    its REST port serves the metrics (``tfmetrics.prometheus_path`` of its monitoring config)."""
    proc: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "prometheus_path": prometheus_path,
        "model": flags.model_name,
        "base": flags.base_path.rstrip("/"),
        "grpc_port": flags.grpc_port,
        "rest_port": flags.rest_port,
        "rest_timeout_ms": flags.rest_timeout_ms,
        "poll_s": max(flags.poll_s, 0.0) * scale,
        "retry_s": max(flags.retry_s, 0.0) * scale,
        "max_retries": flags.max_retries,
        "load_s": load_s,
        "next_poll": now,
        "listening": False,
        "exit": None,
        "versions": {},
        "log": [],
    }
    _log(
        proc,
        now,
        "I",
        "tensorflow_serving/model_servers/server.cc:74",
        f"Building single TensorFlow model file config:  model_name: {flags.model_name} "
        f"model_base_path: {flags.base_path}",
    )
    _log(proc, now, "I", "tensorflow_serving/model_servers/server_core.cc:465", "Adding/updating models.")
    _log(
        proc,
        now,
        "I",
        "tensorflow_serving/model_servers/server_core.cc:594",
        f" (Re-)adding model: {flags.model_name}",
    )
    return proc


def due(proc: dict[str, Any], now: float) -> bool:
    """Whether the file-system poll should run now."""
    return proc["exit"] is None and now >= proc["next_poll"]


def wants_attempt(proc: dict[str, Any], now: float) -> set[int]:
    """Versions known to the process whose next load attempt is due."""
    return {
        int(v)
        for v, s in proc["versions"].items()
        if s["state"] == "LOADING" and not s.get("ready_at") and now >= s.get("next_try", 0)
    }


def apply_read(proc: dict[str, Any], listing: Listing, now: float) -> None:
    """What the poll saw: log it, aspire the highest version, attempt its load."""
    proc["next_poll"] = now + proc["poll_s"] if proc["poll_s"] > 0 else float("inf")
    src = "tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc"
    if listing.error:
        _log(
            proc,
            now,
            "E",
            f"{src}:353",
            f"FileSystemStoragePathSource encountered a filesystem access error: Could not find base path "
            f"{proc['base']} for servable {proc['model']} with error {listing.error}",
        )
        return
    versions = versions_in(listing.names)
    if not versions:
        _log(
            proc,
            now,
            "W",
            f"{src}:252",
            f"No versions of servable {proc['model']} found under base path {proc['base']}. Did you forget to "
            "name your leaf directory as a number (eg. '/1/')?",
        )
        return
    top = versions[-1]
    if str(top) not in proc["versions"]:
        harness = "tensorflow_serving/core/loader_harness.cc"
        for older in proc["versions"].values():  # no longer aspired: its load is cancelled
            if older["state"] == "LOADING":
                older.update(state="END", error=["CANCELLED", "Loading of servable cancelled"])
                older.pop("ready_at", None)
        proc["versions"][str(top)] = {"state": "LOADING", "tries": 0, "next_try": now, "error": ["OK", ""]}
        _log(proc, now, "I", f"{harness}:66", f"Approving load for servable version {_sid(proc, top)}")
        _log(proc, now, "I", f"{harness}:74", f"Loading servable version {_sid(proc, top)}")
    state = proc["versions"][str(top)]
    if top in listing.pb and state["state"] == "LOADING" and not state.get("ready_at"):
        _attempt(proc, top, listing, now)


def _attempt(proc: dict[str, Any], version: int, listing: Listing, now: float) -> None:
    state = proc["versions"][str(version)]
    where = f"{proc['base']}/{version}"
    if state["tries"]:
        _log(
            proc,
            now,
            "I",
            "tensorflow_serving/util/retrier.cc:33",
            f"Retrying of Loading servable: {_sid(proc, version)} retry: {state['tries']}",
        )
    error = _load_error(version, listing, where)
    if not error:
        _log(
            proc,
            now,
            "I",
            "external/org_tensorflow/tensorflow/cc/saved_model/reader.cc:45",
            f"Reading SavedModel from: {where}",
        )
        state["ready_at"] = now + proc["load_s"]
        return
    state["tries"] += 1
    _log(
        proc,
        now,
        "E",
        "tensorflow_serving/util/retrier.cc:37",
        f"Loading servable: {_sid(proc, version)} failed: {error}",
    )
    if state["tries"] <= proc["max_retries"]:
        state["next_try"] = now + proc["retry_s"]
        return
    code, _, message = error.partition(": ")
    state.update(state="END", error=[code, message])
    _log(
        proc,
        now,
        "I",
        "tensorflow_serving/util/retrier.cc:46",
        f"Retrying of Loading servable: {_sid(proc, version)} exhausted max_num_load_retries: {proc['max_retries']}",
    )
    _log(
        proc,
        now,
        "I",
        "tensorflow_serving/core/loader_harness.cc:169",
        f"Encountered an error for servable version {_sid(proc, version)}: {error}",
    )
    if not proc["listening"]:
        # ServerCore::Create failed: main() prints this and returns -1.
        proc["exit"] = {
            "code": 255,
            "message": (
                f"Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
                f"{{{_sid(proc, version)} due to error: {error}}}, "
            ),
        }
        proc["log"].append(proc["exit"]["message"])


def _load_error(version: int, listing: Listing, where: str) -> str:
    """Why loading the SavedModel under ``where`` fails ("" if it loads)."""
    if listing.pb.get(version, "missing"):
        # The reader checks FileExists(...).ok(): a file it may not read is "not found" too.
        return (
            f"NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: {where}"
        )
    files = {n.split("/", 1)[1] for n in listing.names if n.startswith(f"{version}/") and "/" in n}
    if "variables/variables.index" not in files:
        return ""  # a SavedModel without variables restores nothing and loads
    shards = [m for m in map(_SHARD.match, files) if m]
    total = int(shards[0].group(2)) if shards else 1
    for i in range(total):
        name = f"variables/variables.data-{i:05d}-of-{total:05d}"
        if name not in files:
            return f"NOT_FOUND: {where}/{name}; No such file or directory"
    return ""


def advance(proc: dict[str, Any], now: float) -> None:
    """Loads whose time has come are AVAILABLE; the first one opens the ports; older versions unload."""
    for v, state in sorted(proc["versions"].items(), key=lambda kv: int(kv[0])):
        ready_at = state.get("ready_at")
        if state["state"] != "LOADING" or not ready_at or now < ready_at:
            continue
        version = int(v)
        state["state"] = "AVAILABLE"
        state.pop("ready_at")
        micros = int(proc["load_s"] * 1e6)
        _log(
            proc,
            now,
            "I",
            "external/org_tensorflow/tensorflow/cc/saved_model/loader.cc:325",
            f"SavedModel load for tags {{ serve }}; Status: success: OK. Took {micros} microseconds.",
        )
        _log(
            proc,
            now,
            "I",
            "tensorflow_serving/core/loader_harness.cc:95",
            f"Successfully loaded servable version {_sid(proc, version)}",
        )
        if not proc["listening"]:
            proc["listening"] = True
            _log(
                proc,
                now,
                "I",
                "tensorflow_serving/model_servers/server.cc:409",
                f"Running gRPC ModelServer at 0.0.0.0:{proc['grpc_port']} ...",
            )
            if proc["rest_port"]:
                _log(
                    proc,
                    now,
                    "I",
                    "tensorflow_serving/model_servers/server.cc:430",
                    f"Exporting HTTP/REST API at:localhost:{proc['rest_port']} ...",
                )
        for old, old_state in proc["versions"].items():
            if int(old) < version and old_state["state"] == "AVAILABLE":
                harness = "tensorflow_serving/core/loader_harness.cc"
                old_state["state"] = "END"
                for line, msg in (
                    (152, "Quiescing servable version"),
                    (159, "Done quiescing servable version"),
                    (119, "Unloading just-loaded servable version"),
                    (127, "Done unloading servable version"),
                ):
                    _log(proc, now, "I", f"{harness}:{line}", f"{msg} {_sid(proc, int(old))}")


def listens(proc: dict[str, Any] | None, port: int) -> bool:
    """Whether the process accepts connections on ``port`` (only after the first version loaded)."""
    if proc is None or proc["exit"] is not None or not proc["listening"]:
        return False
    return port in (proc["grpc_port"], proc["rest_port"])


def servable(proc: dict[str, Any], predict_s_per_step: float) -> Servable:
    """What the process's REST API answers from right now."""
    versions = {
        int(v): VersionStatus(s["state"], s["error"][0], s["error"][1]) for v, s in proc["versions"].items()
    }
    return Servable(
        proc["model"],
        versions,
        proc["rest_timeout_ms"],
        predict_s_per_step,
        metrics=tfmetrics.of_process(str(proc.get("id", ""))),
        prometheus_path=str(proc.get("prometheus_path", "")),
    )
