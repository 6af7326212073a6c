"""The jobs API refuses the names and booleans the registry would refuse, before anything is created or queued.

.venv/bin/python -m pytest tests/jobs/test_names.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from jobs.settings import Settings


@pytest.fixture
def edgnet(settings: Settings, tmp_path: Path) -> MlflowClient:
    mlflow = MlflowClient(settings.tracking_uri)
    mlflow.create_registered_model("edgnet", tags={"kiln.metric": "val_iou"})
    (tmp_path / "model").mkdir()
    run_id = mlflow.create_run("0").info.run_id
    mlflow.log_metric(run_id, "val_iou", 0.6, step=1)
    mlflow.create_model_version("edgnet", source=str(tmp_path / "model"), run_id=run_id)
    return mlflow


@pytest.mark.parametrize("alias", ["Üq4dZ3", "¼", "__main__", "latest", "v2"])
def test_aliases_outside_the_pattern_are_refused(client: TestClient, edgnet: MlflowClient, alias: str) -> None:
    res = client.post("/api/models/edgnet/promote", json={"version": 1, "alias": alias, "force": True})
    assert res.status_code in (400, 422), res.text
    assert f"alias {alias!r}" in res.json()["detail"]
    assert edgnet.get_registered_model("edgnet").aliases == {}


@pytest.mark.parametrize("force", [0, 1, "false", "yes", None])
def test_force_must_be_a_json_boolean(client: TestClient, edgnet: MlflowClient, force: object) -> None:
    res = client.post("/api/models/edgnet/promote", json={"version": 1, "force": force})
    assert res.status_code == 422, res.text
    assert res.json()["field"] == "force"
    assert edgnet.get_registered_model("edgnet").aliases == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entry_point": "tiny", "experiment_name": "$(touch /tmp/x);`id`"}, "experiment_name"),
        ({"entry_point": "tiny", "experiment_name": "ünïcode"}, "experiment_name"),
    ],
)
def test_bad_experiment_and_model_names_are_a_422_at_start(
    client: TestClient, settings: Settings, body: dict[str, object], field: str
) -> None:
    res = client.post("/api/training/start", json=body)
    assert res.status_code == 422, res.text
    assert res.json()["field"].startswith(field)
    assert client.get("/api/training/list").json()["jobs"] == []
    names = [e.name for e in MlflowClient(settings.tracking_uri).search_experiments()]
    assert names == ["Default"]
