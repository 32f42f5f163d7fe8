"""The TF Serving stand-in's REST API, over real HTTP: version status, predict shapes, TF Serving's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from sdcluster.emulator.core import Knobs, World
from sdcluster.emulator.tfserving import IMAGE_SIZE_ENV, ModelServer, Servable, VersionStatus, encode_uint8

MODEL = "stable-diffusion"
SIZE = 32
START, END = 49406, 49407  # CLIP's start/end-of-text tokens


def prompt(*ids: int) -> list[int]:
    """77 tokens, padded with end-of-text like the keras-cv tokenizer does."""
    return [START, *ids, *[END] * (76 - len(ids))]


def instance(tokens: list[Any] | None = None, **overrides: Any) -> dict[str, Any]:
    inst = {
        "tokens": tokens or prompt(320, 1125, 539),
        "negative_prompt_tokens": prompt(),
        "num_steps": 25,
        "batch_size": 1,
    }
    inst.update(overrides)
    return inst


class Served:
    """A stand-in answering from ``self.servable`` (tests swap it to change what the process serves)."""

    def __init__(self, world: World) -> None:
        self.servable = Servable.loaded(MODEL)
        self.world = world
        self.server = ModelServer("127.0.5.9", 0, lambda: self.servable, image_size=SIZE, world=world)
        self.http = requests.Session()

    @property
    def base(self) -> str:
        return f"http://{self.server.address}/v1/models/{MODEL}"

    def predict(self, body: Any, path: str = ":predict") -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.base + path, data=data, timeout=10)

    def images(self, *instances: dict[str, Any]) -> np.ndarray[Any, Any]:
        r = self.predict({"signature_name": "serving_default", "instances": list(instances)})
        assert r.status_code == 200, r.text
        return np.array(r.json()["predictions"])


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(World(Knobs()))
    s.server.start()
    yield s
    s.server.stop()


def test_status_lists_every_version_newest_first_and_only_available_ones_serve(served: Served) -> None:
    served.servable = Servable(
        MODEL,
        {
            1: VersionStatus("AVAILABLE"),
            2: VersionStatus("LOADING"),
            3: VersionStatus("END", "NOT_FOUND", "Could not find SavedModel .pb or .pbtxt"),
        },
    )
    status = served.http.get(served.base, timeout=10)
    # 200 while version 2 loads: why an httpGet readiness probe on this path is not enough.
    assert status.status_code == 200
    assert [
        (v["version"], v["state"], v["status"]["error_code"]) for v in status.json()["model_version_status"]
    ] == [
        ("3", "END", "NOT_FOUND"),
        ("2", "LOADING", "OK"),
        ("1", "AVAILABLE", "OK"),
    ]
    assert served.http.get(served.base + "/versions/2/metadata", timeout=10).status_code == 404
    early = served.predict({"instances": [instance()]}, "/versions/2:predict")
    assert early.status_code == 404
    assert early.json() == {"error": f"Servable not found for request: Specific({MODEL}, 2)"}
    meta = served.http.get(served.base + "/metadata", timeout=10).json()
    assert meta["model_spec"]["version"] == "1"  # the latest AVAILABLE version serves

    served.servable = Servable.loaded(MODEL)
    assert served.http.get(served.base, timeout=10).json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert served.http.get(served.base + "/versions/1", timeout=10).status_code == 200
    meta = served.http.get(served.base + "/metadata", timeout=10).json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == ["batch_size", "negative_prompt_tokens", "num_steps", "tokens"]
    dims = [d["size"] for d in signature["outputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == ["-1", str(SIZE), str(SIZE), "3"]


def test_predict_returns_one_image_per_batch_entry(served: Served) -> None:
    images = served.images(instance(batch_size=3))
    assert images.shape == (3, SIZE, SIZE, 3)
    assert images.min() >= 0 and images.max() <= 255
    assert images.dtype.kind == "i"
    # Two instances: their images follow each other in `predictions`.
    both = served.images(instance(batch_size=2), instance(prompt(1000), batch_size=1))
    assert both.shape == (3, SIZE, SIZE, 3)


def test_same_prompt_same_pixels_different_prompt_different_pixels(served: Served) -> None:
    first = served.images(instance(batch_size=2))
    again = served.images(instance(batch_size=2))
    other = served.images(instance(prompt(4558, 530), batch_size=2))
    fewer_steps = served.images(instance(num_steps=2, batch_size=2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], fewer_steps[0])
    assert not np.array_equal(first[0], first[1])  # a batch is not one image repeated


def test_columnar_inputs_answer_outputs_with_the_same_pixels(served: Served) -> None:
    inst = instance(batch_size=2)
    columnar = {name: [value] for name, value in inst.items()}
    r = served.predict({"inputs": columnar})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["outputs"]
    assert np.array_equal(np.array(r.json()["outputs"]), served.images(inst))


def test_versioned_predict(served: Served) -> None:
    assert served.predict({"instances": [instance()]}, "/versions/1:predict").status_code == 200
    r = served.predict({"instances": [instance()]}, "/versions/2:predict")
    assert r.status_code == 404
    assert r.json() == {"error": f"Servable not found for request: Specific({MODEL}, 2)"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b'{"instances": [', "JSON Parse error: Invalid value. at offset: 15"),
        (b"[]", "Is not object"),
        ({"instance": [instance()]}, "Missing 'inputs' or 'instances' key"),
        (
            {"signature_name": "predict", "instances": [instance()]},
            'Serving signature name: "predict" not found',
        ),
        ({"signature_name": 1, "instances": [instance()]}, "'signature_name' key must be a string value"),
        ({"instances": [instance()], "inputs": {}}, "expecting only one of 'inputs' or 'instances'"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": [instance(tokens=[1] * 76)]}, "Incompatible shapes: input 'tokens' has shape [1,76]"),
        ({"instances": [instance(), instance(tokens=[1] * 76)]}, "Expecting tensor size: 77 but got: 76"),
        (
            {"instances": [instance(tokens=["a"] * 77)]},
            'JSON Value: "a" Type: String is not of expected type: int32',
        ),
        (
            {"instances": [instance(num_steps=2.5)]},
            "JSON Value: 2.5 Type: Number is not of expected type: int32",
        ),
        ({"instances": [instance(seed=1)]}, "does not have named input: seed"),
        (
            {"instances": [{"tokens": prompt()}]},
            "must only have keys: batch_size,negative_prompt_tokens,num_steps",
        ),
        ({"instances": [instance(num_steps=0)]}, "num_steps must be in [1, 1000], got 0"),
        ({"instances": [instance(batch_size=9)]}, "batch_size must be in [1, 8], got 9"),
        ({"instances": [instance(tokens=prompt(50000))]}, "indices[0,1] = 50000 is not in [0, 49408)"),
        (
            {"inputs": {**instance(), "num_steps": [25]}},
            "Incompatible shapes: input 'batch_size' has shape []",
        ),
        ({"inputs": {"tokens": [prompt()]}}, "Missing named input: batch_size in 'inputs' object."),
    ],
)
def test_bad_requests_get_400_with_tf_serving_error(served: Served, body: Any, message: str) -> None:
    r = served.predict(body)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert list(r.json()) == ["error"]
    assert message in r.json()["error"]


def test_unknown_model_and_paths(served: Served) -> None:
    base = f"http://{served.server.address}"
    status = served.http.get(f"{base}/v1/models/sd-typo", timeout=10)
    assert status.status_code == 404
    assert status.json() == {"error": "Could not find any versions of model sd-typo"}
    r = served.http.post(f"{base}/v1/models/sd-typo:predict", json={"instances": [instance()]}, timeout=10)
    assert r.status_code == 404
    assert r.json() == {"error": "Servable not found for request: Latest(sd-typo)"}
    malformed = served.http.get(f"{base}/v1/models/{MODEL}:predict", timeout=10)
    assert malformed.status_code == 400
    assert malformed.json() == {"error": f"Malformed request: GET /v1/models/{MODEL}:predict"}
    assert served.http.get(f"{base}/healthz", timeout=10).status_code == 404


def test_stop_closes_the_port_and_open_connections(served: Served) -> None:
    served.images(instance())  # the session now holds a keep-alive connection
    served.server.stop()
    with pytest.raises(requests.ConnectionError):
        served.images(instance())
    with pytest.raises(requests.ConnectionError):
        requests.get(served.base, timeout=10)


def test_requests_are_logged_as_serving_calls(served: Served) -> None:
    served.images(instance())
    served.predict(b"{")
    entries = [e for e in served.world.log.entries() if e.service == "serving"]
    assert [(e.method, e.code, e.mutating) for e in entries] == [
        ("predict", "OK", False),
        ("predict", "INVALID_ARGUMENT", False),
    ]
    assert entries[0].resource == f"{served.server.address}/v1/models/{MODEL}:predict"


def test_injected_faults_answer_503_or_429() -> None:
    server = ModelServer(
        "127.0.5.9", 0, lambda: Servable.loaded(MODEL), image_size=SIZE, world=World(Knobs(fault_rate=1.0))
    )
    server.start()
    try:
        r = requests.post(
            f"http://{server.address}/v1/models/{MODEL}:predict", json={"instances": [instance()]}
        )
    finally:
        server.stop()
    assert r.status_code in (503, 429)
    assert "unavailable" in r.json()["error"] or "Rate limit" in r.json()["error"]


def test_image_size_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = lambda: Servable.loaded(MODEL)  # noqa: E731
    monkeypatch.setenv(IMAGE_SIZE_ENV, "8")
    assert ModelServer("127.0.5.9", 0, loaded).image_size == 8
    assert ModelServer("127.0.5.9", 0, loaded, image_size=16).image_size == 16
    monkeypatch.setenv(IMAGE_SIZE_ENV, "big")
    with pytest.raises(ValueError, match=IMAGE_SIZE_ENV):
        ModelServer("127.0.5.9", 0, loaded)
    monkeypatch.delenv(IMAGE_SIZE_ENV)
    assert ModelServer("127.0.5.9", 0, loaded).image_size == 512


def test_a_predict_longer_than_the_rest_timeout_is_tf_servings_504(served: Served) -> None:
    # 25 steps x 1 image x 10 ms = 0.25 s of compute, against --rest_api_timeout_in_ms=100.
    served.servable = Servable.loaded(MODEL, rest_timeout_ms=100, predict_s_per_step=0.01)
    r = served.predict({"instances": [instance()]})
    assert r.status_code == 504
    assert r.json() == {"error": "Timed out waiting for notification"}
    # Within the deadline the same compute answers.
    served.servable = Servable.loaded(MODEL, rest_timeout_ms=1000, predict_s_per_step=0.01)
    assert served.images(instance()).shape == (1, SIZE, SIZE, 3)


@pytest.mark.parametrize("shape", [(3,), (2, 5), (2, 3, 4, 3), (2, 0, 3)])
def test_uint8_encoding_is_valid_json_of_the_same_values(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    array.flat[:3] = [0, 9, 255][: array.size]
    assert json.loads(encode_uint8(array)) == array.tolist()
