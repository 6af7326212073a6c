"""The whole loop against the team server (PostgreSQL + S3 through --serve-artifacts), as a team member runs it.

    .venv/bin/python -m pytest tests/cloud/test_team_loop.py -q

No AWS credentials on the client side: tiny edgnet and skinmodel trainings through `mlflow run`, artifacts in the
bucket, `kiln promote`/`history`/`models`, two `kiln serve` processes (one polling, one driven by MLflow's
webhook) swapping to a new version, and `kiln jobs serve` starting and cancelling a job.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from conftest import REPO, Team

from cloud.localstack import free_port

pytestmark = pytest.mark.slow
SECRET = "team-loop-webhook-secret"


def kiln(team: Team, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kiln", *args]
    return subprocess.run(argv, env=team.client_env(), cwd=cwd, capture_output=True, text=True, timeout=300)


def mlflow_run(team: Team, cwd: Path, entry: str, *params: str) -> str:
    argv = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    argv += ["--experiment-name", "team-loop"] + [a for p in params for a in ("-P", p)]
    done = subprocess.run(argv, env=team.client_env(), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def start(team: Team, argv: list[str], cwd: Path, log: Path, procs: list[subprocess.Popen[bytes]], **env: str) -> None:
    with log.open("wb") as out:
        procs.append(
            subprocess.Popen(
                argv, env=team.client_env(**env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        )


def served_version(port: int) -> str | None:
    try:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return str(models[0].get("version")) if models else None


def tiny_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "label"])
        for _ in range(40):
            a, b, c = rng.normal(size=3)
            writer.writerow([f"{a:.4f}", f"{b:.4f}", f"{c:.4f}", int(a + 0.5 * b > 0)])
    return path


def test_train_register_promote_serve_and_jobs(team: Team, tmp_path: Path, processes: list) -> None:
    client = mlflow.MlflowClient(team.uri)
    mlflow_run(  # register=always: 2 validation images are too few for register=auto's test to pass
        team, tmp_path, "edgnet", "epochs=1", "img_size=32", "num_samples=8", "batch_size=4", "model_name=team_edgnet",
        "register=always",
    )  # fmt: skip
    data = tiny_csv(tmp_path / "table.csv")
    mlflow_run(team, tmp_path, "skinmodel", f"data={data}", "target=label", "n_estimators=5", "model_name=team_skin")

    # artifacts landed in the bucket, under the server's destination, with no credentials on this side
    for name in ("team_edgnet", "team_skin"):
        run_id = client.get_model_version(name, "1").run_id
        keys = team.bucket_keys("mlflow/")
        assert any(run_id in key for key in keys), f"{name}'s run {run_id} has nothing in the bucket"
    assert client.get_run(client.get_model_version("team_edgnet", "1").run_id).info.status == "FINISHED"
    v1 = client.get_model_version("team_skin", "1")
    mlflow.set_tracking_uri(team.uri)
    v2 = mlflow.register_model(v1.source, "team_skin")  # a second version of the same model

    webhook_port, poll_port = free_port(), free_port()
    client.create_webhook(
        name="kiln-test",
        url=f"http://127.0.0.1:{webhook_port}/v1/webhooks/mlflow",
        events=["model_version_alias.created"],
        secret=SECRET,
    )
    promoted = kiln(team, "promote", "team_skin", "--version", "1", "--force", "--reason", "first", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    for args, expected in ((("history", "team_skin"), "production -> v1"), (("models",), "team_skin")):
        done = kiln(team, *args, cwd=tmp_path)
        assert done.returncode == 0 and expected in done.stdout, done.stdout + done.stderr

    serve = [sys.executable, "-m", "kiln", "serve", "--models", "team_skin"]
    start(team, [*serve, "--port", str(poll_port)], tmp_path, tmp_path / "poll.log", processes, KILN_POLL_SECONDS="0.5")
    start(
        team,
        [*serve, "--port", str(webhook_port)],
        tmp_path,
        tmp_path / "hook.log",
        processes,
        KILN_POLL_SECONDS="0",
        KILN_WEBHOOK_SECRET=SECRET,
    )
    for port in (poll_port, webhook_port):
        wait_until(lambda p=port: served_version(p) == "1", 180, f"kiln serve on {port} never served v1")
    promoted = kiln(
        team, "promote", "team_skin", "--version", str(v2.version), "--force", "--reason", "swap", cwd=tmp_path
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    wait_until(lambda: served_version(poll_port) == "2", 60, "polling kiln serve did not swap")
    wait_until(lambda: served_version(webhook_port) == "2", 60, "webhook kiln serve did not swap (polling is off)")

    # the job service starts a job on the team server and cancels it
    jobs_port = free_port()
    start(
        team,
        [sys.executable, "-m", "kiln", "jobs", "serve", "--port", str(jobs_port), "--project-dir", str(REPO)],
        tmp_path,
        tmp_path / "jobs.log",
        processes,
        KILN_JOBS_DB=str(tmp_path / "jobs.db"),
    )
    api = f"http://127.0.0.1:{jobs_port}/api"
    wait_until(lambda: _ok(f"http://127.0.0.1:{jobs_port}/healthz"), 120, "kiln jobs serve did not start")
    params = {"epochs": 200, "img_size": 32, "num_samples": 8, "batch_size": 4, "model_name": "team_jobs"}
    job = httpx.post(f"{api}/training/start", json={"entry_point": "edgnet", "params": params}, timeout=30).json()
    wait_until(
        lambda: _job(api, job["job_id"])["status"] == "running" and _has_steps(client, _job(api, job["job_id"])),
        240,
        "job never trained",
    )
    cancelled = httpx.post(f"{api}/training/{job['job_id']}/cancel", timeout=60).json()
    wait_until(lambda: _job(api, job["job_id"])["status"] == "cancelled", 60, f"job not cancelled: {cancelled}")
    run_id = _job(api, job["job_id"])["run_id"]
    assert client.get_run(run_id).info.status in ("KILLED", "FAILED")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _job(api: str, job_id: str) -> dict:
    return httpx.get(f"{api}/training/{job_id}", timeout=10).json()


def _has_steps(client: mlflow.MlflowClient, job: dict) -> bool:
    return bool(job.get("run_id")) and bool(client.get_metric_history(job["run_id"], "train_loss"))
