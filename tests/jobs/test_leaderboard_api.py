"""GET /api/leaderboard: the same frontier and best-under-budget as `kiln leaderboard`, and 422s naming the field.

.venv/bin/python -m pytest tests/jobs/test_leaderboard_api.py -q
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from jobs.settings import Settings

# name, best_val_iou, parameters, p50 ms: "wide" is dominated by "mid" (worse, bigger, slower); the rest trade off.
VERSIONS = [("tiny", 0.60, 5_000, 0.5), ("mid", 0.75, 9_000, 0.9), ("wide", 0.70, 40_000, 2.0),
            ("big", 0.85, 500_000, 6.0), ("rows", 0.99, 10, 0.1)]  # fmt: skip


@pytest.fixture
def versions(settings: Settings) -> MlflowClient:
    """Five registered versions whose runs hold the metrics the leaderboard reads; one unplaced (no footprint)."""
    client = MlflowClient(settings.tracking_uri)
    for name, iou, params, p50 in VERSIONS:
        run_id = client.create_run("0").info.run_id
        metrics = {"best_val_iou": iou, "num_parameters": params, "latency_p50_ms": p50, "latency_p99_ms": 2 * p50}
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.create_registered_model(name)
        client.create_model_version(name, f"runs:/{run_id}/model", run_id)
        task = "tabular" if name == "rows" else "segmentation"
        for key, value in {"kiln.task": task, "kiln.metric": "best_val_iou", "kiln.mode": "max"}.items():
            client.set_model_version_tag(name, "1", key, value)
    run_id = client.create_run("0").info.run_id
    client.log_metric(run_id, "best_val_iou", 0.5)
    client.create_registered_model("old")
    client.create_model_version("old", f"runs:/{run_id}/model", run_id, tags={"kiln.task": "segmentation"})
    client.set_registered_model_alias("mid", "production", "1")
    return client


def test_frontier_budgets_and_unplaced(client: TestClient, versions: MlflowClient) -> None:
    body = client.get("/api/leaderboard", params={"task": "segmentation", "metric": "best_val_iou"}).json()
    assert body["frontier"] == ["tiny v1", "mid v1", "big v1"]
    assert {e["model"] for e in body["entries"]} == {"tiny", "mid", "wide", "big", "old"}
    assert body["unplaced"] == ["old v1"] and body["metric"] == "best_val_iou"
    best = {b["max_params"]: b["best"] for b in body["budgets"]}
    assert best[10_000] == "mid v1" and best[50_000] == "mid v1" and best[1_000_000] == "big v1"
    mid = next(e for e in body["entries"] if e["model"] == "mid")
    assert mid["aliases"] == ["production"] and mid["frontier"] is True and mid["latency_p50_ms"] == 0.9

    given = client.get("/api/leaderboard?task=segmentation&max_params=6000&max_latency_ms=1").json()["budgets"]
    assert given == [{"max_params": 6000.0, "max_latency_ms": 1.0, "best": "tiny v1", "task": "segmentation",
                      "metric": "best_val_iou"}]  # fmt: skip
    tight = client.get("/api/leaderboard?max_latency_ms=0.05").json()["budgets"]
    assert tight and all(b["best"] is None and b["max_latency_ms"] == 0.05 for b in tight)  # one per task
    everything = client.get("/api/leaderboard").json()
    assert "rows v1" in everything["frontier"]  # no task filter: the tabular version too


def test_no_versions_is_an_empty_board(client: TestClient) -> None:
    body = client.get("/api/leaderboard?task=detection").json()
    assert body["entries"] == [] and body["frontier"] == [] and body["unplaced"] == []


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("max_params=0", "max_params", "must be a finite number > 0"),
        ("max_params=-5", "max_params", "must be a finite number > 0"),
        ("max_latency_ms=inf", "max_latency_ms", "must be a finite number > 0"),
        ("max_latency_ms=nan", "max_latency_ms", "must be a finite number > 0"),
        ("max_params=lots", "query.max_params", "valid number"),
        ("task=segmentaton", "task", "unknown task 'segmentaton'"),
        ("metric=" + "m" * 300, "query.metric", "at most 200 characters"),
    ],
)
def test_bad_query_values_are_422_naming_the_field(client: TestClient, query: str, field: str, words: str) -> None:
    response = client.get(f"/api/leaderboard?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["detail"]
