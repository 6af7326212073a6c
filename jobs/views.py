"""Job rows as API JSON: live progress from MLflow, the phase after training, an ETA, and what the run registered.

    curl -s localhost:9000/api/training/edgnet_large-1a2b3c4d | jq '{status, progress, registered}'
    curl -s localhost:9000/api/training/edgnet_large-1a2b3c4d/preview -o latest.png

The list route asks for the cheap view (`as_json(job)`); the single-job route adds what needs more MLflow
calls (`detail=True`): the versions the run registered, with their aliases, so a finished job can be promoted
from its own view, and the run's ranking metric (`kiln.metric`), which the page shows first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import ui_links
from jobs.progress import METRIC_TAG, Progress
from jobs.runner import JobRunner
from jobs.settings import Settings
from jobs.store import COMPLETED, RUNNING, Job
from projects.common.registration import REASON_TAG as NOT_REGISTERED_TAG
from projects.common.registration import REGISTERED_TAG

# Artifact folders holding per-epoch prediction pictures, newest name last when sorted; the first that has any wins.
PREVIEW_DIRS = ("overlays", "plots")
PREVIEW_NAME = re.compile(r"(latest|epoch_\d+|best|val_batch\d+_pred|spectra_epoch_\d+|spectra_best)\.(png|jpe?g)$")


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


def _now() -> float:
    return datetime.now(UTC).timestamp()


@dataclass(frozen=True)
class Live:
    """What only a running job has: its phase and the time left."""

    phase: str | None = None
    eta_seconds: float | None = None
    task_metric: str | None = None
    error: str | None = None  # why progress could not be read from MLflow


class JobViews:
    """Turns job rows into API JSON, refreshing a running job's progress from MLflow on the way."""

    def __init__(self, runner: JobRunner, settings: Settings) -> None:
        self.runner = runner
        self.settings = settings

    def run_url(self, experiment_id: str | None, run_id: str | None) -> str | None:
        if not run_id or experiment_id is None:
            return None
        return ui_links.run_url(self.settings.mlflow_ui_url, experiment_id, run_id)

    def runs_table_url(self) -> str:
        """The runs table of the experiment new jobs log to (MLflow's default, id 0, unless KILN_JOBS_EXPERIMENT)."""
        base, name = self.settings.mlflow_ui_url, self.settings.experiment_name
        if not name:
            return ui_links.runs_table_url(base, "0")
        try:
            found = MlflowClient(self.settings.tracking_uri).get_experiment_by_name(name)
        except Exception:  # an unreachable store must not break the page's config; the list still opens
            found = None
        return ui_links.runs_table_url(base, found.experiment_id) if found else ui_links.experiments_url(base)

    def model_url(self, name: str, version: int | None = None) -> str:
        from urllib.parse import quote

        tail = f"/versions/{version}" if version is not None else ""
        return f"{self.settings.mlflow_ui_url}/#/models/{quote(name)}{tail}"

    def refresh(self, job: Job) -> tuple[Job, Live]:
        """The job with live progress when it runs, and its phase and ETA."""
        if job.status != RUNNING or job.run_id is None:
            return job, Live()
        try:
            run_id = self.runner.training_run(job) or job.run_id
            p: Progress = self.runner.reader.progress(run_id, job.total_epochs)
        except MlflowException as exc:
            return job, Live(error=f"could not read progress from MLflow: {exc.message}")
        seen = (p.current_epoch, p.total_epochs, p.metrics, run_id)
        if seen != (job.current_epoch, job.total_epochs, job.metrics, job.run_id):
            job = self.runner.store.update(
                job.id, RUNNING, current_epoch=p.current_epoch, total_epochs=p.total_epochs, metrics=p.metrics,
                run_id=run_id,
            )  # fmt: skip
        return job, Live(p.phase, p.eta_seconds, p.task_metric)

    def as_json(self, job: Job, *, detail: bool = False) -> dict[str, Any]:
        job, live = self.refresh(job)
        total, current, end = job.total_epochs, job.current_epoch, job.finished_at
        percent = round(min(100.0, 100.0 * (current or 0) / total), 1) if total else None
        stopped_early = bool(job.status == COMPLETED and total and (current or 0) < total)
        if job.status == COMPLETED:
            percent = 100.0  # the run is over: early stopping ends it as surely as the last epoch
        data = {
            "job_id": job.id,
            "entry_point": job.entry_point,
            "params": job.params,
            "status": job.status,
            "run_id": job.run_id,
            "experiment_id": job.experiment_id,
            "experiment_name": job.experiment_name,
            "mlflow_url": self.run_url(job.experiment_id, job.run_id),
            "progress": {
                "current_epoch": current,
                "total_epochs": total,
                "percent": percent,
                "phase": live.phase,
                "eta_seconds": live.eta_seconds,
                "stopped_early": stopped_early,
            },
            "progress_error": live.error,
            "metrics": job.metrics,
            "task_metric": live.task_metric,
            "queue_position": self.runner.queue_position(job),
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "finished_at": iso(end),
            "duration_seconds": round((end or _now()) - job.started_at, 1) if job.started_at else None,
            "pid": job.pid,
            "exit_code": job.exit_code,
            "error": job.error,
        }
        if detail:
            data.update(self._details(job, live))
        return data

    def _details(self, job: Job, live: Live) -> dict[str, Any]:
        run_id = self.runner.training_run(job) if job.run_id else None
        if run_id is None:
            return {"registered": []}
        client = self.runner.reader.client
        try:
            tags = client.get_run(run_id).data.tags
            task_metric = live.task_metric or tags.get(METRIC_TAG)
            registered = registered_versions(client, run_id) if job.status != RUNNING else []
        except MlflowException:
            return {"registered": []}
        for item in registered:
            item["mlflow_url"] = self.model_url(item["name"], item["version"])
        # training decides against the family's trivial baseline (projects/common/registration.py)
        why_not = tags.get(NOT_REGISTERED_TAG) if tags.get(REGISTERED_TAG) == "false" else None
        return {"task_metric": task_metric, "registered": registered, "not_registered_reason": why_not}


def registered_versions(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """Every model version registered from `run_id`, with the aliases it holds (newest first)."""
    found = client.search_model_versions(f"run_id = '{run_id}'")
    out: list[dict[str, Any]] = []
    aliases_of: dict[str, dict[str, int]] = {}
    for v in sorted(found, key=lambda v: (v.name, -int(v.version))):
        if v.name not in aliases_of:
            model = client.get_registered_model(v.name)
            aliases_of[v.name] = {str(a): int(n) for a, n in (model.aliases or {}).items()}
        held = sorted(a for a, n in aliases_of[v.name].items() if n == int(v.version))
        out.append({"name": v.name, "version": int(v.version), "status": v.status, "aliases": held})
    return out


def latest_preview(client: MlflowClient, run_id: str, finished: bool) -> str | None:
    """The artifact path of the run's newest prediction picture.

    While training: `latest.*` (rewritten every epoch), else the newest `epoch_NNN`; once finished, the best
    weights' picture when there is one (that is the model that was registered).
    """
    for folder in PREVIEW_DIRS:
        try:
            names = [Path(f.path).name for f in client.list_artifacts(run_id, folder) if not f.is_dir]
        except MlflowException:
            continue
        pictures = [n for n in names if PREVIEW_NAME.search(n)]
        latest = [n for n in pictures if n.startswith("latest.")]
        epochs = sorted(n for n in pictures if "epoch_" in n)
        best = sorted(n for n in pictures if "best" in n)
        order = (best + latest + epochs[-1:]) if finished else (latest + epochs[-1:] + best)
        order += sorted(pictures)
        if order:
            return f"{folder}/{order[0]}"
    return None
