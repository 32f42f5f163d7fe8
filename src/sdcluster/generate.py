"""Generate images with the Stable Diffusion model served by TF Serving (the ``generate`` extra).

The served model is Keras-CV's Stable Diffusion exported with one signature, ``serving_default``:
``tokens`` and ``negative_prompt_tokens`` (77 CLIP token ids each), ``num_steps`` and ``batch_size``;
its output is ``batch_size`` uint8 images of H x W x 3. Tokenizing happens here, on the client, with
CLIP's BPE (``instant-clip-tokenizer``), exactly as Keras-CV does: start-of-text, the prompt's ids,
end-of-text, padded to 77 with end-of-text.

The endpoint is TF Serving's REST URL of the model, ``http://<ip>:8501/v1/models/<name>`` (what
``sdcluster apply`` stores as the ``endpoint`` output). While a version is still loading TF Serving
answers 404 ``Servable not found`` (or the load balancer 503); ``generate`` keeps retrying until
``load_timeout_s``. Generation on CPU takes minutes: ``timeout_s`` bounds one request on our side,
and TF Serving's own ``--rest_api_timeout_in_ms`` (``serving.rest_api_timeout_ms``) on its side: a
request over it is TF Serving's 504, reported as such (with what to change), never as "loading".

Example::

    result = generate("http://34.1.2.3:8501/v1/models/stable-diffusion", "a photo of a cat", steps=25)
    save_images(result, "out/")   # [PosixPath('out/a-photo-of-a-cat-20240101-120000-0.png')]
"""

from __future__ import annotations

import functools
import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import retry
from .errors import InvalidRequest, NotFound, SdclusterError, TransientError, UsageError, WaitTimeout
from .tfserving import HTTP_PORT

if TYPE_CHECKING:
    import requests
    from PIL import Image

    from .config import Config

__all__ = [
    "CONTEXT_LENGTH",
    "END_OF_TEXT",
    "MAX_PROMPT_TOKENS",
    "START_OF_TEXT",
    "GenerateResult",
    "generate",
    "model_endpoint",
    "save_images",
    "tokenize",
]

START_OF_TEXT = 49406
END_OF_TEXT = 49407
CONTEXT_LENGTH = 77  # CLIP's text encoder reads 77 positions
MAX_PROMPT_TOKENS = CONTEXT_LENGTH - 2  # minus start- and end-of-text

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
EXTRA_HINT = 'pip install "sdcluster[generate]"'
_ENDPOINT_RE = re.compile(r"(https?://[^/\s]+)/v1/models/([^/:\s]+)(?:/versions/\d+)?")


@dataclass(frozen=True)
class GenerateResult:
    """The images of one request, with what produced them."""

    images: list[Image.Image]
    prompt: str
    negative_prompt: str
    steps: int
    endpoint: str
    elapsed_s: float


# --------------------------------------------------------------------------------------------------
# Tokens


def tokenize(prompt: str) -> list[int]:
    """The 77 CLIP token ids the served model takes for ``prompt``, as Keras-CV's tokenizer makes them.

    An empty prompt gives the model's "unconditional" tokens (start, then end-of-text to the end).
    More than 75 BPE tokens is a UsageError saying how many there are.

    Example: ``tokenize("a photo of a cat")[:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]``.
    """
    # Keras-CV's basic_clean: HTML entities are unescaped twice (text scraped from the web is often
    # escaped twice); the tokenizer itself lowercases and splits on whitespace.
    text = html.unescape(html.unescape(prompt)).strip()
    ids = [int(t) for t in _tokenizer().encode(text)]
    if len(ids) > MAX_PROMPT_TOKENS:
        raise UsageError(
            f"the prompt is {len(ids)} tokens long; the model reads at most {MAX_PROMPT_TOKENS}",
            hint="shorten the prompt (a token is about one short word or part of a long one)",
        )
    return [START_OF_TEXT, *ids, *[END_OF_TEXT] * (CONTEXT_LENGTH - 1 - len(ids))]


@functools.cache
def _tokenizer() -> Any:
    """One tokenizer per process: building it parses the 49k-merge vocabulary."""
    try:
        import instant_clip_tokenizer
    except ImportError as e:
        raise UsageError("image generation needs the generate extra", hint=EXTRA_HINT) from e
    return instant_clip_tokenizer.Tokenizer()


# --------------------------------------------------------------------------------------------------
# The endpoint


def model_endpoint(address: str, model_name: str | None = None) -> str:
    """TF Serving's REST URL of a model, from its URL or from ``HOST[:PORT]`` and ``model_name``.

    The port defaults to 8501; a trailing ``:predict`` or ``/versions/N`` is dropped.

    Example: ``model_endpoint("34.1.2.3", "stable-diffusion") == "http://34.1.2.3:8501/v1/models/stable-diffusion"``.
    """
    text = address.strip().rstrip("/").removesuffix(":predict")
    m = _ENDPOINT_RE.fullmatch(text)
    if m:
        return f"{m.group(1)}/v1/models/{m.group(2)}"
    host = text.removeprefix("http://")
    if not model_name or not host or "/" in host or "://" in host:
        raise UsageError(
            f"{address!r} is not a TF Serving model endpoint",
            hint=f"use http://IP:{HTTP_PORT}/v1/models/{model_name or 'NAME'} (see: sdcluster output endpoint)",
        )
    if ":" not in host:
        host = f"{host}:{HTTP_PORT}"
    return f"http://{host}/v1/models/{model_name}"


def _resolve(target: Config | str, endpoint: str | None) -> str:
    if isinstance(target, str):
        return model_endpoint(target)
    if not endpoint:
        raise UsageError(
            "there is no model endpoint yet",
            hint="deploy first: sdcluster apply (then sdcluster output endpoint shows it)",
        )
    return model_endpoint(endpoint, target.serving.model_name)


# --------------------------------------------------------------------------------------------------
# Generation


def generate(
    target: Config | str,
    prompt: str,
    *,
    endpoint: str | None = None,
    negative_prompt: str = "",
    steps: int = 30,
    batch_size: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> GenerateResult:
    """Ask the served model for ``batch_size`` images of ``prompt``.

    ``target`` is the model's URL (``http://IP:8501/v1/models/NAME``), or the Config together with
    ``endpoint=`` (the state's ``endpoint`` output: a URL, or an IP whose model name comes from
    ``cfg.serving.model_name``). ``progress`` receives one-line status messages.

    Errors: UsageError (prompt too long, bad endpoint, missing extra), NotFound (nothing answers at
    the endpoint, or it serves no such model), InvalidRequest (TF Serving's 400, with its message),
    WaitTimeout (still loading after ``load_timeout_s``, or one request over ``timeout_s``).

    Example::

        generate(cfg, "a photo of a cat", endpoint=state.outputs["endpoint"], steps=25, batch_size=2)
    """
    if not prompt.strip():
        raise UsageError(
            "the prompt is empty", hint='say what to draw: sdcluster generate "a photo of a cat"'
        )
    url = _resolve(target, endpoint)
    for name, value in (("steps", steps), ("batch size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"{name} must be a positive integer, got {value!r}", hint="e.g. --steps 30 --batch-size 1"
            )
    body = json.dumps(
        {
            "signature_name": "serving_default",
            "instances": [
                {
                    "tokens": tokenize(prompt),
                    "negative_prompt_tokens": tokenize(negative_prompt),
                    "num_steps": steps,
                    "batch_size": batch_size,
                }
            ],
        }
    ).encode()
    rest_timeout_ms = None if isinstance(target, str) else target.serving.rest_api_timeout_ms
    session = _session()
    say = progress or (lambda _message: None)
    announce = True  # say "generating" on the first attempt and on the first one after a wait

    def attempt() -> list[Any]:
        nonlocal announce
        if announce:
            announce = False
            say(f"generating {batch_size} image(s) with {steps} steps at {url}")
        try:
            return _predict(session, url, body, (connect_timeout_s, timeout_s), rest_timeout_ms)
        except TransientError as e:
            announce = True
            say(f"{e}; retrying")
            raise

    start = time.monotonic()
    try:
        predictions = retry.until(
            attempt,
            timeout_s=load_timeout_s,
            what=f"the model at {url} to load",
            hint="check the serving pods: sdcluster status (a large model takes minutes to load)",
            max_interval_s=10.0,
        )
    finally:
        session.close()
    images = _images(predictions, batch_size, url)
    return GenerateResult(images, prompt, negative_prompt, steps, url, time.monotonic() - start)


def _session() -> requests.Session:
    try:
        import numpy  # noqa: F401  (checked here so a missing extra is reported before a long request)
        import PIL  # noqa: F401
        import requests
    except ImportError as e:
        raise UsageError("image generation needs the generate extra", hint=EXTRA_HINT) from e
    return requests.Session()


def _predict(
    session: requests.Session,
    url: str,
    body: bytes,
    timeout: tuple[float, float],
    rest_timeout_ms: int | None = None,
) -> list[Any]:
    """One predict request: the predictions, or an sdcluster error (TransientError while loading)."""
    import requests

    try:
        r = session.post(
            f"{url}:predict", data=body, headers={"Content-Type": "application/json"}, timeout=timeout
        )
    except requests.ConnectionError as e:  # refused, unreachable, or no connection within the timeout
        raise NotFound(
            f"nothing answers at {url}: {_reason(e)}",
            hint="check the endpoint and that serving is up: sdcluster status",
        ) from e
    except requests.Timeout as e:
        raise WaitTimeout(
            f"no answer from {url} within {timeout[1]:.0f}s",
            hint="generation on CPU takes minutes: raise the timeout, or use fewer steps",
        ) from e
    if r.status_code == 200:
        return _predictions_of(r, url)
    message = _error_text(r)
    if r.status_code == 404:
        if _model_loading(session, url, timeout[0]):
            raise TransientError(f"the model is loading: {message}")
        raise NotFound(
            f"{url} serves no such model: {message}",
            hint=(
                "check the model name (serving.model_name), that the model is uploaded "
                "(sdcluster upload-model DIR), and the serving pods (sdcluster status)"
            ),
        )
    if r.status_code == 504 and _tf_serving_error(r):
        # TF Serving's own deadline (--rest_api_timeout_in_ms) cut the session run: DEADLINE_EXCEEDED,
        # answered 504 "Timed out waiting for notification". The model was loaded and computing.
        limit = (
            f"{rest_timeout_ms} ms, serving.rest_api_timeout_ms"
            if rest_timeout_ms
            else "its --rest_api_timeout_in_ms"
        )
        raise WaitTimeout(
            f"the request took longer than TF Serving's REST timeout ({limit}), so TF Serving gave up on it "
            f"(HTTP 504: {message}); the model is loaded, it is not still loading",
            hint=(
                "use fewer steps (--steps 10), one image per request (--batch-size 1), a GPU node pool "
                "(cluster.accelerator_type, e.g. nvidia-tesla-t4), or a longer serving.rest_api_timeout_ms "
                "(then sdcluster apply)"
            ),
        )
    if r.status_code in (502, 503, 504):  # the load balancer: no serving backend yet
        raise TransientError(f"TF Serving is unavailable (HTTP {r.status_code}): {message}")
    if r.status_code == 400:
        raise InvalidRequest(
            f"TF Serving rejected the request: {message}",
            hint="check --steps and --batch-size against the model (steps 1..1000, batch size 1..8)",
        )
    raise SdclusterError(f"TF Serving failed (HTTP {r.status_code}): {message}")


def _tf_serving_error(r: requests.Response) -> bool:
    """Whether the answer is TF Serving's own JSON error (``{"error": "..."}``), not a proxy's page."""
    try:
        doc = r.json()
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("error"), str)


def _model_loading(session: requests.Session, url: str, timeout: float) -> bool:
    """Whether ``url`` names a model that TF Serving knows but has not loaded yet.

    Predict says ``Servable not found`` both for a loading model and for a wrong name; the model
    status route tells them apart (200 with a version state for a known model, 404 otherwise).
    """
    import requests

    try:
        r = session.get(url, timeout=timeout)
    except requests.RequestException:
        return True  # the answer to predict came from this server a moment ago: a hiccup, retry
    return r.status_code == 200


def _error_text(r: requests.Response) -> str:
    """TF Serving's ``{"error": "..."}``, else the body's first line."""
    try:
        doc = r.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    text = r.text.strip().splitlines()
    return text[0][:300] if text else f"HTTP {r.status_code}"


def _reason(e: Exception) -> str:
    text = str(e)
    for reason in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
        if reason in text:
            return reason.lower()
    return type(e).__name__


def _predictions_of(r: requests.Response, url: str) -> list[Any]:
    try:
        doc = r.json()
    except ValueError as e:
        raise SdclusterError(f"{url} answered with something that is not JSON: {r.text[:100]!r}") from e
    predictions = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(predictions, list):
        raise SdclusterError(f"{url} answered without a list of predictions: {str(doc)[:100]}")
    return predictions


def _images(predictions: list[Any], batch_size: int, url: str) -> list[Image.Image]:
    """Each prediction, an H x W x 3 array of 0..255, as an RGB image; SdclusterError if malformed."""
    import numpy as np
    from PIL import Image

    if len(predictions) != batch_size:
        raise SdclusterError(f"{url} returned {len(predictions)} images for a batch of {batch_size}")
    images = []
    for i, prediction in enumerate(predictions):
        try:
            array = np.asarray(prediction, dtype=np.int64)
        except (ValueError, TypeError) as e:
            raise SdclusterError(f"image {i} from {url} is not an array of integers") from e
        if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
            raise SdclusterError(f"image {i} from {url} has shape {array.shape}, not height x width x 3")
        if array.min() < 0 or array.max() > 255:
            raise SdclusterError(f"image {i} from {url} has values outside 0..255")
        images.append(Image.fromarray(array.astype(np.uint8), "RGB"))
    return images


# --------------------------------------------------------------------------------------------------
# Saving


def names_a_file(out: str | Path) -> bool:
    """``--out x.png`` names the image file itself; any other name is a directory for the images."""
    return Path(out).suffix.lower() == ".png"


def save_images(result: GenerateResult, out: str | Path) -> list[Path]:
    """Write the images as PNG, the prompt, negative prompt and steps in their text chunks.

    ``out`` ending in ``.png`` is the file for one image (``x-0.png``, ``x-1.png`` beside it for
    several); anything else is a directory, where the images get new names
    ``<prompt-slug>-<timestamp>-<i>.png`` that never overwrite a file.

    Example: ``save_images(result, "out")  # [PosixPath('out/a-photo-of-a-cat-20240101-120000-0.png')]``.
    """
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", result.prompt)
    info.add_text("negative_prompt", result.negative_prompt)
    info.add_text("steps", str(result.steps))
    target = Path(out)
    if names_a_file(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if len(result.images) == 1:
            paths = [target]
        else:
            paths = [target.with_name(f"{target.stem}-{i}{target.suffix}") for i in range(len(result.images))]
    else:
        target.mkdir(parents=True, exist_ok=True)
        stem = f"{_slug(result.prompt)}-{datetime.now():%Y%m%d-%H%M%S}"
        paths = [_new_file(target, f"{stem}-{i}") for i in range(len(result.images))]
    for path, image in zip(paths, result.images, strict=True):
        image.save(path, format="PNG", pnginfo=info)
    return paths


def _slug(text: str, limit: int = 48) -> str:
    """``"A photo of a cat!"`` -> ``"a-photo-of-a-cat"`` (ASCII letters and digits, at most ``limit``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "image"


def _new_file(directory: Path, stem: str) -> Path:
    """A path that did not exist, created empty (so two runs in the same second do not collide)."""
    for n in range(1000):
        path = directory / (f"{stem}.png" if n == 0 else f"{stem}-{n}.png")
        try:
            path.open("xb").close()
        except FileExistsError:
            continue
        return path
    raise UsageError(f"too many files named {stem}*.png in {directory}", hint="use another --out directory")
