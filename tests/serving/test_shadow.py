"""Shadow traffic: the agreement numbers per task, a challenger that agrees and one that does not, answers that
never wait for or fail with the challenger, and a challenger that cannot load leaving production alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import Registry, image_example, png_bytes, seg_model, tabular_model

from serving.edge.app import create_app
from serving.rollout.shadow import _Pooled, agreement, box_f1, mask_iou
from serving.runtime.postprocess import Box, DetectionResult, SegmentationResult, TabularResult, TabularResults

PNG = {"content-type": "image/png"}


def _seg(mask: np.ndarray) -> SegmentationResult:
    return SegmentationResult(
        mask=mask.astype(np.uint8), logits=mask.astype(np.float32), activation="none", threshold=0.5
    )


def _det(*boxes: tuple[int, tuple[float, float, float, float]]) -> DetectionResult:
    return DetectionResult(64, 64, tuple(Box(c, str(c), 0.9, xyxy) for c, xyxy in boxes))


def test_mask_iou_and_box_f1() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[:4] = 1
    b = np.zeros((8, 8), np.uint8)
    b[:2] = 1
    assert mask_iou(_seg(a), _seg(a)) == 1.0
    assert mask_iou(_seg(a), _seg(b)) == pytest.approx(0.5)
    assert mask_iou(_seg(np.zeros((8, 8))), _seg(np.zeros((8, 8)))) == 1.0  # both empty: they agree
    one, shifted = (0, (0.0, 0.0, 10.0, 10.0)), (0, (1.0, 1.0, 11.0, 11.0))  # IoU 0.68
    far, other_class = (0, (30.0, 30.0, 40.0, 40.0)), (1, (0.0, 0.0, 10.0, 10.0))
    assert box_f1(_det(one), _det(shifted)) == 1.0
    assert box_f1(_det(one, far), _det(shifted)) == pytest.approx(2 / 3)
    assert box_f1(_det(one), _det(other_class)) == 0.0  # same place, other class: no match
    assert box_f1(_det(), _det()) == 1.0 and box_f1(_det(one), _det()) == 0.0


def test_tabular_and_regression_agreement() -> None:
    def results(*rows: tuple[str, list[float]]) -> TabularResults:
        return TabularResults(
            (TabularResult(label=lab, probabilities=np.array(p)) for lab, p in rows), ["a", "b"], False
        )

    same = agreement(results(("a", [0.9, 0.1]), ("b", [0.2, 0.8])), results(("a", [0.8, 0.2]), ("a", [0.6, 0.4])))
    assert same["label_agreement"] == 0.5 and same["probability_mad"] == pytest.approx(0.25)
    pooled = _Pooled()
    x = np.arange(10.0)
    pooled.add(x, 2 * x + 1)
    assert pooled.pearson() == pytest.approx(1.0)
    pooled.add(x, -x)
    assert pooled.pearson() is not None and pooled.pearson() < 0.5  # type: ignore[operator]


def _images(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    return [png_bytes(rng.integers(0, 256, (32, 32), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def shadowed(template_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`same` has a challenger equal to production, `differs` one that cuts its masks elsewhere, `tab` a tabular
    challenger trained on another seed, `broken` a challenger whose file is corrupt."""
    from serving_helpers import new_registry

    reg: Registry = new_registry(template_store, tmp_path_factory.mktemp("shadow"))
    for name, challenger in (("same", seg_model(0.5)), ("differs", seg_model(0.2)), ("broken", seg_model(0.5))):
        reg.register(name, seg_model(0.5), image_example(32))
        reg.register(name, challenger, image_example(32), alias="challenger")
    reg.corrupt("broken", "2")
    tab, rows = tabular_model(0)
    reg.register("tab", tab, rows)
    reg.register("tab", tabular_model(7)[0], rows, alias="challenger")
    app = create_app(
        reg.settings(("same", "differs", "broken", "tab"), shadow="challenger", drift_min_samples=10, shadow_budget=1.0)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _shadow(client: TestClient, name: str, images: list[bytes]) -> dict[str, Any]:
    for data in images:
        r = client.post(f"/v1/models/{name}/predict", content=data, headers=PNG)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "1"  # production answers, always
    assert client.app.state.rollout.offpath.wait_empty(30)  # type: ignore[attr-defined]
    body = client.get(f"/v1/models/{name}/shadow").json()
    return dict(body)


def test_a_challenger_that_agrees(shadowed: TestClient) -> None:
    body = _shadow(shadowed, "same", _images(12))
    assert body["challenger_version"] == "2" and body["production_version"] == "1"
    assert body["requests_compared"] == 12 and body["errors"] == 0
    assert body["agreement"]["metric"] == "mask_iou"
    assert body["agreement"]["mean"] == 1.0 and body["agreement"]["ci95"] == [1.0, 1.0]
    assert body["latency_ms"]["production"]["p50"] > 0 and body["latency_ms"]["challenger"]["p99"] > 0
    metrics = shadowed.get("/metrics").text
    assert 'kiln_shadow_compared_total{challenger_version="2",model="same"} 12.0' in metrics
    assert 'kiln_shadow_agreement{metric="mask_iou",model="same"} 1.0' in metrics


def test_a_challenger_that_does_not(shadowed: TestClient) -> None:
    body = _shadow(shadowed, "differs", _images(12))
    assert body["requests_compared"] == 12
    mean, (low, high) = body["agreement"]["mean"], body["agreement"]["ci95"]
    # random pixels: production marks those above 0.5, the challenger those above 0.2 -> IoU about 0.5/0.8
    assert 0.5 < mean < 0.75 and low < mean < high < 0.8


def test_tabular_challenger_label_agreement(shadowed: TestClient) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        rows = [dict(zip(["f0", "f1", "f2", "f3"], map(float, r), strict=True)) for r in rng.normal(size=(4, 4))]
        assert shadowed.post("/v1/models/tab/predict", json=rows).status_code == 200
    assert shadowed.app.state.rollout.offpath.wait_empty(30)  # type: ignore[attr-defined]
    body = shadowed.get("/v1/models/tab/shadow").json()
    assert body["requests_compared"] == 10 and body["agreement"]["metric"] == "label_agreement"
    assert 0.5 <= body["agreement"]["mean"] <= 1.0
    assert "probability_mad" in body["metrics"]


def test_a_challenger_that_cannot_load_leaves_production_alone(shadowed: TestClient) -> None:
    body = _shadow(shadowed, "broken", _images(3))
    assert body["challenger_version"] is None and body["requests_compared"] == 0
    assert body["challenger_refused"]["version"] == "2"
    status = shadowed.get("/v1/models/broken").json()
    assert status["version"] == "1" and status["last_swap_error"] is None


def test_a_failing_challenger_costs_the_client_nothing(shadowed: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = shadowed.app.state.rollout.shadows["same"]  # type: ignore[attr-defined]

    def explode(feeds: Any) -> Any:
        raise RuntimeError("challenger session died")

    monkeypatch.setattr(shadow.challenger.predictor, "run", explode)
    before = shadow.stats.errors
    body = _shadow(shadowed, "same", _images(4))
    assert body["errors"] == before + 4 and "challenger session died" in body["last_error"]


def test_unknown_model_is_404(shadowed: TestClient) -> None:
    r = shadowed.get("/v1/models/ghost/shadow")
    assert r.status_code == 404 and "ghost" in r.json()["error"]


def test_deploy_rules_and_dashboard_use_metrics_the_server_exports(shadowed: TestClient) -> None:
    """Every kiln_* series the alert rules and the Grafana dashboard query is one /metrics declares."""
    import re
    from pathlib import Path

    def base(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    exported = {base(n) for n in re.findall(r"^# TYPE (kiln_\w+) ", shadowed.get("/metrics").text, re.MULTILINE)}
    deploy = Path(__file__).parents[2] / "deploy"
    for path in (deploy / "prometheus" / "kiln-alerts.yml", deploy / "grafana" / "kiln-dashboard.json"):
        used = set(re.findall(r"\b(kiln_[a-z_]+)", path.read_text()))
        bases = {base(name) for name in used}
        assert bases and bases <= exported, (path.name, sorted(bases - exported))


def test_shadow_runs_keep_to_their_share_of_time() -> None:
    """A shadow job that took d seconds keeps shadow jobs out for d * (1 / budget - 1): dropped, not queued."""
    import time

    from serving.rollout.offpath import OffPath

    worker = OffPath(budgets={"shadow": 0.1})
    ran: list[int] = []

    def slow() -> None:
        time.sleep(0.05)
        ran.append(1)

    assert worker.submit(slow, kind="shadow")
    assert worker.wait_empty(5)
    assert not worker.submit(lambda: ran.append(2), kind="shadow")  # within the next ~0.45 s: over budget
    assert worker.submit(lambda: ran.append(3), kind="drift")  # another kind has its own budget (none here)
    assert worker.wait_empty(5)
    time.sleep(0.5)
    assert worker.submit(lambda: ran.append(4), kind="shadow") and worker.wait_empty(5)
    assert ran == [1, 3, 4] and worker.dropped == 1
    worker.close()
