"""`mlflow run --backend sagemaker` against moto's SageMaker, S3 and CloudWatch Logs and the team server.

    .venv/bin/python -m pytest tests/cloud/test_sagemaker_backend.py -q

The job never runs here (moto has no containers): each test plays SageMaker's part by writing the job's log lines
and ending it, and checks what the backend uploaded and asked for, what it printed and what the run became.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import boto3
import mlflow
import moto_sagemaker as fake
import pytest
from conftest import REPO, Team

pytestmark = pytest.mark.slow

GOOD = {
    "role_arn": "arn:aws:iam::123456789012:role/kiln-training",
    "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/kiln:cpu",
    "s3_prefix": "s3://kiln-artifacts/sagemaker",
    "instance_type": "ml.m5.xlarge",
    "use_spot": True,
    "max_run_seconds": 3600,
    "region": "us-east-1",
    "tags": {"team": "vision"},
}


def launch(team: Team, tmp_path: Path, config: dict[str, Any] | str, *params: str) -> subprocess.Popen[str]:
    path = tmp_path / "sm.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    argv = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "skinmodel", "--backend", "sagemaker"]
    argv += ["--backend-config", str(path), "--experiment-name", "sagemaker-tests"]
    for p in params:
        argv += ["-P", p]
    env = team.aws_env(KILN_SAGEMAKER_POLL_SECONDS="0.3")
    return subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def wait_for_job(before: set[str], proc: subprocess.Popen[str], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(fake.jobs()) - before
        if new:
            return fake.jobs()[new.pop()]
        if proc.poll() is not None:
            raise AssertionError(
                f"mlflow run exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        time.sleep(0.2)
    raise TimeoutError("no training job was created")


def write_log(job_name: str, lines: list[str]) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    group, stream = "/aws/sagemaker/TrainingJobs", f"{job_name}/algo-1-1700000000"
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def run_of(team: Team, job: Any) -> Any:
    client = mlflow.MlflowClient(team.uri)
    return client.get_run(job.hyper_parameters["kiln_run_id"])


@pytest.fixture
def aws(team: Team, monkeypatch: pytest.MonkeyPatch) -> Team:
    monkeypatch.setenv("AWS_ENDPOINT_URL", team.stack.s3.url)
    return team


def test_job_request_source_logs_and_completed_status(aws: Team, tmp_path: Path) -> None:
    before = set(fake.jobs())
    proc = launch(aws, tmp_path, GOOD, "n_estimators=7", "model_name=sm_skin")
    job = wait_for_job(before, proc)
    hp = job.hyper_parameters
    assert hp["kiln_entry_point"] == "skinmodel" and hp["n_estimators"] == "7" and hp["model_name"] == "sm_skin"
    assert job.environment["MLFLOW_TRACKING_URI"] == aws.uri
    assert job.environment["MLFLOW_RUN_ID"] == hp["kiln_run_id"]
    assert not any("SECRET" in k or "PASSWORD" in k for k in job.environment)
    assert job.enable_managed_spot_training is True
    assert job.stopping_condition == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job.checkpoint_config["LocalPath"] == "/opt/ml/checkpoints"
    assert job.checkpoint_config["S3Uri"].startswith(f"s3://kiln-artifacts/sagemaker/{job.training_job_name}/")
    assert {"Key": "team", "Value": "vision"} in job.tags

    # the source: what git tracks, nothing else
    bucket, key = hp["kiln_source"][5:].split("/", 1)
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split())
    assert "MLproject" in names and "cloud/container.py" in names
    assert names <= tracked and ".venv/bin/python" not in names

    run = run_of(aws, job)
    assert run.info.status == "RUNNING" and run.data.tags["kiln.sagemaker.job_name"] == job.training_job_name
    assert run.data.params["n_estimators"] == "7"
    write_log(job.training_job_name, ["Epoch 1/1: val_auc=0.9", "postgresql://kiln:hunter2@db/mlflow"])
    time.sleep(1)
    fake.finish(job.training_job_name, "Completed")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Epoch 1/1: val_auc=0.9" in out and "hunter2" not in out and "postgresql://kiln:***@db" in out
    assert run_of(aws, job).info.status == "FINISHED"


def test_failed_job_fails_the_run_with_its_reason(aws: Team, tmp_path: Path) -> None:
    before = set(fake.jobs())
    proc = launch(aws, tmp_path, {**GOOD, "use_spot": False})
    job = wait_for_job(before, proc)
    assert job.enable_managed_spot_training is False
    fake.finish(job.training_job_name, "Failed", "AlgorithmError: entry point 'skinmodel' exited with 1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "AlgorithmError: entry point 'skinmodel' exited with 1" in out
    run = run_of(aws, job)
    assert run.info.status == "FAILED"
    assert run.data.tags["kiln.sagemaker.failure_reason"].startswith("AlgorithmError")


def test_cancel_stops_the_job_and_kills_the_run(aws: Team, tmp_path: Path) -> None:
    before = set(fake.jobs())
    proc = launch(aws, tmp_path, GOOD)
    job = wait_for_job(before, proc)
    time.sleep(1.0)  # inside wait(), where SIGTERM (the job service's cancel) is handled
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert fake.jobs()[job.training_job_name].training_job_status == "Stopped", out
    assert f"stopping SageMaker training job {job.training_job_name}" in out
    assert run_of(aws, job).info.status == "KILLED"


def runs_in(team: Team) -> int:
    client = mlflow.MlflowClient(team.uri)
    experiment = client.get_experiment_by_name("sagemaker-tests")
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({**GOOD, "role_arn": "kiln-training-role"}, "role_arn"),
        ({**GOOD, "instance_type": "ml.p9.mega"}, "instance_type"),
        ({**GOOD, "s3_prefix": "s3://no-such-bucket/x"}, "s3_prefix"),
        ({**GOOD, "tracking_uri": "http://127.0.0.1:9"}, "tracking_uri"),
    ],
)
def test_bad_input_stops_before_any_job_or_run(
    aws: Team, config: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.projects import ExecutionException

    from cloud.sagemaker_backend import SageMakerBackend

    monkeypatch.setenv("MLFLOW_TRACKING_URI", aws.uri)
    jobs_before, runs_before = set(fake.jobs()), runs_in(aws)
    with pytest.raises(ExecutionException) as err:
        SageMakerBackend().run(str(REPO), "skinmodel", {}, None, {**config, "SYNCHRONOUS": False}, aws.uri, "0")
    assert str(err.value).startswith(key) and "\n" not in str(err.value)
    assert set(fake.jobs()) == jobs_before and runs_in(aws) == runs_before


def test_cli_errors_are_one_line(aws: Team, tmp_path: Path) -> None:
    """Through `mlflow run` a bad key is one `=== ... ===` line; a file that is not JSON is one line of
    `kiln sagemaker check` (mlflow parses a .json backend config itself, before any backend is called)."""
    proc = launch(aws, tmp_path, {**GOOD, "role_arn": "kiln-training-role"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out
    assert "=== role_arn: 'kiln-training-role' is not an IAM role ARN" in out
    (tmp_path / "bad.json").write_text('{"role_arn": ')
    argv = [sys.executable, "-m", "kiln", "sagemaker", "check", str(tmp_path / "bad.json"), "--offline"]
    done = subprocess.run(argv, env=aws.aws_env(), capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 1 and done.stderr.strip().startswith("Error: backend config") and "not JSON" in done.stderr
    )
