"""The job API over HTTP: start, live progress, logs and their stream, metrics, validation errors, auth.

.venv/bin/python -m pytest tests/jobs/test_app.py -q
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_helpers import wait_for, wait_log
from mlflow import MlflowClient

from jobs.settings import Settings

SHELLY = "a b; touch pwned $(touch pwned2) `touch pwned3` 'q\" #"


@pytest.mark.slow
def test_a_job_runs_with_live_progress_logs_and_metrics(client: TestClient, settings: Settings) -> None:
    res = client.post(
        "/api/training/start", json={"entry_point": "tiny", "params": {"epochs": 4, "sleep": 0.6, "note": SHELLY}}
    )
    assert res.status_code == 202
    job_id = res.json()["job_id"]
    assert res.json()["status"] == "queued" and res.json()["progress"]["total_epochs"] == 4

    live = wait_for(client, job_id, lambda j: (j["progress"]["current_epoch"] or 0) >= 1)
    assert live["status"] == "running" and 0 < live["progress"]["percent"] < 100
    assert live["progress"]["phase"] in ("training", "finishing")
    assert live["run_id"] and live["metrics"]["train_loss"] > 0

    with client.stream("GET", f"/api/training/{job_id}/logs/stream") as stream:
        events = "".join(stream.iter_text())
    assert "data: Epoch 4/4: train_loss=0.250" in events
    assert events.rstrip().endswith("event: end\ndata: completed")

    job = client.get(f"/api/training/{job_id}").json()
    assert job["status"] == "completed" and job["exit_code"] == 0 and job["error"] is None
    assert job["progress"] == {
        "current_epoch": 4, "total_epochs": 4, "percent": 100.0, "phase": None, "eta_seconds": None,
        "stopped_early": False,
    }  # fmt: skip
    assert job["registered"] == []  # the tiny project registers no model
    assert client.get(f"/api/training/{job_id}/preview").status_code == 404  # nor logs a picture
    assert job["metrics"] == {"train_loss": 0.25, "val_acc": 1.0}
    assert (
        job["mlflow_url"] == f"http://127.0.0.1:5000/#/experiments/0/runs/{job['run_id']}?workflowType=machine_learning"
    )
    assert job["finished_at"] >= job["started_at"] >= job["created_at"]

    # The argument reached the script intact, and nothing in it ran as a shell command.
    assert f"note={SHELLY!r}" in client.get(f"/api/training/{job_id}/logs").text
    assert not list(settings.project_dir.glob("pwned*"))

    run = MlflowClient(settings.tracking_uri).get_run(job["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["kiln.job_id"] == job_id
    assert run.data.tags["mlflow.project.entryPoint"] == "tiny"
    curves = client.get(f"/api/training/{job_id}/metrics").json()["metrics"]
    assert curves["val_acc"] == {"steps": [1, 2, 3, 4], "values": [0.25, 0.5, 0.75, 1.0]}
    assert client.get(f"/api/training/{job_id}/logs?tail=1").text.startswith("20")  # mlflow's closing log line
    runs = client.get("/api/runs").json()["runs"]
    assert [(r["run_id"], r["job_id"], r["metrics"]) for r in runs] == [(job["run_id"], job_id, sorted(curves))]


def test_entry_points_come_with_types_and_defaults(client: TestClient) -> None:
    eps = {e["name"]: e for e in client.get("/api/entry-points").json()["entry_points"]}
    assert set(eps) == {"tiny", "broken", "needs_name"}
    assert eps["tiny"]["params"][0] == {"name": "epochs", "type": "float", "default": 3, "required": False}
    assert eps["needs_name"]["params"] == [{"name": "name", "type": "string", "default": None, "required": True}]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"entry_point": "edgnet_huge"}, "entry_point", ["unknown entry point 'edgnet_huge'"]),
        ({"entry_point": "tiny", "params": {"batch": 8}}, "params.batch", ["'tiny' has no param 'batch'"]),
        ({"entry_point": "tiny", "params": {"epochs": "lots"}}, "params.epochs", ["'epochs'", "'lots'"]),
        ({"entry_point": "tiny", "params": {"epochs": [3]}}, "params.epochs", ["'epochs'", "[3]"]),
        ({"entry_point": "needs_name"}, "params.name", ["needs a value for 'name'"]),
        ({"entry_point": "tiny", "params": [1, 2]}, "params", ["params: Input should be a valid dictionary"]),
        ({"params": {}}, "entry_point", ["entry_point: Field required"]),
        ({"entry_point": "tiny", "model_type": "x"}, "model_type", ["model_type: Extra inputs are not permitted"]),
    ],
)
def test_bad_start_requests_get_a_422_naming_the_problem(
    client: TestClient, body: dict[str, Any], field: str, words: list[str]
) -> None:
    res = client.post("/api/training/start", json=body)
    assert res.status_code == 422, res.text
    assert res.json()["field"] == field
    for word in words:
        assert word in res.json()["detail"]
    assert client.get("/api/training/list").json()["jobs"] == []


def test_unknown_jobs_and_statuses(client: TestClient) -> None:
    assert client.get("/api/training/nope").status_code == 404
    assert client.get("/api/training/nope").json() == {"detail": "no job 'nope'"}
    assert client.post("/api/training/nope/cancel").status_code == 404
    assert client.get("/api/training/nope/logs").status_code == 404
    res = client.get("/api/training/list?status=done")
    assert res.status_code == 422 and "unknown status 'done'" in res.json()["detail"]
    assert client.get("/api/runs/0123456789abcdef/metrics").status_code == 404


def test_bearer_token_guards_the_api_but_not_the_page(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_token="s3cret")
    assert client.get("/api/training/list").status_code == 401
    assert client.get("/api/training/list").headers["www-authenticate"] == "Bearer"
    assert client.get("/api/training/list", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/training/list", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.post("/api/training/start", json={"entry_point": "tiny"}).status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/training/list", headers=ok).json() == {"jobs": []}
    # With the token, a request gets as far as validation.
    assert client.post("/api/training/start", json={"entry_point": "zz"}, headers=ok).status_code == 422
    assert client.get("/api/models", headers=ok).status_code == 200
    assert client.get("/api/models").status_code == 401
    assert client.get("/").status_code == 200 and "kiln" in client.get("/").text
    assert client.get("/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    config = client.get("/api/config").json()
    assert config["auth_required"] is True
    assert config["mlflow_runs_url"].endswith("/#/experiments/0/runs?workflowType=machine_learning")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_broken_mlproject_is_a_503_naming_the_file(client: TestClient, tiny_project: Path) -> None:
    (tiny_project / "MLproject").write_text("name: tiny\n")
    res = client.get("/api/entry-points")
    assert res.status_code == 503
    assert "MLproject has no entry_points mapping" in res.json()["detail"]


@pytest.mark.slow
def test_a_failing_job_reports_the_error_from_its_log(client: TestClient) -> None:
    job_id = client.post("/api/training/start", json={"entry_point": "broken"}).json()["job_id"]
    wait_log(client, job_id, r"loading drawings")
    job = wait_for(client, job_id, lambda j: j["status"] == "failed")
    assert job["exit_code"] == 1
    assert job["error"] == "mlflow run exited with code 1: ValueError: sample 3 has no mask"
    assert MlflowClient(client.app.state.settings.tracking_uri).get_run(job["run_id"]).info.status == "FAILED"
    with client.stream("GET", f"/api/training/{job_id}/logs/stream?offset=0") as stream:
        text = "".join(stream.iter_text())
    assert "data: ValueError: sample 3 has no mask" in text and "event: end\ndata: failed" in text
