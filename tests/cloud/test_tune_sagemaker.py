"""`kiln tune --backend sagemaker` against moto's SageMaker, the team server and an Optuna study in PostgreSQL.

    .venv/bin/python -m pytest tests/cloud/test_tune_sagemaker.py -q

moto runs no container, so a thread here plays each job's container (`FakeContainers`): for every InProgress job
it reads the job's hyperparameters and Environment (the trial's run), logs a `val_iou` curve into that run on the
team server one epoch at a time, logs the trial's ONNX model (a tiny untrained edgnet export, as the trainer does
with `register=never`) and completes the job; a job whose `lr` is above FAIL_LR fails with a FailureReason. The
driver (`kiln tune`, a subprocess) only sees SageMaker and the tracking server, as it would with real jobs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import moto_sagemaker
import optuna
import psycopg
import pytest
from conftest import REPO, Team

pytestmark = pytest.mark.slow
EPOCHS = 6
FAIL_LR = 0.04  # a job with a larger lr fails, as an out-of-memory container would
SPACE = "lr: {type: float, low: 0.0001, high: 0.1, log: true}\n"


class FakeContainers(threading.Thread):
    """What each job's container would do; counts how many jobs were InProgress at once."""

    def __init__(self, uri: str, epoch_seconds: float = 0.4) -> None:
        super().__init__(daemon=True)
        self.client = mlflow.MlflowClient(uri)
        self.epoch_seconds = epoch_seconds
        self.progress: dict[str, int] = {}  # job -> epochs logged
        self.max_running = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            jobs = dict(snapshot())
            running = [n for n, j in jobs.items() if j.training_job_status == "InProgress"]
            self.max_running = max(self.max_running, len(running))
            for name in running:
                self.step(name, jobs[name])
            time.sleep(self.epoch_seconds)

    def step(self, name: str, job: Any) -> None:
        run_id = job.environment["MLFLOW_RUN_ID"]
        params = {k: v for k, v in job.hyper_parameters.items() if not k.startswith("kiln_")}
        lr = float(params["lr"])
        epoch = self.progress.get(name, 0) + 1
        if epoch == 1:
            self.client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
        if lr > FAIL_LR:
            moto_sagemaker.finish(name, "Failed", "AlgorithmError: CUDA out of memory (lr too large for this test)")
            return
        # Higher curves for lr near 1e-2; each epoch a step closer to the trial's plateau.
        plateau = max(0.05, 0.9 - 0.2 * abs(math.log10(lr) + 2))
        self.client.log_metric(run_id, "val_iou", plateau * epoch / EPOCHS, step=epoch)
        self.progress[name] = epoch
        if epoch == EPOCHS:
            self.client.log_metric(run_id, "best_val_iou", plateau)
            log_tiny_model(run_id)
            moto_sagemaker.finish(name, "Completed")


def log_tiny_model(run_id: str) -> None:
    import torch

    from projects.edgnet.config import EDGNetConfig
    from projects.edgnet.model import create_model
    from projects.edgnet.train import export_and_register

    cfg = EDGNetConfig(variant="edgnet", img_size=32, base_channels=8, depth=2, model_name="sm_tuned")
    model = create_model("edgnet", base_channels=8, depth=2).eval()
    with mlflow.start_run(run_id=run_id):
        export_and_register(cfg, model, torch.randn(2, 1, 32, 32), register=False)


@pytest.fixture
def storage(team: Team) -> str:
    """A database of its own on the team's PostgreSQL (MLflow's and Optuna's schemas both use alembic_version)."""
    name = f"optuna_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = team.stack.postgres.uri.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return team.stack.postgres.uri.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


@pytest.fixture
def fake(team: Team, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.uri)
    mlflow.set_tracking_uri(team.uri)  # the fake containers log models with MLflow's fluent API
    for name, job in snapshot():  # jobs of earlier tests are no concern of this one
        if job.training_job_status == "InProgress":
            moto_sagemaker.finish(name, "Stopped")
    containers = FakeContainers(team.uri)
    containers.start()
    yield containers
    containers.done.set()
    containers.join(timeout=30)
    mlflow.set_tracking_uri(None)


def sm_config(team: Team, tmp_path: Path) -> Path:
    path = tmp_path / "sm.json"
    path.write_text(json.dumps({
        "role_arn": "arn:aws:iam::123456789012:role/kiln-training",
        "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/kiln:cpu",
        "s3_prefix": f"s3://{team.stack.bucket}/tune", "instance_type": "ml.m5.xlarge", "use_spot": True,
        "region": "us-east-1", "tracking_uri": team.uri,
    }))  # fmt: skip
    return path


def driver(team: Team, tmp_path: Path, storage: str, study: str, *extra: str) -> subprocess.Popen[str]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    argv = [sys.executable, "-m", "kiln", "tune", "edgnet", "--space", str(space), "--trials", "6", "--parallel",
            "2", "--backend", "sagemaker", "--backend-config", str(sm_config(team, tmp_path)), "--storage", storage,
            "--study", study, "--sampler", "random", "--pruner", "median", "--seed", "3", "--set",
            f"epochs={EPOCHS}", "--set", "model_name=sm_tuned", "--experiment", study, *extra]  # fmt: skip
    env = team.aws_env(KILN_SAGEMAKER_POLL_SECONDS="0.2")
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def snapshot() -> list[tuple[str, Any]]:
    """moto's jobs, copied while its server thread may be adding one."""
    while True:
        try:
            return list(moto_sagemaker.jobs().items())
        except RuntimeError:  # dictionary changed size during iteration
            time.sleep(0.01)


def trial_jobs(study: str) -> dict[int, list[str]]:
    """trial number -> its jobs in moto (job names carry `t<number>-`)."""
    found: dict[int, list[str]] = {}
    for name, job in snapshot():
        if job.environment.get("MLFLOW_EXPERIMENT_ID") and name.startswith("kiln-t"):
            runs = mlflow.MlflowClient().get_run(job.environment["MLFLOW_RUN_ID"])
            if runs.data.tags.get("kiln.tune.study") == study:
                found.setdefault(int(name.split("-")[1][1:]), []).append(name)
    return found


def test_six_trials_two_at_a_time_prune_fail_and_register(team: Team, tmp_path: Path, storage: str, fake) -> None:
    proc = driver(team, tmp_path, storage, "sm-six")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert fake.max_running <= 2, f"{fake.max_running} jobs ran at once"
    trials = optuna.load_study(study_name="sm-six", storage=storage).trials
    assert len(trials) == 6
    states = {t.number: t.state.name for t in trials}
    jobs = trial_jobs("sm-six")
    assert sorted(jobs) == list(range(6)) and all(len(v) == 1 for v in jobs.values())
    client = mlflow.MlflowClient()
    for trial in trials:
        job = moto_sagemaker.jobs()[jobs[trial.number][0]]
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        if trial.state.name == "PRUNED":  # its job was stopped mid-way, its run ended as pruned
            assert job.training_job_status == "Stopped" and run.info.status == "FINISHED"
            assert run.data.tags["kiln.tune.state"] == "pruned" and "stopped" in run.data.tags["kiln.stopped_by"]
        elif trial.state.name == "FAIL":
            assert job.training_job_status == "Failed" and run.info.status == "FAILED"
            assert "CUDA out of memory" in run.data.tags["kiln.error"]
        else:
            assert trial.state.name == "COMPLETE" and run.data.tags["kiln.tune.state"] == "complete"
    assert "PRUNED" in states.values() and "FAIL" in states.values(), states
    parent = client.get_run(trials[0].user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    version = client.get_model_version("sm_tuned", client.get_run(parent).data.tags["kiln.tune.registered_version"])
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    assert version.run_id == best.user_attrs["mlflow_run_id"], "the best trial's own run holds the registered model"
    assert len(client.search_runs([client.get_run(parent).info.experiment_id])) == 7  # parent + 6 trials, no refit


def test_a_killed_driver_resumes_without_running_a_trial_twice(team: Team, tmp_path: Path, storage: str, fake) -> None:
    first = driver(team, tmp_path, storage, "sm-resume")
    try:
        deadline = time.monotonic() + 300
        while len(trial_jobs("sm-resume")) < 3 and time.monotonic() < deadline:
            assert first.poll() is None, first.stdout.read() if first.stdout else ""
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)  # the driver dies with jobs running, as a closed laptop would
        first.wait(timeout=30)
    second = driver(team, tmp_path, storage, "sm-resume", "--resume")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-4000:]
    assert "reattached to SageMaker job" in out
    trials = optuna.load_study(study_name="sm-resume", storage=storage).trials
    assert len(trials) == 6 and all(t.state.name != "RUNNING" for t in trials)
    jobs = trial_jobs("sm-resume")
    assert all(len(names) == 1 for names in jobs.values()), f"a trial ran twice: {jobs}"
