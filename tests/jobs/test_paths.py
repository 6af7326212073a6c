"""Job params that name files stay inside the operator's roots, and a refusal never tells whether a path exists."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.errors import SettingsError
from data.samples import SAMPLES_DIR
from jobs.paths import PathNotAllowedError, confine_params, default_roots
from jobs.settings import Settings


@pytest.mark.parametrize(
    "params",
    [
        {"data": "../../../etc/passwd"},
        {"data": "/etc/passwd"},
        {"data": "/etc/no-such-file-kiln"},
        {"data": "~/.ssh/id_rsa"},
        {"data": "file:///etc/passwd"},
        {"storage": "sqlite:////etc/kiln.db"},
        {"config": "sub/../../outside.yaml"},
        {"sets": "epochs=2 data=/etc/passwd"},
        {"sets": "--hyp=/etc/shadow"},
        {"custom": "/etc/passwd"},  # an MLproject `path` param
    ],
)
def test_paths_outside_the_roots_are_refused(tmp_path: Path, params: dict[str, str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(PathNotAllowedError) as info:
        confine_params(params, default_roots(project), project, path_params=["custom"])
    assert info.value.field.startswith("params.")


@pytest.mark.parametrize(
    "params",
    [
        {"data": ""},
        {"data": "data/drawings"},  # relative: inside the project folder, whether it exists or not
        {"data": "dataset:door@v2"},
        {"teacher": "models:/edgnet@production"},
        {"storage": "postgresql+psycopg://u@127.0.0.1/optuna"},
        {"storage": "sqlite:///optuna.db"},
        {"model": "yolov8n.yaml"},
        {"sets": "epochs=2 lr=0.1"},
        {"note": "/etc/passwd"},  # not a file param
        {"epochs": 3},
    ],
)
def test_values_inside_the_roots_or_not_local_pass(tmp_path: Path, params: dict[str, object]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    confine_params(params, default_roots(project), project)
    confine_params({"data": str(SAMPLES_DIR / "tabular")}, default_roots(project), project)


def test_a_symlink_out_of_a_root_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.symlink("/etc", project / "etc")
    with pytest.raises(PathNotAllowedError):
        confine_params({"data": "etc/passwd"}, (project,), project)


def test_the_api_refusal_is_a_422_that_is_the_same_for_existing_and_missing_paths(
    client: TestClient, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.csv"
    secret.write_text("a,b\n1,2\n")
    answers = []
    for data in (str(secret), str(tmp_path / "missing.csv")):
        res = client.post("/api/training/start", json={"entry_point": "tiny", "params": {"data": data}})
        assert res.status_code == 422, res.text
        assert res.json()["field"] == "params.data"
        answers.append(res.json()["detail"].replace(data, "X"))
    assert answers[0] == answers[1]
    assert "outside the folders jobs may read" in answers[0] and "exist" not in answers[0]
    assert client.get("/api/training/list").json()["jobs"] == []


def test_operator_roots_replace_the_defaults(
    make_client: Callable[..., TestClient], settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "set").mkdir()
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri, "KILN_JOBS_DB": str(settings.jobs_db)}
    roots = Settings.from_env(env | {"KILN_JOBS_FILE_ROOTS": str(shared)}, project_dir=settings.project_dir).file_roots
    assert roots == (shared.resolve(),)
    client = make_client(file_roots=roots)
    ok = client.post("/api/training/start", json={"entry_point": "tiny", "params": {"data": str(shared / "set")}})
    assert ok.status_code == 202, ok.text
    client.post(f"/api/training/{ok.json()['job_id']}/cancel")
    refused = client.post("/api/training/start", json={"entry_point": "tiny", "params": {"data": "train.py"}})
    assert refused.status_code == 422 and refused.json()["field"] == "params.data"
    with pytest.raises(SettingsError, match="not a folder"):
        Settings.from_env(env | {"KILN_JOBS_FILE_ROOTS": str(tmp_path / "nope")}, project_dir=settings.project_dir)
