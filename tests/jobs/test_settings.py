"""Settings from the environment: defaults, overrides, and errors naming the bad variable.

.venv/bin/python -m pytest tests/jobs/test_settings.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.settings import Settings, SettingsError


def test_defaults_follow_the_project_dir(tiny_project: Path) -> None:
    s = Settings.from_env({}, project_dir=tiny_project)
    assert s.project_dir == tiny_project.resolve()
    assert s.tracking_uri == f"sqlite:///{tiny_project.resolve() / 'mlflow.db'}"
    assert s.jobs_db == tiny_project.resolve() / ".kiln" / "jobs.db"
    assert s.logs_dir == s.jobs_db.parent / "job-logs"
    assert (s.max_concurrent_jobs, s.api_token, s.experiment_name) == (1, None, None)
    assert s.mlflow_ui_url == "http://127.0.0.1:5000"


def test_environment_overrides(tiny_project: Path, tmp_path: Path) -> None:
    env = {
        "KILN_PROJECT_DIR": str(tiny_project),
        "KILN_MAX_CONCURRENT_JOBS": "3",
        "KILN_API_TOKEN": "s3cret",
        "KILN_JOBS_DB": str(tmp_path / "j.db"),
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000/",
        "KILN_JOBS_EXPERIMENT": "nightly",
    }
    s = Settings.from_env(env)
    assert (s.max_concurrent_jobs, s.api_token, s.experiment_name) == (3, "s3cret", "nightly")
    assert s.jobs_db == tmp_path / "j.db"
    assert s.mlflow_ui_url == "http://mlflow.internal:5000"  # a tracking server is its own UI


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KILN_MAX_CONCURRENT_JOBS", "two", "KILN_MAX_CONCURRENT_JOBS='two' is not an integer"),
        ("KILN_MAX_CONCURRENT_JOBS", "0", "KILN_MAX_CONCURRENT_JOBS='0' must be at least 1"),
        ("MLFLOW_TRACKING_URI", "/tmp/mlruns", "file store"),
        ("MLFLOW_TRACKING_URI", "file:///tmp/mlruns", "file store"),
        ("KILN_MLFLOW_UI_URL", "localhost:5000", "KILN_MLFLOW_UI_URL='localhost:5000' is not an http(s) URL"),
        ("KILN_JOBS_CANCEL_GRACE_SECONDS", "-1", "must be greater than 0"),
    ],
)
def test_bad_values_name_the_variable(tiny_project: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({name: value}, project_dir=tiny_project)


def test_a_folder_without_mlproject_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="has no MLproject file"):
        Settings.from_env({"KILN_PROJECT_DIR": str(tmp_path)})


def test_access_log_is_off_unless_asked_for(tiny_project: Path) -> None:
    assert Settings.from_env({}, project_dir=tiny_project).access_log is False
    assert Settings.from_env({"KILN_JOBS_ACCESS_LOG": "1"}, project_dir=tiny_project).access_log is True
    with pytest.raises(SettingsError, match="KILN_JOBS_ACCESS_LOG='loud' is not a boolean"):
        Settings.from_env({"KILN_JOBS_ACCESS_LOG": "loud"}, project_dir=tiny_project)
