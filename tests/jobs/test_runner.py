"""The runner: the queue, cancelling a whole process group, surviving a service restart, the argv it builds.

.venv/bin/python -m pytest tests/jobs/test_runner.py -q
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_helpers import alive, wait_for, wait_log, wait_until
from mlflow import MlflowClient

from jobs.runner import JobRunner, ServiceLockedError
from jobs.settings import Settings
from jobs.store import RUNNING, Job


def start(client: TestClient, **params: object) -> str:
    res = client.post("/api/training/start", json={"entry_point": "tiny", "params": params})
    assert res.status_code == 202, res.text
    return str(res.json()["job_id"])


def training_pid(client: TestClient, job_id: str) -> int:
    return int(wait_log(client, job_id, r"pid=(\d+)").group(1))


@pytest.mark.slow
def test_queue_and_cancel_stop_the_whole_process_group(client: TestClient, settings: Settings) -> None:
    long_job = start(client, epochs=200, sleep=0.5)
    wait_for(client, long_job, lambda j: j["status"] == "running")
    short_job = start(client, epochs=2, sleep=0)
    dropped = start(client, epochs=2, sleep=0)
    queued = client.get(f"/api/training/{short_job}").json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert client.get(f"/api/training/{dropped}").json()["queue_position"] == 2

    cancelled = client.post(f"/api/training/{dropped}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["run_id"] is None  # never started, no run made

    child = training_pid(client, long_job)  # python train.py, a grandchild of the service
    leader = client.get(f"/api/training/{long_job}").json()["pid"]  # mlflow run
    assert alive(child) and alive(leader) and os.getpgid(child) == leader
    assert client.get(f"/api/training/{short_job}").json()["status"] == "queued"  # one at a time

    res = client.post(f"/api/training/{long_job}/cancel")
    assert res.status_code == 200 and res.json()["status"] == "cancelled"
    assert res.json()["error"] == "cancelled by request"
    assert not alive(child) and not alive(leader)
    run = MlflowClient(settings.tracking_uri).get_run(res.json()["run_id"])
    assert run.info.status == "KILLED"
    again = client.post(f"/api/training/{long_job}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]

    wait_for(client, short_job, lambda j: j["status"] == "running")  # the queue moved on
    assert client.delete(f"/api/training/{short_job}").status_code == 409  # cancel it first
    assert client.post(f"/api/training/{short_job}/cancel").json()["status"] == "cancelled"

    log = settings.logs_dir / f"{long_job}.log"
    assert log.exists()
    assert client.delete(f"/api/training/{long_job}").json() == {
        "job_id": long_job,
        "removed": True,
        "run_id": run.info.run_id,
    }
    assert client.get(f"/api/training/{long_job}").status_code == 404 and not log.exists()


@pytest.mark.slow
def test_jobs_survive_a_restart_and_vanished_ones_fail(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    first = make_client(max_concurrent_jobs=2)
    survivor = start(first, epochs=3, sleep=1.5)
    victim = start(first, epochs=200, sleep=0.5)
    survivor_pid = training_pid(first, survivor)
    victim_leader = first.get(f"/api/training/{victim}").json()["pid"]
    training_pid(first, victim)
    first.__exit__(None, None, None)  # the service stops; its jobs do not
    assert alive(survivor_pid)
    os.killpg(victim_leader, signal.SIGKILL)  # ... but this one dies while no service watches
    wait_until(lambda: not alive(victim_leader))

    second = make_client(max_concurrent_jobs=2)
    lost = second.get(f"/api/training/{victim}").json()
    assert lost["status"] == "failed"
    assert f"process group {victim_leader} vanished while the service was down" in lost["error"]
    assert MlflowClient(settings.tracking_uri).get_run(lost["run_id"]).info.status == "FAILED"
    assert second.get(f"/api/training/{survivor}").json()["status"] == "running"  # adopted
    done = wait_for(second, survivor, lambda j: j["status"] != "running")
    assert done["status"] == "completed" and done["error"] is None
    assert {k: done["progress"][k] for k in ("current_epoch", "total_epochs", "percent")} == {
        "current_epoch": 3, "total_epochs": 3, "percent": 100.0,
    }  # fmt: skip


def test_argv_is_a_list_with_each_param_one_element(settings: Settings) -> None:
    runner = JobRunner(settings)
    job = Job(
        id="tiny-1", entry_point="tiny", params={"note": "a b; rm -rf ~", "epochs": "3"}, status=RUNNING,
        created_at=0.0, log_path="x",
    )  # fmt: skip
    argv = runner.argv(job, experiment_id="7", run_id="abc")
    assert argv[:4] == [sys.executable, "-m", "mlflow", "run"]
    assert argv[4:] == [
        str(settings.project_dir), "-e", "tiny", "--env-manager", "local", "--experiment-id", "7", "--run-id", "abc",
        "-P", "note=a b; rm -rf ~", "-P", "epochs=3",
    ]  # fmt: skip


def test_job_env_points_at_this_python_and_keeps_the_token_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_API_TOKEN", "s3cret")
    monkeypatch.setenv("MLFLOW_RUN_ID", "stale")
    env = JobRunner(settings).job_env()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["MLFLOW_TRACKING_URI"] == settings.tracking_uri and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "KILN_API_TOKEN" not in env and "MLFLOW_RUN_ID" not in env


def test_a_second_service_on_the_same_jobs_table_is_refused(make_client: Callable[..., TestClient]) -> None:
    first = make_client()
    with pytest.raises(ServiceLockedError, match=rf"another kiln jobs service \(pid {os.getpid()}\) already super"):
        make_client()
    first.__exit__(None, None, None)  # stopping releases the table
    assert make_client().get("/healthz").json() == {"status": "ok"}


def test_the_step_total_comes_from_epochs_or_boosting_rounds(settings: Settings, tiny_project: Path) -> None:
    mlproject = tiny_project / "MLproject"
    xgb = "  xgb:\n    parameters:\n      n_estimators: {type: float, default: 500}\n    command: echo\n"
    mlproject.write_text(mlproject.read_text() + xgb)
    runner = JobRunner(settings)  # not started: submitted jobs stay queued
    assert runner.submit("tiny", {"epochs": 7}).total_epochs == 7
    assert runner.submit("tiny", {}).total_epochs == 3
    assert runner.submit("xgb", {"n_estimators": 40}).total_epochs == 40
    assert runner.submit("needs_name", {"name": "x"}).total_epochs is None
