"""One request path for every protocol (serving/dataplane.py): KServe V2 and /invocations requests are shadowed,
profiled for drift and captured as task requests are, and a canary's candidate refuses what production refuses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import FEATURES, Registry, image_example, new_registry, png_bytes, seg_model, tabular_model

from registry.canary import GuardRails, start_canary
from serving.edge.app import create_app
from serving.rollout.canary import bucket
from serving.runtime.profiling import with_reference_profile

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def observed(template_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`tab`: a profiled tabular model with a challenger trained on another seed, captures on at any uncertainty."""
    rng = np.random.default_rng(5)
    reg: Registry = new_registry(template_store, tmp_path_factory.mktemp("dataplane"))
    tab, rows = tabular_model(0)
    reg.register("tab", with_reference_profile(tab, rng.normal(size=(200, 4)), "validation rows"), rows)
    reg.register("tab", tabular_model(7)[0], rows, alias="challenger")
    capture = tmp_path_factory.mktemp("captured")
    settings = reg.settings(("tab",), shadow="challenger", shadow_budget=1.0, drift_budget=1.0, drift_min_samples=10,
                            capture=str(capture), capture_threshold=0.0, capture_per_minute=10_000)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, capture


def test_v2_and_invocations_requests_are_shadowed_profiled_and_captured(observed: Any) -> None:
    client, capture = observed
    batches = np.random.default_rng(6).normal(size=(6, 4, 4)).round(4)  # 6 requests of 4 rows: 24 values a feature
    for batch in batches[:3]:
        v2 = {"inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP32", "data": batch.tolist()}]}
        r = client.post("/v2/models/tab/infer", json=v2)
        assert r.status_code == 200, r.text
    for batch in batches[3:]:
        r = client.post("/invocations", json={"inputs": batch.tolist()})
        assert r.status_code == 200, r.text
    assert client.app.state.rollout.offpath.wait_empty(30)
    shadow = client.get("/v1/models/tab/shadow").json()
    assert shadow["requests_compared"] == 6 and shadow["errors"] == 0, shadow
    assert shadow["agreement"]["metric"] == "label_agreement"
    drift = client.get("/v1/models/tab/drift").json()
    assert drift["observed_requests"] == 6, drift
    assert {f"input.{f}" for f in FEATURES} <= set(drift["features"])
    saved = [json.loads(p.read_text()) for p in capture.rglob("*.json") if not p.name.endswith(".meta.json")]
    assert len(saved) == 6 and all(set(records[0]) == set(FEATURES) for records in saved)


@pytest.fixture(scope="module")
def canary_with_limits(template_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`seg` v1 in production, v2 its canary at 50%; a request may run at most two 32x32 images."""
    reg: Registry = new_registry(template_store, tmp_path_factory.mktemp("limits"))
    reg.register("seg", seg_model(0.5), image_example(32))
    reg.register("seg", seg_model(0.5), image_example(32), alias=None)
    start_canary("seg", version=2, percent=50, guards=GuardRails(min_requests=1000), client=reg.client)
    settings = reg.settings(("seg",), max_request_pixels=2 * 32 * 32)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _key(side: str) -> str:
    """A routing key that the 50% canary of `seg` sends to `side`."""
    return next(k for k in (f"client-{i}" for i in range(1000)) if (bucket("seg", k) < 50) == (side == "candidate"))


def test_an_oversized_request_gets_the_same_413_from_either_side_of_a_canary(canary_with_limits: TestClient) -> None:
    client = canary_with_limits
    assert client.get("/v1/models/seg/canary").json()["state"] == "running"
    tensor = np.zeros((3, 1, 32, 32), np.float32)  # 3 images: over the 2-image limit
    v2 = {
        "inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}]
    }
    answers: dict[str, tuple[int, str]] = {}
    for path, headers in (
        ("/v2/models/seg/versions/1/infer", {}),
        ("/v2/models/seg/versions/2/infer", {}),
        ("/v2/models/seg/infer", {"X-Kiln-Routing-Key": _key("production")}),
        ("/v2/models/seg/infer", {"X-Kiln-Routing-Key": _key("candidate")}),
    ):
        r = client.post(path, json=v2, headers=headers)
        answers[f"{path} {headers}"] = (r.status_code, r.json()["error"])
        assert r.status_code == 413, r.text
        assert r.headers["x-kiln-model-version"] in ("1", "2")
    assert len(set(answers.values())) == 1, answers  # the same refusal, word for word
    assert "KILN_MAX_REQUEST_PIXELS" in next(iter(answers.values()))[1]
    image = png_bytes(np.full((32, 32), 128, np.uint8))
    versions = set()
    for side in ("production", "candidate"):  # one image is within the limit on both sides
        r = client.post("/v1/models/seg/predict", content=image, headers={**PNG, "X-Kiln-Routing-Key": _key(side)})
        assert r.status_code == 200, r.text
        versions.add(r.json()["version"])
    assert versions == {"1", "2"}
    canary = client.get("/v1/models/seg/canary").json()
    assert canary["routed"]["candidate"] >= 2 and canary["window"]["candidate"]["errors"] == 0
