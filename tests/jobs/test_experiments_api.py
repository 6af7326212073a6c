"""The jobs service's hooks into experiments: a finished job's advice, and the promote form's significance level.

.venv/bin/python -m pytest tests/jobs/test_experiments_api.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from jobs.settings import Settings
from tests.jobs.jobs_helpers import wait_for


@pytest.mark.slow
def test_a_finished_job_has_advice(client: TestClient) -> None:
    job_id = client.post("/api/training/start", json={"entry_point": "tiny", "params": {"epochs": 5}}).json()["job_id"]
    done = wait_for(client, job_id, lambda j: j["status"] in ("completed", "failed"))
    assert done["status"] == "completed"
    body = client.get(f"/api/training/{job_id}/advice").json()
    assert body["run_id"] == done["run_id"]
    assert "5 epochs, status FINISHED" in body["advice"]["headline"]
    assert isinstance(body["advice"]["findings"], list)


def test_promote_form_passes_the_significance_level(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    mlflow = MlflowClient(settings.tracking_uri)
    mlflow.create_registered_model("edgnet", tags={"kiln.metric": "val_iou"})
    (tmp_path / "model").mkdir()
    for iou in (0.6, 0.7):
        run_id = mlflow.create_run("0").info.run_id
        mlflow.log_metric(run_id, "val_iou", iou)
        mlflow.create_model_version("edgnet", source=str(tmp_path / "model"), run_id=run_id)
    assert client.post("/api/models/edgnet/promote", json={"version": 1}).status_code == 200
    refused = client.post("/api/models/edgnet/promote", json={"version": 2, "significance": 0.05})
    assert refused.status_code == 409
    assert "cannot judge significance" in refused.json()["detail"]
    history = client.get("/api/models/edgnet").json()["history"]
    assert history[0]["action"] == "refused" and history[0]["significance"]["judged"] is False
    bad = client.post("/api/models/edgnet/promote", json={"version": 2, "significance": 2})
    assert bad.status_code == 400 and "between 0 and 0.5" in bad.json()["detail"]
