"""Drift: PSI and KS on numbers, the profile a model carries from export, drift raised on shifted live inputs and
not on in-distribution ones (tabular and images), the gauges, and the capture of uncertain inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import FEATURES, Registry, image_example, new_registry, png_bytes, seg_model, tabular_model

from core.profile import Profile, categorical_profile, numeric_profile, score
from serving.edge.app import create_app
from serving.runtime.profiling import PROFILE_KEY, with_reference_profile

PNG = {"content-type": "image/png"}


def test_psi_and_ks_tell_a_shift_from_noise() -> None:
    rng = np.random.default_rng(0)
    reference = numeric_profile(rng.normal(size=5000))
    same = score(reference, rng.normal(size=500))
    shifted = score(reference, rng.normal(loc=1.0, size=500))
    assert same.psi < 0.1 and same.level == "stable" and same.ks is not None and same.ks < 0.1
    assert shifted.psi > 0.2 and shifted.level == "shift" and shifted.ks is not None and shifted.ks > 0.3
    labels = categorical_profile(["a"] * 80 + ["b"] * 20)
    assert score(labels, ["a"] * 40 + ["b"] * 10).psi < 0.01
    assert score(labels, ["b"] * 40 + ["c"] * 10).psi > 1.0  # an unseen class pools as OTHER
    missing = score(reference, [np.nan] * 250 + list(rng.normal(size=250)))
    assert missing.psi > 0.2 and missing.missing_live == 0.5  # a feature that stops arriving is drift too


def test_profile_round_trips_through_json() -> None:
    rng = np.random.default_rng(1)
    tab, _ = tabular_model(0)
    proto = with_reference_profile(tab, rng.normal(size=(200, 4)), "test rows")
    text = next(p.value for p in proto.metadata_props if p.key == PROFILE_KEY)
    import json

    profile = Profile.from_json(json.loads(text))
    assert profile.rows == 200 and profile.source == "test rows"
    assert set(profile.inputs) == set(FEATURES) and set(profile.outputs) == {"label", "confidence"}
    assert profile.outputs["label"].kind == "categorical"
    with pytest.raises(ValueError, match="format"):
        Profile.from_json({"format": 99})


@pytest.fixture(scope="module")
def drifting(template_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = np.random.default_rng(2)
    reg: Registry = new_registry(template_store, tmp_path_factory.mktemp("drift"))
    tab, rows = tabular_model(0)
    profiled = with_reference_profile(tab, rng.normal(size=(400, 4)), "validation rows")
    reg.register("steady", profiled, rows)
    reg.register("shifted", profiled, rows)
    images = [rng.integers(40, 160, (32, 32), dtype=np.uint8) for _ in range(60)]
    seg = with_reference_profile(seg_model(0.5), images, "validation images")
    reg.register("seg", seg, image_example(32))
    reg.register("bare", seg_model(0.5), image_example(32))
    capture = tmp_path_factory.mktemp("captured")
    settings = reg.settings(("steady", "shifted", "seg", "bare"), drift_min_samples=50, capture=str(capture),
                            capture_threshold=0.3, capture_per_minute=10_000, drift_budget=1.0)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, capture


def _records(rng: np.random.Generator, shift: float) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in rng.normal(loc=shift, size=(10, 4))]


def _drift(client: TestClient, name: str) -> dict[str, Any]:
    assert client.app.state.rollout.offpath.wait_empty(30)  # type: ignore[attr-defined]
    return dict(client.get(f"/v1/models/{name}/drift").json())


def test_tabular_drift_on_shifted_inputs_only(drifting: Any) -> None:
    client, _ = drifting
    rng = np.random.default_rng(3)
    for _ in range(20):
        assert client.post("/v1/models/steady/predict", json=_records(rng, 0.0)).status_code == 200
        assert client.post("/v1/models/shifted/predict", json=_records(rng, 1.5)).status_code == 200
    steady, shifted = _drift(client, "steady"), _drift(client, "shifted")
    assert steady["observed_requests"] == 20 and steady["reference"]["rows"] == 400
    assert steady["drifted"] == [] and all(f["psi"] < 0.2 for f in steady["features"].values())
    assert {"input.f0", "input.f1", "input.f2", "input.f3"} <= set(shifted["drifted"])
    assert shifted["features"]["input.f0"]["ks"] > 0.3 and shifted["worst"]["psi"] > 0.5
    metrics = client.get("/metrics").text
    assert 'kiln_drift_psi{feature="input.f0",model="shifted"}' in metrics


def test_image_drift_on_brighter_images(drifting: Any) -> None:
    client, _ = drifting
    rng = np.random.default_rng(4)
    for _ in range(60):
        image = rng.integers(40, 160, (32, 32), dtype=np.uint8)
        assert client.post("/v1/models/seg/predict", content=png_bytes(image), headers=PNG).status_code == 200
    before = _drift(client, "seg")
    assert "input.brightness" not in before["drifted"], before["features"]
    for _ in range(60):
        image = rng.integers(150, 256, (32, 32), dtype=np.uint8)
        assert client.post("/v1/models/seg/predict", content=png_bytes(image), headers=PNG).status_code == 200
    after = _drift(client, "seg")
    assert {"input.brightness", "output.foreground_fraction"} <= set(after["drifted"])


def test_a_model_without_profile_says_so(drifting: Any) -> None:
    client, _ = drifting
    client.post("/v1/models/bare/predict", content=png_bytes(np.zeros((32, 32), np.uint8)), headers=PNG)
    body = _drift(client, "bare")
    assert body["reference"] is None and "without a reference profile" in body["note"]


def test_uncertain_inputs_are_captured(drifting: Any) -> None:
    client, capture = drifting
    gray = png_bytes(np.full((32, 32), 128, np.uint8))  # 128/255 - 0.5 ~ 0: every pixel at the threshold
    assert client.post("/v1/models/seg/predict", content=gray, headers=PNG).status_code == 200
    _drift(client, "seg")
    saved = [p for p in Path(capture).rglob("*.png") if p.read_bytes() == gray]
    assert len(saved) == 1
    meta = saved[0].with_name(saved[0].name.removesuffix(".png") + ".meta.json")
    assert '"uncertainty": 1.0' in meta.read_text() and '"model": "seg"' in meta.read_text()
