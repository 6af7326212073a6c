"""The job service's settings: one typed object read from the environment, every default declared here.

    KILN_MAX_CONCURRENT_JOBS=2 KILN_API_TOKEN=secret kiln jobs serve --port 9000

Read once at start-up (`Settings.from_env()`); a bad value fails the start with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse


class SettingsError(ValueError):
    """An environment variable the job service cannot use; the message names it and its value."""


@dataclass(frozen=True)
class Settings:
    project_dir: Path  # KILN_PROJECT_DIR: folder holding the MLproject the jobs run (default: the working directory)
    tracking_uri: str  # MLFLOW_TRACKING_URI: sqlite or server store (default: sqlite:///<project_dir>/mlflow.db)
    jobs_db: Path  # KILN_JOBS_DB: sqlite file with the jobs table (default: <project_dir>/.kiln/jobs.db)
    logs_dir: Path  # KILN_JOBS_LOG_DIR: one <job_id>.log per job (default: job-logs/ beside the jobs db)
    max_concurrent_jobs: int = 1  # KILN_MAX_CONCURRENT_JOBS: jobs running at once; the rest wait as queued
    api_token: str | None = None  # KILN_API_TOKEN: when set, /api/* needs `Authorization: Bearer <token>`
    mlflow_ui_url: str = "http://127.0.0.1:5000"  # KILN_MLFLOW_UI_URL: base of run links (a server URI if set)
    experiment_name: str | None = None  # KILN_JOBS_EXPERIMENT: experiment for new runs (None: MLflow's default)
    cancel_grace_seconds: float = 10.0  # KILN_JOBS_CANCEL_GRACE_SECONDS: SIGTERM to SIGKILL wait on cancel
    poll_seconds: float = 0.5  # KILN_JOBS_POLL_SECONDS: how often the supervisor reaps and starts jobs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, project_dir: Path | None = None) -> Settings:
        env = os.environ if environ is None else environ
        root = (project_dir or Path(env.get("KILN_PROJECT_DIR") or Path.cwd())).resolve()
        if not (root / "MLproject").is_file():
            raise SettingsError(f"project folder {str(root)!r} (KILN_PROJECT_DIR, --project-dir) has no MLproject file")
        tracking_uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        jobs_db = Path(env.get("KILN_JOBS_DB") or root / ".kiln" / "jobs.db").resolve()
        settings = cls(
            project_dir=root,
            tracking_uri=_check_tracking_uri(tracking_uri),
            jobs_db=jobs_db,
            logs_dir=Path(env.get("KILN_JOBS_LOG_DIR") or jobs_db.parent / "job-logs").resolve(),
            max_concurrent_jobs=_positive_int(env, "KILN_MAX_CONCURRENT_JOBS", cls.max_concurrent_jobs),
            api_token=env.get("KILN_API_TOKEN") or None,
            mlflow_ui_url=_ui_url(env, tracking_uri),
            experiment_name=env.get("KILN_JOBS_EXPERIMENT") or None,
            cancel_grace_seconds=_positive_float(env, "KILN_JOBS_CANCEL_GRACE_SECONDS", cls.cancel_grace_seconds),
            poll_seconds=_positive_float(env, "KILN_JOBS_POLL_SECONDS", cls.poll_seconds),
        )
        return settings

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _check_tracking_uri(uri: str) -> str:
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a one-letter scheme is a Windows drive letter
        raise SettingsError(
            f"MLFLOW_TRACKING_URI={uri!r} is a file store, which kiln refuses; use sqlite:///path/mlflow.db or a server"
        )
    return uri


def _ui_url(env: Mapping[str, str], tracking_uri: str) -> str:
    explicit = env.get("KILN_MLFLOW_UI_URL")
    if explicit:
        if urlparse(explicit).scheme not in ("http", "https"):
            raise SettingsError(f"KILN_MLFLOW_UI_URL={explicit!r} is not an http(s) URL")
        return explicit.rstrip("/")
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return Settings.mlflow_ui_url


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be at least 1")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0")
    return value
