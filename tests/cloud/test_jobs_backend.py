"""`kiln jobs serve` with KILN_JOBS_BACKEND_CONFIG: jobs become `mlflow run --backend sagemaker` into their run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import SettingsError
from jobs.runner import JobRunner
from jobs.settings import Settings
from jobs.store import Job

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "role_arn": "arn:aws:iam::123456789012:role/kiln-training",
    "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/kiln:cpu",
    "s3_prefix": "s3://kiln-artifacts/sagemaker",
}


def settings(tmp_path: Path, config: str) -> Settings:
    (tmp_path / "sm.json").write_text(config)
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "KILN_JOBS_DB": str(tmp_path / "jobs.db"),
        "KILN_JOBS_BACKEND_CONFIG": str(tmp_path / "sm.json"),
    }
    return Settings.from_env(env, project_dir=REPO)


def test_jobs_run_on_the_backend_in_their_own_run(tmp_path: Path) -> None:
    runner = JobRunner(settings(tmp_path, json.dumps(CONFIG)))
    job = Job(
        id="j1",
        entry_point="edgnet",
        params={"epochs": "3"},
        status="queued",
        created_at=0.0,
        log_path=str(tmp_path / "j1.log"),
    )
    argv = runner.argv(job, "7", "abc123")
    assert argv[argv.index("--backend") + 1] == "sagemaker" and "--env-manager" not in argv
    written = json.loads(Path(argv[argv.index("--backend-config") + 1]).read_text())
    assert written == {**CONFIG, "run_id": "abc123"}
    assert argv[-2:] == ["-P", "epochs=3"]


def test_a_bad_backend_config_stops_the_service_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^KILN_JOBS_BACKEND_CONFIG: role_arn: 'x' is not an IAM role ARN"):
        settings(tmp_path, json.dumps({**CONFIG, "role_arn": "x"}))
    with pytest.raises(SettingsError, match="KILN_JOBS_BACKEND_CONFIG: backend config .* not JSON"):
        settings(tmp_path, "{")
