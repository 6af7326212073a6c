"""Registry fixtures: a fresh real sqlite MLflow store per test, and a factory for tiny registered versions.

    .venv/bin/python -m pytest tests/registry -q

Each test gets its own real sqlite store from the shared `mlflow_uri` fixture (a copy of one migrated
template, so no per-test schema migrations).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

MakeVersion = Callable[..., int]


@pytest.fixture
def registry_uri(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared per-test store (a copy of the session's template), with a fixed promoting user."""
    monkeypatch.setenv("KILN_USER", "tester")
    return mlflow_uri


@pytest.fixture
def client(registry_uri: str) -> MlflowClient:
    return MlflowClient(registry_uri)


@pytest.fixture
def make_version(client: MlflowClient, tmp_path: Path) -> MakeVersion:
    """`make_version(model, {"val_iou": 0.8}, run_tags={...})` logs a run holding a trivial model and registers it.

    Returns the new version number. The "model" is an MLmodel-shaped text file: the registry only needs
    an artifact location and the source run, and promotion never loads the model.
    """
    experiment = client.create_experiment("registry-tests", artifact_location=(tmp_path / "artifacts").as_uri())

    def make(model: str, metrics: dict[str, float], *, run_tags: dict[str, str] | None = None) -> int:
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metrics(metrics)
            mlflow.set_tags(run_tags or {})
            mlflow.log_text("flavors: {}\n", "model/MLmodel")
        if not client.search_registered_models(f"name = '{model}'"):
            client.create_registered_model(model)
        source = f"{run.info.artifact_uri}/model"
        return int(client.create_model_version(model, source, run_id=run.info.run_id).version)

    return make
