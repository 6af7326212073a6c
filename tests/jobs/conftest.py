"""Fixtures for the job service: a tiny MLproject whose "training" takes a second, and a running service.

    .venv/bin/python -m pytest tests/jobs -q

The tiny entry point logs `train_loss` and `val_acc` per epoch with `step=epoch`, prints its pid, and
sleeps between epochs, so tests see real `mlflow run` jobs without waiting on real models.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.app import create_app
from jobs.settings import Settings

# The test modules share jobs_helpers.py; with --import-mode=importlib this folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))

from jobs_helpers import kill_leftover_jobs  # noqa: E402

MLPROJECT = """\
name: tiny
entry_points:
  tiny:
    parameters:
      epochs: {type: float, default: 3}
      sleep: {type: float, default: 0.05}
      note: {type: string, default: "hello"}
      data: {type: path, default: "."}
    command: "python train.py --epochs {epochs} --sleep {sleep} --note {note} --data {data}"
  broken:
    parameters:
      epochs: {type: float, default: 2}
    command: "python broken.py"
  needs_name:
    parameters:
      name: string
    command: "python -c 'print(1)'"
"""

TRAIN = """\
import argparse, os, time
import mlflow

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int)
p.add_argument("--sleep", type=float)
p.add_argument("--note")
p.add_argument("--data")
args = p.parse_args()
print(f"pid={os.getpid()}", flush=True)
print(f"note={args.note!r}", flush=True)
with mlflow.start_run():
    for epoch in range(1, args.epochs + 1):
        mlflow.log_metrics({"train_loss": 1.0 / epoch, "val_acc": epoch / args.epochs}, step=epoch)
        print(f"Epoch {epoch}/{args.epochs}: train_loss={1.0 / epoch:.3f}", flush=True)
        time.sleep(args.sleep)
print("done", flush=True)
"""

BROKEN = """\
print("loading drawings", flush=True)
raise ValueError("sample 3 has no mask")
"""


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text(MLPROJECT)
    (project / "train.py").write_text(TRAIN)
    (project / "broken.py").write_text(BROKEN)
    return project


@pytest.fixture
def settings(tmp_path: Path, tiny_project: Path, make_store: Callable[[Path], Path]) -> Settings:
    db = make_store(tmp_path)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "KILN_JOBS_DB": str(tmp_path / "jobs.db")}
    env |= {"KILN_JOBS_POLL_SECONDS": "0.2", "KILN_JOBS_CANCEL_GRACE_SECONDS": "3"}
    return Settings.from_env(env, project_dir=tiny_project)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Opens service instances (a TestClient each, lifespan started); every job still alive is killed after."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings.with_overrides(**overrides)))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    kill_leftover_jobs(settings.jobs_db)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
