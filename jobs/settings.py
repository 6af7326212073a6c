"""The job service's settings: one typed object read from the environment, every default declared here.

    KILN_MAX_CONCURRENT_JOBS=2 KILN_API_TOKEN=secret kiln jobs serve --port 9000

Read once at start-up (`Settings.from_env()`) through `core.settings.read_env`, kiln's one way to read settings;
a bad value fails the start with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.errors import SettingsError
from core.settings import read_env

__all__ = ["Settings", "SettingsError"]

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # `make ui` / `mlflow ui`'s address

# Fields whose variable is not KILN_<FIELD>.
NAMES = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "logs_dir": "KILN_JOBS_LOG_DIR",
    "experiment_name": "KILN_JOBS_EXPERIMENT",
    "cancel_grace_seconds": "KILN_JOBS_CANCEL_GRACE_SECONDS",
    "poll_seconds": "KILN_JOBS_POLL_SECONDS",
    "access_log": "KILN_JOBS_ACCESS_LOG",
    "backend_config": "KILN_JOBS_BACKEND_CONFIG",
    "file_roots": "KILN_JOBS_FILE_ROOTS",
}


@dataclass(frozen=True)
class Settings:
    project_dir: Path  # KILN_PROJECT_DIR: folder holding the MLproject the jobs run (default: the working directory)
    tracking_uri: str  # MLFLOW_TRACKING_URI: sqlite or server store (default: sqlite:///<project_dir>/mlflow.db)
    jobs_db: Path  # KILN_JOBS_DB: sqlite file with the jobs table (default: <project_dir>/.kiln/jobs.db)
    logs_dir: Path  # KILN_JOBS_LOG_DIR: one <job_id>.log per job (default: job-logs/ beside the jobs db)
    max_concurrent_jobs: int = 1  # KILN_MAX_CONCURRENT_JOBS: jobs running at once; the rest wait as queued
    api_token: str | None = None  # KILN_API_TOKEN: when set, /api/* needs `Authorization: Bearer <token>`
    mlflow_ui_url: str = DEFAULT_UI_URL  # KILN_MLFLOW_UI_URL: base of run links (the tracking server when there is one)
    experiment_name: str | None = None  # KILN_JOBS_EXPERIMENT: experiment for new runs (None: MLflow's default)
    cancel_grace_seconds: float = 10.0  # KILN_JOBS_CANCEL_GRACE_SECONDS: SIGTERM to SIGKILL wait on cancel
    poll_seconds: float = 0.5  # KILN_JOBS_POLL_SECONDS: how often the supervisor reaps and starts jobs
    access_log: bool = False  # KILN_JOBS_ACCESS_LOG: uvicorn's line per HTTP request (the page polls every second)
    backend_config: Path | None = (
        None  # KILN_JOBS_BACKEND_CONFIG: sm.json; jobs then run on SageMaker (docs/sagemaker.md)
    )
    # KILN_JOBS_FILE_ROOTS: folders (os.pathsep-separated) that job params naming files must lie in (jobs/paths.py);
    # empty: the project folder and data/samples
    file_roots: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, project_dir: Path | None = None) -> Settings:
        """Defaults, then the environment; `project_dir` (the `--project-dir` flag) wins over KILN_PROJECT_DIR."""
        raw = read_env(_Raw, environ, names=NAMES, parsers=PARSERS)
        root = (project_dir or raw.project_dir or Path.cwd()).resolve()
        if not (root / "MLproject").is_file():
            raise SettingsError(f"project folder {str(root)!r} (KILN_PROJECT_DIR, --project-dir) has no MLproject file")
        tracking_uri = raw.tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
        jobs_db = (raw.jobs_db or root / ".kiln" / "jobs.db").resolve()
        return cls(
            project_dir=root,
            tracking_uri=_check_tracking_uri(tracking_uri),
            jobs_db=jobs_db,
            logs_dir=(raw.logs_dir or jobs_db.parent / "job-logs").resolve(),
            max_concurrent_jobs=raw.max_concurrent_jobs,
            api_token=raw.api_token,
            mlflow_ui_url=raw.mlflow_ui_url or _server_ui(tracking_uri) or DEFAULT_UI_URL,
            experiment_name=raw.experiment_name,
            cancel_grace_seconds=raw.cancel_grace_seconds,
            poll_seconds=raw.poll_seconds,
            access_log=raw.access_log,
            backend_config=_backend_config(raw.backend_config),
            file_roots=raw.file_roots,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Raw:
    """What the environment says, before the defaults that depend on other values (the project folder)."""

    project_dir: Path | None = None
    tracking_uri: str | None = None
    jobs_db: Path | None = None
    logs_dir: Path | None = None
    max_concurrent_jobs: int = Settings.max_concurrent_jobs
    api_token: str | None = None
    mlflow_ui_url: str | None = None
    experiment_name: str | None = None
    cancel_grace_seconds: float = Settings.cancel_grace_seconds
    poll_seconds: float = Settings.poll_seconds
    access_log: bool = Settings.access_log
    backend_config: Path | None = None
    file_roots: tuple[Path, ...] = ()


def _backend_config(path: Path | None) -> Path | None:
    """The SageMaker backend config, checked now (every key) so that a bad one stops the start, not a job."""
    if path is None:
        return None
    from cloud.sagemaker_config import load_backend_config
    from core.errors import ConfigError

    try:
        load_backend_config(path)
    except ConfigError as err:
        raise SettingsError(f"KILN_JOBS_BACKEND_CONFIG: {err.message}") from None
    return path.resolve()


def _check_tracking_uri(uri: str) -> str:
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a one-letter scheme is a Windows drive letter
        raise SettingsError(
            f"MLFLOW_TRACKING_URI={uri!r} is a file store, which kiln refuses; use sqlite:///path/mlflow.db or a server"
        )
    return uri


def _server_ui(tracking_uri: str) -> str | None:
    """An `mlflow server` is its own UI: run links go there, not to a local `mlflow ui`."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return None


def _http_url(var: str, raw: str) -> str:
    if urlparse(raw).scheme not in ("http", "https"):
        raise SettingsError(f"{var}={raw!r} is not an http(s) URL")
    return raw.rstrip("/")


def _positive_int(var: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not an integer") from None
    if value < 1:
        raise SettingsError(f"{var}={raw!r} must be at least 1")
    return value


def _positive_float(var: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a number") from None
    if not value > 0:
        raise SettingsError(f"{var}={raw!r} must be greater than 0")
    return value


def _roots(var: str, raw: str) -> tuple[Path, ...]:
    """Existing folders, os.pathsep-separated; a missing one fails the start (a typo would refuse every job)."""
    roots = tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SettingsError(f"{var}: not a folder: {', '.join(missing)}")
    return roots


PARSERS: dict[str, Callable[[str, str], Any]] = {
    "file_roots": _roots,
    "max_concurrent_jobs": _positive_int,
    "mlflow_ui_url": _http_url,
    "cancel_grace_seconds": _positive_float,
    "poll_seconds": _positive_float,
}
