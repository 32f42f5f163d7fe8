"""A stand-in for TensorFlow Serving 2.11's REST API, serving a SYNTHETIC "Stable Diffusion" model.

!!! THE IMAGES ARE SYNTHETIC. There is no diffusion model here: each image is a smooth colour
pattern plus noise, seeded from a hash of the request's tokens, negative-prompt tokens, num_steps and
the image's index in the batch. Same request, same pixels; different prompt, different pixels; more
steps, less noise. It exists so that the client code (``sdcluster generate``) is exercised over real
HTTP against TF Serving's exact request/response JSON, error bodies and status codes. !!!

The emulated Kubernetes API (``kube.py``) starts one ``ModelServer`` per LoadBalancer Service that
has a ready TF Serving pod behind it (none ready: nothing listens there, connections are refused, as
kube-proxy rejects them for a Service without endpoints). It answers from that pod's process
(``tfprocess.py``: the model read from Cloud Storage as the pod's identity, TF Serving's start-up).

Routes (TF Serving's own regexes, case-insensitive, query string ignored):

- ``GET /v1/models/<name>[/versions/<n>]``: model status, 200
  ``{"model_version_status": [{"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK",
  "error_message": ""}}, {"version": "1", "state": "END", ...}]}``, newest version first (a version
  still loading is ``LOADING``, a failed one ``END`` with its error). Unknown model: 404 ``Could not
  find any versions of model X`` (predict and metadata say ``Servable not found for request:
  Latest(X)``); unknown version: 404 ``Could not find version N of model X``.
- ``GET /v1/models/<name>[/versions/<n>]/metadata``: the signature_def below.
- ``POST /v1/models/<name>[/versions/<n>]:predict``: row format ``{"signature_name":
  "serving_default", "instances": [{"tokens": [77 ints], "negative_prompt_tokens": [77 ints],
  "num_steps": 25, "batch_size": 2}]}`` -> ``{"predictions": [image, image]}``; or columnar format
  ``{"inputs": {"tokens": [[77 ints]], "negative_prompt_tokens": [[...]], "num_steps": [25],
  "batch_size": [2]}}`` -> ``{"outputs": [image, image]}`` (TF Serving names the key after the
  request format). An image is uint8 ``[H][W][3]`` (list of rows of ``[r, g, b]``).

How batches map onto ``predictions``: the model's one output, ``images``, is a ``[N, H, W, 3]`` uint8
tensor holding ``batch_size`` images for each instance, in instance order (N = sum of batch_size).
TF Serving's row format splits the single output along its first dimension, so ``predictions`` is a
flat list of N images, each ``H x W x 3`` (one instance with batch_size 3 -> 3 predictions).

Signature ``serving_default`` (all DT_INT32): ``tokens`` and ``negative_prompt_tokens`` ``[-1, 77]``
(CLIP token ids in ``[0, 49408)``), ``num_steps`` ``[-1]`` (1..1000), ``batch_size`` ``[-1]`` (1..8).
Errors are TF Serving's: HTTP status from the gRPC code (INVALID_ARGUMENT/FAILED_PRECONDITION -> 400,
NOT_FOUND -> 404, UNAVAILABLE -> 503) and body ``{"error": "..."}``. The JSON-decoding messages
(``JSON Parse error: Invalid value. at offset: 0``, ``Missing 'inputs' or 'instances' key``,
``Failed to process element: 0 key: foo of 'instances' list. Error: ...``) follow TF Serving's
``json_tensor.cc``; the model-level messages (shapes, value ranges) are plausible TF wording. As in
TF Serving, a key the signature lacks is rejected in ``instances`` and ignored in ``inputs``. Predict
for a version that is not AVAILABLE is 404 ``Servable not found for request: Specific(<name>, <n>)``.
Predict takes ``predict_s_per_step`` x steps x images of (synthetic) compute; longer than the
process's ``--rest_api_timeout_in_ms`` is TF Serving's 504 ``{"error": "Timed out waiting for
notification"}`` (the session's deadline, DEADLINE_EXCEEDED).

Image size: 512 x 512 like the real model, or ``image_size=`` (kwarg wins), or the
``SDCLUSTER_EMULATOR_IMAGE_SIZE`` environment variable when the kwarg is not given (how the demo and
tests shrink images without threading a knob through the Kubernetes emulator).

Example::

    server = ModelServer("127.0.3.7", 8501, lambda: Servable.loaded("stable-diffusion"), image_size=64)
    server.start()
    # POST http://127.0.3.7:8501/v1/models/stable-diffusion:predict
    server.stop()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import numpy.typing as npt

from . import tfmetrics
from .core import EmulatorError, World, invalid, not_found

IMAGE_SIZE_ENV = "SDCLUSTER_EMULATOR_IMAGE_SIZE"
DEFAULT_IMAGE_SIZE = 512
MAX_IMAGE_SIZE = 2048
SIGNATURE_NAME = "serving_default"
PROMPT_LENGTH = 77
VOCAB_SIZE = 49408  # CLIP's vocabulary: token ids index its embedding table
MAX_STEPS = 1000  # the diffusion schedule has 1000 timesteps
MAX_BATCH = 8

# Input name -> shape in the signature (-1: any batch size). Sorted, as TF Serving lists them.
INPUTS: dict[str, list[int]] = {
    "batch_size": [-1],
    "negative_prompt_tokens": [-1, PROMPT_LENGTH],
    "num_steps": [-1],
    "tokens": [-1, PROMPT_LENGTH],
}
_INT32 = (-(2**31), 2**31 - 1)

Images = npt.NDArray[np.uint8]

# --------------------------------------------------------------------------------------------------
# The synthetic model


def synthetic_images(
    tokens: list[int], negative_prompt_tokens: list[int], num_steps: int, batch_size: int, size: int
) -> Images:
    """``batch_size`` deterministic pseudo-images ``[batch_size, size, size, 3]`` for one prompt.

    Not a diffusion model: a colour gradient with a wave and a blob, plus noise that shrinks as
    ``num_steps`` grows. Image ``i`` depends only on the inputs and ``i`` (a fixed seed per prompt,
    as if the real model were seeded), so batch_size 1 and 4 share their first image.

    Example: ``synthetic_images([1] * 77, [0] * 77, 25, 2, 64).shape == (2, 64, 64, 3)``.
    """
    material = np.asarray([*tokens, -1, *negative_prompt_tokens, -1, num_steps], dtype="<i8").tobytes()
    seed = int.from_bytes(hashlib.sha256(material).digest()[:8], "little")
    return np.stack([_render(np.random.default_rng([seed, i]), size, num_steps) for i in range(batch_size)])


def _render(rng: np.random.Generator, size: int, num_steps: int) -> Images:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    c0, c1, c2 = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    angle, freq, phase = rng.uniform(0, 2 * np.pi), rng.uniform(1, 4), rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    cy, cx, radius = rng.uniform(0.2, 0.8, 3)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (radius / 2) ** 2))
    img = c0 * (1 - wave[..., None]) + c1 * wave[..., None]
    img = img * (1 - blob[..., None]) + c2 * blob[..., None]
    # Like a denoising schedule cut short: few steps leave visible noise.
    noise = rng.normal(0.0, 64.0 / np.sqrt(num_steps), img.shape).astype(np.float32)
    return _labelled(np.clip(img + noise, 0, 255).astype(np.uint8))


LABEL = ("SYNTHETIC IMAGE", "sdcluster emulator, not a model")


def _labelled(img: Images) -> Images:
    """The image with a dark band saying what it is, so a demo's output is never taken for the
    model's (images too small to read it on are left as they are)."""
    size = img.shape[0]
    if size < 96:
        return img
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(10, size // 16))
    picture = Image.fromarray(img)
    draw = ImageDraw.Draw(picture)
    line_h = int(font.size * 1.3) if isinstance(font, ImageFont.FreeTypeFont) else 12
    top = size - line_h * len(LABEL) - line_h // 2
    draw.rectangle((0, top, size, size), fill=(0, 0, 0))
    for i, text in enumerate(LABEL):
        draw.text((line_h // 2, top + line_h // 4 + i * line_h), text, fill=(255, 255, 255), font=font)
    return cast(Images, np.asarray(picture, dtype=np.uint8))


# --------------------------------------------------------------------------------------------------
# Fast JSON for uint8 tensors
#
# json.dumps(array.tolist()) of one 512x512x3 image takes ~115 ms; building the text with numpy takes
# ~20 ms (5.7x, measured side by side). Numbers are padded to three characters with spaces, which
# JSON allows, so every element has the same width and the brackets can be placed by array slicing.


def encode_uint8(array: Images) -> bytes:
    """JSON text of a uint8 array of rank >= 1, numbers space-padded.

    Example: ``encode_uint8(np.array([[1, 255]], np.uint8)) == b"[[  1,255]]"``.
    """
    a = np.asarray(array, dtype=np.uint8)
    chars = np.empty((*a.shape, 3), np.uint8)
    chars[..., 0] = np.where(a >= 100, ord("0") + a // 100, ord(" "))
    chars[..., 1] = np.where(a >= 10, ord("0") + (a // 10) % 10, ord(" "))
    chars[..., 2] = ord("0") + a % 10
    text = chars
    for _ in range(a.ndim):
        text = _bracket(text)
    return text.tobytes()


def _bracket(items: Images) -> Images:
    """(..., n, width) equal-width items -> (..., 1 + n * (width + 1)): ``[item,item,...]``."""
    *outer, n, width = items.shape
    if n == 0:
        return np.broadcast_to(np.frombuffer(b"[]", np.uint8), (*outer, 2)).copy()
    out = np.empty((*outer, n, width + 1), np.uint8)
    out[..., :width] = items
    out[..., width] = ord(",")
    out[..., -1, width] = ord("]")
    opening = np.full((*outer, 1), ord("["), np.uint8)
    return np.concatenate([opening, out.reshape(*outer, n * (width + 1))], axis=-1)


# --------------------------------------------------------------------------------------------------
# JSON request -> tensors, with TF Serving's (json_tensor.cc) checks and messages


def _json_value(value: Any) -> str:
    """How TF Serving quotes a JSON value in a message (rapidjson's PrettyWriter: 4-space indent)."""
    return json.dumps(value, indent=4)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def _status_string(error: EmulatorError) -> str:
    """``Status::ToString()`` of TF 2.11, which TF Serving embeds in wrapped messages."""
    return f"{error.code.name}: {error.message}"


def _dense_shape(value: Any) -> list[int]:
    """Shape read off the first element at each level, like ``GetDenseTensorShape``."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill_int32(value: Any, level: int, shape: list[int], out: list[int]) -> None:
    """Check ``value`` is a dense int32 tensor of ``shape`` and flatten it into ``out`` (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {_json_value(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or not _INT32[0] <= value <= _INT32[1]:
            raise invalid(
                f"JSON Value: {_json_value(value)} Type: {_json_type(value)} is not of expected type: int32"
            )
        out.append(value)
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill_int32(item, level + 1, shape, out)


def _to_tensor(value: Any) -> npt.NDArray[np.int32]:
    shape = _dense_shape(value)
    flat: list[int] = []
    _fill_int32(value, 0, shape, flat)
    return np.asarray(flat, dtype=np.int32).reshape(shape)


def _from_instances(doc: dict[str, Any], instances: Any) -> dict[str, npt.NDArray[np.int32]]:
    """Row format: one object per instance, stacked along a new first dimension."""
    if not isinstance(instances, list):
        raise invalid(f"JSON Value: {_json_value(doc)} Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid(f"JSON Value: {_json_value(doc)} No values in 'instances' array")
    if not isinstance(instances[0], dict):
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    rows: dict[str, list[npt.NDArray[np.int32]]] = {}
    for i, element in enumerate(instances):
        if not isinstance(element, dict):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        for name, value in element.items():
            try:
                rows.setdefault(name, []).append(_instance_item(name, value, rows.get(name, [])))
            except EmulatorError as e:
                raise invalid(
                    f"Failed to process element: {i} key: {name} of 'instances' list. Error: {_status_string(e)}"
                ) from None
        if set(element) != set(INPUTS):
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_json_value(element)} "
                f"must only have keys: {','.join(INPUTS)}"
            )
    return {name: np.stack(items) for name, items in rows.items()}


def _instance_item(name: str, value: Any, previous: list[npt.NDArray[np.int32]]) -> npt.NDArray[np.int32]:
    if name not in INPUTS:
        raise invalid(f"JSON object: does not have named input: {name}")
    tensor = _to_tensor(value)
    if previous:
        first = previous[0]
        if first.size != tensor.size:
            raise invalid(f"Expecting tensor size: {first.size} but got: {tensor.size}")
        if first.shape != tensor.shape:
            raise invalid(f"Expecting shape {_shape_text(first.shape)} but got: {_shape_text(tensor.shape)}")
    return tensor


def _from_inputs(inputs: Any) -> dict[str, npt.NDArray[np.int32]]:
    """Columnar format: one tensor per input name; names the signature lacks are ignored (as in TF)."""
    if not isinstance(inputs, dict) or set(inputs) == {"b64"}:
        raise invalid(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as "
            "per tensorinfo_map"
        )
    tensors: dict[str, npt.NDArray[np.int32]] = {}
    for name in INPUTS:
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _to_tensor(inputs[name])
    return tensors


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# --------------------------------------------------------------------------------------------------
# The model's own checks (what running the SavedModel would reject)


def _check_signature_shapes(tensors: dict[str, npt.NDArray[np.int32]]) -> int:
    """Shapes against the signature, and one batch dimension for all inputs; returns that batch."""
    for name, want in INPUTS.items():
        got = tensors[name].shape
        if len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got, strict=True)):
            raise invalid(
                f"Incompatible shapes: input '{name}' has shape {_shape_text(got)} but the signature "
                f"expects {_shape_text(want)}"
            )
    batches = {name: int(tensors[name].shape[0]) for name in INPUTS}
    first = batches["tokens"]
    for n in batches.values():
        if n != first:
            raise invalid(f"Incompatible shapes: [{first}] vs. [{n}]")
    return first


def _check_values(tensors: dict[str, npt.NDArray[np.int32]]) -> None:
    for name in ("tokens", "negative_prompt_tokens"):
        bad = np.argwhere((tensors[name] < 0) | (tensors[name] >= VOCAB_SIZE))
        if bad.size:
            row, col = (int(i) for i in bad[0])
            value = int(tensors[name][row, col])
            # The embedding lookup's own message (GatherV2 on CPU).
            raise invalid(f"indices[{row},{col}] = {value} is not in [0, {VOCAB_SIZE})")
    for name, high in (("num_steps", MAX_STEPS), ("batch_size", MAX_BATCH)):
        for value in tensors[name].tolist():
            if not 1 <= value <= high:
                raise invalid(f"{name} must be in [1, {high}], got {value}")


def run_model(tensors: dict[str, npt.NDArray[np.int32]], image_size: int) -> Images:
    """Validate the input tensors and produce the ``images`` output ``[N, H, W, 3]``.

    Example: ``run_model({"tokens": t, "negative_prompt_tokens": t, "num_steps": np.array([5]),
    "batch_size": np.array([2])}, 32).shape == (2, 32, 32, 3)`` for ``t`` of shape (1, 77).
    """
    rows = _check_signature_shapes(tensors)
    _check_values(tensors)
    images = [
        synthetic_images(
            tensors["tokens"][i].tolist(),
            tensors["negative_prompt_tokens"][i].tolist(),
            int(tensors["num_steps"][i]),
            int(tensors["batch_size"][i]),
            image_size,
        )
        for i in range(rows)
    ]
    return np.concatenate(images)


# --------------------------------------------------------------------------------------------------
# Parsing the body like rapidjson (messages from rapidjson's GetParseError_En)

_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
}


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request document, or INVALID_ARGUMENT with TF Serving's ``JSON Parse error: ...``."""
    if not raw:
        raise invalid("JSON Parse error: The document is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    if not text.strip():
        raise invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(f"JSON Parse error: {_rapidjson_message(e)} at offset: {e.pos}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_json_value(doc)} Is not object")
    return cast(dict[str, Any], doc)


def _rapidjson_message(error: json.JSONDecodeError) -> str:
    if error.msg == "Expecting ',' delimiter":
        # rapidjson says which container was open; the nearer unclosed bracket is a good guess.
        inside_object = error.doc.rfind("{", 0, error.pos) > error.doc.rfind("[", 0, error.pos)
        return (
            "Missing a comma or '}' after an object member."
            if inside_object
            else "Missing a comma or ']' after an array element."
        )
    return _PARSE_ERRORS.get(error.msg, "Invalid value.")


# --------------------------------------------------------------------------------------------------
# Routing (TF Serving's regexes, http_rest_api_util.cc)

_PREDICT = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
_REST_PREFIX = re.compile(r"/v1/.*", re.I)


@dataclass(frozen=True)
class Route:
    """What a request asks for. ``kind``: "predict", "status", "metadata", or "classify"/"regress"."""

    kind: str
    model: str
    version: int | None = None
    label: str | None = None


def route(http_method: str, path: str) -> Route:
    """Match a request like TF Serving; INVALID_ARGUMENT ``Malformed request: ...`` otherwise.

    Example: ``route("POST", "/v1/models/sd/versions/1:predict") == Route("predict", "sd", 1)``.
    """
    m = None
    if http_method == "POST":
        m = _PREDICT.fullmatch(path)
    elif http_method == "GET":
        m = _STATUS.fullmatch(path)
    if m is None:
        raise invalid(f"Malformed request: {http_method} {path}")
    name, version, label, kind = m.groups()
    if http_method == "GET":
        kind = "metadata" if kind else "status"
        if not name:
            raise invalid("Missing model name in request.")
    return Route(
        kind.lower(), unquote(name), int(version) if version else None, unquote(label) if label else None
    )


# --------------------------------------------------------------------------------------------------
# What one TF Serving process serves, and its REST answers


@dataclass(frozen=True)
class VersionStatus:
    """One version's ``model_version_status`` entry: state START/LOADING/AVAILABLE/UNLOADING/END."""

    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class Servable:
    """A snapshot of what a TF Serving process serves: its model's versions and REST settings.

    Example: ``Servable.loaded("stable-diffusion")`` serves version 1.
    """

    model_name: str
    versions: dict[int, VersionStatus]
    rest_timeout_ms: int = 30000
    predict_s_per_step: float = 0.0  # synthetic compute time per diffusion step and image
    metrics: tfmetrics.Metrics | None = None  # the process's counters (tfmetrics), when it counts
    prometheus_path: str = ""  # where the REST port serves them ("": not enabled)

    @classmethod
    def loaded(cls, model_name: str, version: int = 1, **kw: Any) -> Servable:
        return cls(model_name, {version: VersionStatus("AVAILABLE")}, **kw)

    def available(self, version: int | None) -> int | None:
        """The AVAILABLE version a request names (None: the latest), or None."""
        ready = [v for v, s in self.versions.items() if s.state == "AVAILABLE"]
        if version is None:
            return max(ready, default=None)
        return version if version in ready else None


def answer(servable: Servable, http_method: str, path: str, body: bytes, image_size: int) -> bytes:
    """TF Serving's answer to one REST request (raises EmulatorError with its status and message),
    counted in the process's metrics as ``http_server.cc`` counts it."""
    started, status, api = time.monotonic(), "OK", ""
    try:
        r = route(http_method, path)
        api = r.kind if http_method == "POST" else ""
        return _answer(servable, r, body, image_size)
    except EmulatorError as e:
        status = e.code.name
        raise
    finally:
        if servable.metrics is not None:
            servable.metrics.record(servable.model_name, status, api, time.monotonic() - started)


def _answer(servable: Servable, r: Route, body: bytes, image_size: int) -> bytes:
    if r.kind == "status":
        return _status(servable, r)
    version = _servable(servable, r)
    if r.kind == "metadata":
        return json.dumps(_metadata(servable.model_name, version, image_size), indent=1).encode()
    if r.kind == "predict":
        return _predict(servable, r, body, image_size)
    what = "classification" if r.kind == "classify" else "regression"
    raise invalid(
        f"Expected {what} signature method_name to be tensorflow/serving/{r.kind}. "
        "Was: tensorflow/serving/predict"
    )


def _status(servable: Servable, r: Route) -> bytes:
    """GetModelStatus: every version the process knows, newest first, with its state and error."""
    if r.label is not None:
        raise invalid(f"Unrecognized servable version label: {r.label}")
    if r.model != servable.model_name or not servable.versions:
        raise not_found(f"Could not find any versions of model {r.model}")
    if r.version is not None and r.version not in servable.versions:
        raise not_found(f"Could not find version {r.version} of model {r.model}")
    chosen = [r.version] if r.version is not None else sorted(servable.versions, reverse=True)
    doc = {
        "model_version_status": [
            {
                "version": str(v),
                "state": servable.versions[v].state,
                "status": {
                    "error_code": servable.versions[v].error_code,
                    "error_message": servable.versions[v].error_message,
                },
            }
            for v in chosen
        ]
    }
    return json.dumps(doc, indent=1).encode()


def _servable(servable: Servable, r: Route) -> int:
    """The loaded version a request names, or NOT_FOUND as GetServableHandle answers."""
    if r.label is not None:
        raise invalid(f"Unrecognized servable version label: {r.label}")
    wanted = f"Latest({r.model})" if r.version is None else f"Specific({r.model}, {r.version})"
    version = servable.available(r.version) if r.model == servable.model_name else None
    if version is None:
        raise not_found(f"Servable not found for request: {wanted}")
    return version


def _predict(servable: Servable, r: Route, body: bytes, image_size: int) -> bytes:
    # TF Serving's order: parse the body, read signature_name, then look the servable up.
    doc = parse_body(body)
    signature = doc.get("signature_name", SIGNATURE_NAME)
    if not isinstance(signature, str):
        raise invalid(
            f"JSON Value: {_json_value(doc)} not formatted correctly. 'signature_name' key must be a "
            "string value."
        )
    _servable(servable, r)
    if (signature or SIGNATURE_NAME) != SIGNATURE_NAME:
        raise invalid(f'Serving signature name: "{signature}" not found in signature def')
    if "instances" in doc and "inputs" in doc:
        raise invalid(
            f"JSON Value: {_json_value(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if "instances" in doc:
        key, tensors = "predictions", _from_instances(doc, doc["instances"])
    elif "inputs" in doc:
        key, tensors = "outputs", _from_inputs(doc["inputs"])
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    images = run_model(tensors, image_size)
    steps = int(np.sum(tensors["num_steps"] * tensors["batch_size"]))
    compute_s = servable.predict_s_per_step * steps
    deadline_s = servable.rest_timeout_ms / 1000 if servable.rest_timeout_ms > 0 else float("inf")
    if compute_s > deadline_s:
        # The session run is bounded by --rest_api_timeout_in_ms (RunOptions.timeout_in_ms):
        # DEADLINE_EXCEEDED, which the REST layer answers 504 (http_server.cc).
        time.sleep(deadline_s)
        raise EmulatorError(grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification")
    if compute_s:
        time.sleep(compute_s)
    # One output tensor: both formats put the whole [N, H, W, 3] tensor under the key.
    return b'{"' + key.encode() + b'": ' + encode_uint8(images) + b"}"


# --------------------------------------------------------------------------------------------------
# The server


class ModelServer:
    """TF Serving's REST API on ``host:port``, in a daemon thread, answering from ``backend()``.

    ``backend`` returns the ``Servable`` of the process a request reaches (behind a load balancer:
    one of the ready pods), or None when there is none (503). ``world`` (optional) logs each request
    as service "serving".

    Example::

        server = ModelServer("127.0.3.7", 0, lambda: Servable.loaded("stable-diffusion"), image_size=32)
        server.start()
        print(server.address)  # 127.0.3.7:<port>
        server.stop()
    """

    def __init__(
        self,
        host: str,
        port: int,
        backend: Callable[[], Servable | None],
        *,
        image_size: int | None = None,
        world: World | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.backend = backend
        self.image_size = _image_size(image_size)
        self.world = world
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self, bound: socket.socket | None = None) -> None:
        """Listen on ``host:port``, or on ``bound``, a socket already bound there (it is handed over
        with no moment in which the address is free for another process to take)."""
        if self._httpd is not None:
            raise RuntimeError(f"model server {self.address} already started")
        if bound is None:
            httpd = _HTTPServer((self.host, self.port), _Handler)
        else:
            httpd = _HTTPServer(bound.getsockname(), _Handler, bind_and_activate=False)
            httpd.socket.close()
            httpd.socket = bound
            httpd.server_address = bound.getsockname()
            try:
                httpd.server_activate()
            except BaseException:
                httpd.server_close()
                raise
        httpd.model_server = self
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        # A short poll interval keeps stop() quick: serve_forever looks for shutdown between polls.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name=f"tfserving-{self.address}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- requests ----------------------------------------------------------------------------------
    def handle(self, http_method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Answer one request: (HTTP status, JSON body). Logged in ``world`` when there is one."""
        try:
            kind = route(http_method, path).kind
        except EmulatorError:
            kind = "malformed"

        def respond() -> bytes:
            servable = self.backend()
            if servable is None:
                raise EmulatorError(grpc.StatusCode.UNAVAILABLE, "no serving backend is ready")
            return answer(servable, http_method, path, body, self.image_size)

        try:
            if self.world is None:
                return 200, respond()
            with self.world.call("serving", kind, f"{self.address}{path}", mutating=False):
                return 200, respond()
        except EmulatorError as e:
            return e.http_status, json.dumps({"error": e.message}).encode()
        except Exception as e:  # a bug here must still answer, as TF Serving answers INTERNAL
            return 500, json.dumps({"error": f"Internal error: {e!r}"}).encode()


def _raise(error: EmulatorError) -> bytes:
    raise error


def _image_size(explicit: int | None) -> int:
    """The kwarg, else $SDCLUSTER_EMULATOR_IMAGE_SIZE, else 512; ValueError if out of range."""
    if explicit is not None:
        size, source = explicit, "image_size"
    else:
        text = os.environ.get(IMAGE_SIZE_ENV, "").strip()
        source = IMAGE_SIZE_ENV
        try:
            size = int(text) if text else DEFAULT_IMAGE_SIZE
        except ValueError:
            raise ValueError(f"{IMAGE_SIZE_ENV} must be an integer, got {text!r}") from None
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"{source} must be in [1, {MAX_IMAGE_SIZE}], got {size}")
    return size


def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": name,
    }


def _metadata(model_name: str, version: int, image_size: int) -> dict[str, Any]:
    """GetModelMetadata's JSON (``preserve_proto_field_names``), as the SavedModel would describe itself."""
    inputs = {
        name: _tensor_info(f"serving_default_{name}:0", "DT_INT32", dims) for name, dims in INPUTS.items()
    }
    outputs = {
        "images": _tensor_info("StatefulPartitionedCall:0", "DT_UINT8", [-1, image_size, image_size, 3])
    }
    init_op = {
        "inputs": {},
        "outputs": {
            "__saved_model_init_op": {
                "dtype": "DT_INVALID",
                "tensor_shape": {"dim": [], "unknown_rank": True},
                "name": "NoOp",
            }
        },
        "method_name": "",
    }
    signatures = {
        "__saved_model_init_op": init_op,
        SIGNATURE_NAME: {"inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"},
    }
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so that stop() also ends keep-alive ones (the load balancer is gone)."""

    daemon_threads = True
    model_server: ModelServer

    def server_activate(self) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().server_activate()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive like TF Serving's evhttp server, so a client session reuses its connection.
    protocol_version = "HTTP/1.1"
    server_version = "TensorFlowServing-emulator"
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per response (see kubehttp)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        server = cast(_HTTPServer, self.server).model_server
        servable = server.backend()
        if servable is not None and servable.prometheus_path and path == servable.prometheus_path:
            metrics = servable.metrics.exposition() if servable.metrics is not None else ""
            status, data, ctype = 200, metrics.encode(), "text/plain; version=0.0.4"
        elif not _REST_PREFIX.fullmatch(path):
            # TF Serving registers handlers for /v1/ only; anything else is evhttp's bare 404.
            status, data, ctype = 404, b"Not Found", "text/plain"
        else:
            (status, data), ctype = server.handle(self.command, path, body), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer
