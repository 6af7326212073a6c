"""Shared test fixtures: a real MLflow sqlite store per test, offline settings, tiny data helpers.

.venv/bin/python -m pytest tests -q
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before any test module imports mlflow or ultralytics.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated, empty sqlite store per session: creating one costs seconds of schema migrations."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow-template")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    finally:
        os.chdir(cwd)
    return root / "mlflow.db"


def copy_store(template: Path, folder: Path) -> Path:
    """Copy the template store into `folder`, with experiment 0's artifacts under `folder/mlruns`."""
    db = folder / "mlflow.db"
    shutil.copyfile(template, db)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(folder / "mlruns" / "0"),)
        )
    return db


@pytest.fixture
def make_store(mlflow_template_db: Path) -> Callable[[Path], Path]:
    """`make_store(folder)` -> a fresh store file in `folder`, for tests that hand the URI to a service."""
    return lambda folder: copy_store(mlflow_template_db, folder)


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template_db: Path) -> Iterator[str]:
    """A fresh sqlite tracking store (a copy of the template) whose default experiment keeps its artifacts
    under tmp_path."""
    import mlflow

    db = copy_store(mlflow_template_db, tmp_path)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # no footprint process per registered version (projects/common/footprint_job.py); a test that reads the
    # footprint sets KILN_FOOTPRINT=inline
    monkeypatch.setenv("KILN_FOOTPRINT", "off")
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def run_entry_point(entry_point: str, params: dict[str, object], uri: str, timeout: float = 600) -> str:
    """Run `mlflow run . -e ENTRY --env-manager local` against `uri`; return its combined output.

    Raises AssertionError with the output's tail when the run fails.
    """
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        str(REPO_ROOT),
        "-e",
        entry_point,
        "--env-manager",
        "local",
    ]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mlflow run -e {entry_point} failed ({proc.returncode}):\n{output[-4000:]}"
    return output


@pytest.fixture
def mlflow_run(mlflow_uri: str):  # type: ignore[no-untyped-def]
    """`mlflow_run("edgnet", {"epochs": 1})` runs an entry point against this test's sqlite store."""

    def run(entry_point: str, params: dict[str, object], timeout: float = 600) -> str:
        return run_entry_point(entry_point, params, mlflow_uri, timeout)

    return run
