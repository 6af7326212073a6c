"""Registry routes: registered models with their production version, gated promotion and rollback over HTTP.

.venv/bin/python -m pytest tests/jobs/test_models_api.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from jobs.settings import Settings


@pytest.fixture
def two_versions(settings: Settings, tmp_path: Path) -> MlflowClient:
    """edgnet v1 (val_iou 0.6) and v2 (val_iou 0.7), judged by val_iou through the model's kiln.metric tag."""
    mlflow = MlflowClient(settings.tracking_uri)
    mlflow.create_registered_model("edgnet", tags={"kiln.metric": "val_iou"})
    (tmp_path / "model").mkdir()
    for iou in (0.6, 0.7):
        run_id = mlflow.create_run("0").info.run_id
        mlflow.log_metric(run_id, "val_iou", iou, step=1)
        mlflow.create_model_version("edgnet", source=str(tmp_path / "model"), run_id=run_id)
    return mlflow


def test_models_list_versions_metrics_and_production(client: TestClient, two_versions: MlflowClient) -> None:
    (model,) = client.get("/api/models").json()["models"]
    assert (model["name"], model["production_version"], model["metric_hint"]) == ("edgnet", None, "val_iou")
    assert [(v["version"], v["metrics"]) for v in model["versions"]] == [(2, {"val_iou": 0.7}), (1, {"val_iou": 0.6})]


def test_promotion_is_gated_and_recorded(client: TestClient, two_versions: MlflowClient) -> None:
    first = client.post("/api/models/edgnet/promote", json={"version": 1, "reason": "baseline", "by": "ana"})
    assert first.status_code == 200 and first.json()["moved"] is True
    assert client.get("/api/models/edgnet").json()["production_version"] == 1

    refused = client.post("/api/models/edgnet/promote", json={"version": 2, "min_value": 0.9})
    assert refused.status_code == 409
    assert "refused to promote edgnet v2 to production" in refused.json()["detail"]
    assert [c["passed"] for c in refused.json()["checks"] if c["gate"] != "logged"].count(False) == 1
    assert client.get("/api/models/edgnet").json()["production_version"] == 1

    better = client.post("/api/models/edgnet/promote", json={"version": 2, "reason": "higher IoU"})
    assert better.status_code == 200 and better.json()["previous_version"] == 1
    model = client.get("/api/models/edgnet").json()
    assert model["production_version"] == 2
    oldest_first = [(e["action"], e["version"], e["by"]) for e in reversed(model["history"])]
    assert oldest_first[0] == ("promote", 1, "ana") and oldest_first[-1][:2] == ("promote", 2)

    back = client.post("/api/models/edgnet/rollback", json={"reason": "drift"})
    assert back.status_code == 200 and back.json()["version"] == 1
    assert int(two_versions.get_model_version_by_alias("edgnet", "production").version) == 1


def test_registry_errors_keep_their_status(client: TestClient, two_versions: MlflowClient) -> None:
    missing = client.post("/api/models/segnet/promote", json={"version": 1})
    assert missing.status_code == 404 and "unknown registered model 'segnet'" in missing.json()["detail"]
    assert client.post("/api/models/edgnet/promote", json={"version": 9}).status_code == 404
    bad = client.post("/api/models/edgnet/promote", json={"version": "two"})
    assert bad.status_code == 400 and "version 'two'" in bad.json()["detail"]
    assert client.post("/api/models/edgnet/promote", json={"version": 1, "colour": "red"}).status_code == 422
    assert client.post("/api/models/edgnet/rollback", json={}).status_code == 409  # nothing promoted yet


def test_versions_carry_their_aliases_and_the_latest_metrics(client: TestClient, two_versions: MlflowClient) -> None:
    (model,) = client.get("/api/models").json()["models"]
    assert model["latest_metrics"] == {"val_iou": 0.7}  # shown before any alias exists
    first = client.post("/api/models/edgnet/promote", json={"version": 2})
    assert first.status_code == 200 and first.json()["warnings"] == []  # no kiln.baseline on these runs
    client.post("/api/models/edgnet/promote", json={"version": 1, "alias": "staging"})
    model = client.get("/api/models/edgnet").json()
    assert [(v["version"], v["aliases"]) for v in model["versions"]] == [(2, ["production"]), (1, ["staging"])]
    assert model["mlflow_url"] == "http://127.0.0.1:5000/#/models/edgnet"
    assert model["versions"][0]["mlflow_url"].endswith("/#/models/edgnet/versions/2")


def test_a_refusal_offers_the_page_force_not_a_cli_flag(client: TestClient, two_versions: MlflowClient) -> None:
    client.post("/api/models/edgnet/promote", json={"version": 2})
    refused = client.post("/api/models/edgnet/promote", json={"version": 1})
    body = refused.json()
    assert refused.status_code == 409 and body["can_force"] is True
    assert "--force" not in body["detail"] and "val_iou 0.6 is worse than production v2's 0.7" in body["detail"]
    forced = client.post("/api/models/edgnet/promote", json={"version": 1, "force": True, "reason": "hotfix"})
    assert forced.status_code == 200 and forced.json()["forced"] is True
    missing = client.post("/api/models/nope/promote", json={"version": 1}).json()
    assert "can_force" not in missing


def test_a_run_knows_its_registered_versions_and_newest_picture(settings: Settings, tmp_path: Path) -> None:
    import numpy as np

    from jobs.views import latest_preview, registered_versions

    mlflow = MlflowClient(settings.tracking_uri)
    run_id = mlflow.create_run("0").info.run_id
    assert latest_preview(mlflow, run_id, finished=False) is None
    mlflow.create_registered_model("seg")
    (tmp_path / "model").mkdir()
    mlflow.create_model_version("seg", source=str(tmp_path / "model"), run_id=run_id)
    mlflow.set_registered_model_alias("seg", "production", "1")
    assert registered_versions(mlflow, run_id) == [
        {"name": "seg", "version": 1, "status": "READY", "aliases": ["production"]}
    ]
    for name in ("epoch_001.png", "epoch_010.png", "best.png"):
        (tmp_path / name).write_bytes(np.zeros(8, np.uint8).tobytes())
        mlflow.log_artifact(run_id, str(tmp_path / name), "overlays")
    assert latest_preview(mlflow, run_id, finished=False) == "overlays/epoch_010.png"
    assert latest_preview(mlflow, run_id, finished=True) == "overlays/best.png"  # the registered weights


def test_canary_through_the_api(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    mlflow = MlflowClient(settings.tracking_uri)
    mlflow.create_registered_model("canaried", tags={"kiln.metric": "val_iou"})
    (tmp_path / "canaried").mkdir()
    for iou in (0.6, 0.7):
        run_id = mlflow.create_run("0").info.run_id
        mlflow.log_metric(run_id, "val_iou", iou)
        mlflow.create_model_version("canaried", source=str(tmp_path / "canaried"), run_id=run_id)
    assert client.post("/api/models/canaried/promote", json={"version": 1}).status_code == 200
    assert client.get("/api/models/canaried/canary").json() == {"running": False}
    started = client.post("/api/models/canaried/canary", json={"version": 2, "percent": 10,
                                                                "guards": {"min_requests": 40}})  # fmt: skip
    assert started.status_code == 200 and started.json()["percent"] == 10
    assert started.json()["guards"]["min_requests"] == 40
    assert client.post("/api/models/canaried/canary", json={"percent": 30}).json()["step"] == 1
    bad = client.post("/api/models/canaried/canary", json={"percent": 30, "guards": {"max_errors": 1}})
    assert bad.status_code == 400 and "max_errors" in bad.json()["detail"]
    assert client.post("/api/models/canaried/canary", json={"percent": 130}).status_code == 422
    finished = client.post("/api/models/canaried/canary/finish", json={})
    assert finished.status_code == 200 and finished.json()["version"] == 2
    assert client.delete("/api/models/canaried/canary").status_code == 409  # nothing left to end
