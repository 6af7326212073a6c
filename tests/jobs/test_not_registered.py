"""A finished job whose run did not register its model says why (training's kiln.not_registered_reason)."""

from types import SimpleNamespace

import mlflow
from mlflow import MlflowClient

from jobs.settings import Settings
from jobs.store import COMPLETED
from jobs.views import JobViews, Live


def details(run_id: str) -> dict:
    client = MlflowClient()
    runner = SimpleNamespace(training_run=lambda job: run_id, reader=SimpleNamespace(client=client))
    views = JobViews(runner, Settings.from_env({}))  # type: ignore[arg-type]
    return views._details(SimpleNamespace(run_id=run_id, status=COMPLETED), Live())  # type: ignore[arg-type]


def test_the_reason_reaches_the_job_view(mlflow_uri):
    with mlflow.start_run() as run:
        reason = "best_val_iou 0 is no better than the trivial baseline 0"
        mlflow.set_tags({"kiln.registered": "false", "kiln.not_registered_reason": reason})
    found = details(run.info.run_id)
    assert found["registered"] == []
    assert found["not_registered_reason"] == "best_val_iou 0 is no better than the trivial baseline 0"


def test_a_registered_run_has_no_reason(mlflow_uri):
    with mlflow.start_run() as run:
        mlflow.set_tags({"kiln.registered": "true"})
    assert details(run.info.run_id)["not_registered_reason"] is None
