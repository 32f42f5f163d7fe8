"""Tokens as Keras-CV's Stable Diffusion expects them, and ``generate`` over real HTTP against the TF
Serving stand-in (``sdcluster.emulator.tfserving.ModelServer``): images, retries while the model
loads, and the errors a user meets (nothing listening, wrong model, TF Serving's 400)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import sdcluster.generate as gen
from sdcluster.config import Config
from sdcluster.emulator.tfserving import ModelServer, Servable, VersionStatus, synthetic_images
from sdcluster.errors import InvalidRequest, NotFound, SdclusterError, UsageError, WaitTimeout
from sdcluster.generate import END_OF_TEXT, START_OF_TEXT, generate, model_endpoint, save_images, tokenize

HOST = "127.0.9.3"
MODEL = "stable-diffusion"
SIZE = 32


# ---- tokens ----------------------------------------------------------------------------------------


@cache
def clip_vocabulary() -> list[str]:
    """CLIP's vocabulary rebuilt the way OpenAI's ``SimpleTokenizer`` (and Keras-CV's copy) builds it,
    from the BPE merges file ``bpe_simple_vocab_16e6.txt`` that instant-clip-tokenizer embeds in its
    extension module: 256 byte symbols, the same with ``</w>``, one token per merge (the first
    49152-256-2), then ``<|startoftext|>`` and ``<|endoftext|>``. An id is an index in this list.
    """
    import instant_clip_tokenizer

    module = Path(instant_clip_tokenizer.__file__).parent
    binary = next(module.glob("instant_clip_tokenizer*.so"), None) or next(module.glob("*.pyd"))
    data = binary.read_bytes()
    start = data.find(b"#version: 0.2\n")
    if start < 0:
        pytest.skip("the merges file is not embedded as text in this build of instant-clip-tokenizer")
    lines = data[start:].split(b"\n")[1 : 49152 - 256 - 2 + 1]
    merges = [line.decode("utf-8").split() for line in lines]
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]
    return [
        *symbols,
        *(s + "</w>" for s in symbols),
        *("".join(m) for m in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]


def test_the_vocabulary_rebuilt_from_the_merges_agrees_with_the_special_ids() -> None:
    vocab = clip_vocabulary()
    assert len(vocab) == 49408
    assert vocab.index("<|startoftext|>") == START_OF_TEXT == 49406
    assert vocab.index("<|endoftext|>") == END_OF_TEXT == 49407


def test_a_photo_of_a_cat_has_the_ids_of_its_words_in_clips_vocabulary() -> None:
    vocab = clip_vocabulary()
    words = ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    ids = [vocab.index(w) for w in words]

    assert ids == [320, 1125, 539, 320, 2368]  # as Keras-CV's and OpenAI's tokenizers give them
    assert tokenize("a photo of a cat") == [START_OF_TEXT, *ids, *[END_OF_TEXT] * 71]


def test_tokens_are_77_long_lowercased_and_padded_with_end_of_text() -> None:
    tokens = tokenize("A Photo OF a   CAT")
    assert tokens == tokenize("a photo of a cat")
    assert len(tokens) == 77 and tokens[0] == START_OF_TEXT and tokens[-1] == END_OF_TEXT
    assert tokenize("fish &amp; chips") == tokenize("fish & chips")  # HTML entities unescaped, as Keras-CV


def test_an_empty_prompt_gives_the_unconditional_tokens() -> None:
    assert tokenize("") == [START_OF_TEXT, *[END_OF_TEXT] * 76]


def test_a_prompt_of_75_tokens_fits_and_76_is_refused_with_the_count() -> None:
    assert tokenize("cat " * 75)[-2:] == [2368, END_OF_TEXT]
    with pytest.raises(UsageError, match="the prompt is 76 tokens long; the model reads at most 75"):
        tokenize("cat " * 76)


# ---- the endpoint ----------------------------------------------------------------------------------


def test_model_endpoint_accepts_a_url_or_an_ip() -> None:
    url = f"http://34.1.2.3:8501/v1/models/{MODEL}"
    assert model_endpoint("34.1.2.3", MODEL) == url
    assert model_endpoint(url + ":predict") == url
    assert model_endpoint(f"http://34.1.2.3:8501/v1/models/{MODEL}/versions/2/") == url
    with pytest.raises(UsageError, match="is not a TF Serving model endpoint"):
        model_endpoint("34.1.2.3")  # no model name to complete it with
    with pytest.raises(UsageError, match="there is no model endpoint yet"):
        generate(Config.build(project="demo-proj", user="user:me@example.com"), "a cat")


# ---- generation against the TF Serving stand-in ----------------------------------------------------


class Served:
    """The TF Serving stand-in answering as one process; ``loading()`` and ``loaded()`` set its state."""

    def __init__(self) -> None:
        self.servable = Servable.loaded(MODEL)
        self.server = ModelServer(HOST, 0, lambda: self.servable, image_size=SIZE)

    @property
    def url(self) -> str:
        return f"http://{self.server.address}/v1/models/{MODEL}"

    def loading(self) -> None:  # a version TF Serving knows but has not loaded yet
        self.servable = Servable(MODEL, {1: VersionStatus("LOADING")})

    def loaded(self) -> None:
        self.servable = Servable.loaded(MODEL)


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    s.server.start()
    yield s
    s.server.stop()


def test_generate_returns_the_images_the_model_made_for_these_tokens(served: Served, tmp_path: Path) -> None:
    result = generate(served.url, "A photo of a cat", negative_prompt="blurry", steps=12, batch_size=2)

    assert [(im.size, im.mode) for im in result.images] == [((SIZE, SIZE), "RGB")] * 2
    # The stand-in's images are a pure function of the request: these pixels prove that the prompt,
    # negative prompt and steps arrived as the model's tokens.
    expected = synthetic_images(tokenize("a photo of a cat"), tokenize("blurry"), 12, 2, SIZE)
    assert np.array_equal(np.stack([np.asarray(im) for im in result.images]), expected)

    paths = save_images(result, tmp_path / "out")
    assert [p.name.split("-")[:5] for p in paths] == [["a", "photo", "of", "a", "cat"]] * 2
    assert [p.name[-6:] for p in paths] == ["-0.png", "-1.png"]
    for path, image in zip(paths, result.images, strict=True):
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (SIZE, SIZE)
            assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(image))
            assert png.info["prompt"] == "A photo of a cat" and png.info["steps"] == "12"
    again = save_images(result, tmp_path / "out")  # same second: new names, nothing overwritten
    assert not set(again) & set(paths)
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_generate_from_the_config_and_the_state_endpoint(served: Served) -> None:
    cfg = Config.build(project="demo-proj", user="user:me@example.com")
    result = generate(cfg, "a cat", endpoint=served.server.address, steps=2)
    assert result.endpoint == served.url  # the model name came from serving.model_name
    assert len(result.images) == 1


def test_generate_waits_while_the_model_loads(served: Served) -> None:
    served.loading()
    timer = threading.Timer(1.0, served.loaded)
    timer.start()
    messages: list[str] = []
    try:
        result = generate(served.url, "a cat", steps=2, load_timeout_s=30, progress=messages.append)
    finally:
        timer.cancel()
    assert len(result.images) == 1
    assert any("Servable not found for request: Latest(stable-diffusion)" in m for m in messages)
    assert messages[-1].startswith("generating 1 image(s) with 2 steps")


def test_a_model_that_never_loads_times_out_naming_what_it_waited_for(served: Served) -> None:
    served.loading()
    with pytest.raises(WaitTimeout, match=f"waiting for the model at {served.url} to load") as err:
        generate(served.url, "a cat", load_timeout_s=0.5)
    assert "sdcluster status" in err.value.hint


def test_a_wrong_model_name_is_not_found_at_once(served: Served) -> None:
    start = time.monotonic()
    with pytest.raises(NotFound, match="serves no such model: Servable not found"):
        generate(f"http://{served.server.address}/v1/models/other-model", "a cat", load_timeout_s=30)
    assert time.monotonic() - start < 10  # not retried until the load deadline


def test_nothing_listening_is_a_clear_error_quickly() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    start = time.monotonic()
    with pytest.raises(
        NotFound, match=f"nothing answers at http://{HOST}:{port}/.*connection refused"
    ) as err:
        generate(f"http://{HOST}:{port}/v1/models/{MODEL}", "a cat", connect_timeout_s=2, load_timeout_s=30)
    assert "sdcluster status" in err.value.hint
    assert time.monotonic() - start < 10


def test_tf_servings_own_504_is_said_as_its_rest_timeout_with_the_options(served: Served) -> None:
    cfg = Config.build(project="demo-proj", user="user:me@example.com", serving={"rest_api_timeout_ms": 50})
    served.servable = Servable.loaded(MODEL, rest_timeout_ms=50, predict_s_per_step=0.02)
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"longer than TF Serving's REST timeout \(50 ms") as err:
        generate(cfg, "a cat", endpoint=served.url, steps=5, load_timeout_s=30)
    assert time.monotonic() - start < 10  # not retried as if the model were loading
    assert "not still loading" in str(err.value)
    assert all(
        option in err.value.hint for option in ("--steps", "--batch-size 1", "GPU", "rest_api_timeout_ms")
    )


def test_tf_servings_400_is_an_invalid_request_with_its_message(served: Served) -> None:
    with pytest.raises(InvalidRequest, match=r"num_steps must be in \[1, 1000\], got 5000"):
        generate(served.url, "a cat", steps=5000)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch_size": -1}, {"steps": True}])
def test_steps_and_batch_size_must_be_positive(served: Served, bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="must be a positive integer"):
        generate(served.url, "a cat", **bad)


# ---- malformed answers -----------------------------------------------------------------------------


@pytest.fixture
def answering() -> Iterator[Any]:
    """A server that answers every predict with the given JSON document (a broken model server)."""
    servers: list[ThreadingHTTPServer] = []

    def start(doc: Any) -> str:
        body = json.dumps(doc).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer((HOST, 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://{HOST}:{server.server_address[1]}/v1/models/{MODEL}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"outputs": []}, "without a list of predictions"),
        ({"predictions": []}, "returned 0 images for a batch of 1"),
        ({"predictions": [[[1, 2]]]}, r"has shape \(1, 2\), not height x width x 3"),
        ({"predictions": [[[[1, 2, 300]]]]}, "values outside 0..255"),
        ({"predictions": [[[[1, 2, 3]], [[1, 2]]]]}, "not an array of integers"),
    ],
)
def test_a_malformed_answer_is_a_clear_error(answering: Any, doc: Any, message: str) -> None:
    with pytest.raises(SdclusterError, match=message):
        generate(answering(doc), "a cat")


def test_the_generate_extra_is_named_when_the_tokenizer_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    gen._tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, "instant_clip_tokenizer", None)  # import now fails
    try:
        with pytest.raises(UsageError, match="needs the generate extra") as err:
            tokenize("a cat")
        assert err.value.hint == 'pip install "sdcluster[generate]"'
    finally:
        gen._tokenizer.cache_clear()


def test_the_emulators_images_say_they_are_synthetic() -> None:
    """A demo's image is never mistaken for the model's: a dark band at the bottom carries light text."""
    [image] = synthetic_images(tokenize("a photo of a cat"), tokenize(""), 25, 1, 512)
    bright = image.max(axis=2) > 200  # the label's letters
    dark = image.max(axis=2) < 8  # the band behind them
    band, above = slice(430, 512), slice(0, 400)
    assert dark[band].mean() > 0.7 and bright[band].mean() > 0.02
    assert dark[above].mean() < 0.01  # the picture itself is not that band
    # Too small to read a label on (the tests' 64-pixel images): left as the model made them.
    [small] = synthetic_images(tokenize("a photo of a cat"), tokenize(""), 25, 1, 64)
    assert (small.max(axis=2) < 8).mean() < 0.05
