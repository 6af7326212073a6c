"""Shared test fixtures: a real MLflow sqlite store per test, offline settings, tiny data helpers.

    .venv/bin/python -m pytest tests -q
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before any test module imports mlflow or ultralytics.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh sqlite tracking store whose default experiment keeps its artifacts under tmp_path.

    MLflow fixes experiment 0's artifact root from the working directory when the store is created,
    so the store is created from inside tmp_path and the test then returns to where it was.
    """
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.MlflowClient(uri).search_experiments()
    finally:
        os.chdir(cwd)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
