"""Registry fixtures: a fresh real sqlite MLflow store per test, and a factory for tiny registered versions.

    .venv/bin/python -m pytest tests/registry -q

Creating an MLflow sqlite store runs every schema migration (about 3 s on 2 shared cores), and these tests
need a fresh store each. So the store is created once per session as a template and each test gets its
own copy of the file (milliseconds): the same real store `mlflow_uri` gives, without the migrations.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

MakeVersion = Callable[..., int]


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / "mlflow.db"
    cwd = Path.cwd()
    os.chdir(folder)  # experiment 0 takes its artifact root from the working directory at creation
    try:
        MlflowClient(f"sqlite:///{path}").search_experiments()
    finally:
        os.chdir(cwd)
    return path


@pytest.fixture
def registry_uri(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLFLOW_TRACKING_URI pointing at this test's own copy of an empty sqlite store."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(template_db, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KILN_USER", "tester")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


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
