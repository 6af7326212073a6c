"""The MLflow run behind a job: created by the service before `mlflow run` starts, closed when the job ends.

    python -c "from jobs.runs import RESUMED_INTO_TAG; print(RESUMED_INTO_TAG)"

The service creates the run itself and hands it to `mlflow run --run-id`, the same hand-over MLflow's own
asynchronous local backend uses. So the job knows its run id before the first line of training runs, a
cancel can mark the run KILLED even if training never started, and the run carries a `kiln.job_id` tag that
leads back to the job. With `-P resume=<run id>` kiln's trainer continues in the old run and leaves
`kiln.resumed_into` on the new one; the job follows that tag.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from core import vocab

JOB_ID_TAG = vocab.JOB_ID
RESUMED_INTO_TAG = vocab.RESUMED_INTO  # written by projects.common.tracking when a run resumes another


EXPERIMENT_KIND_TAG = vocab.EXPERIMENT_KIND_TAG
TRAINING_KIND = vocab.TRAINING_KIND


class JobRuns:
    def __init__(self, tracking_uri: str, project_dir: Path) -> None:
        self.client = MlflowClient(tracking_uri)
        self.project_dir = project_dir

    def experiment_id(self, name: str | None) -> str:
        """The named experiment (created on first use), else MLflow's own default for this environment."""
        name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not name:
            return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
        found = self.client.get_experiment_by_name(name)
        return str(found.experiment_id if found is not None else self.client.create_experiment(name))

    def create(self, job_id: str, entry_point: str, experiment_id: str) -> str:
        """A RUNNING run tagged as `mlflow run` would tag it, plus the job id; returns its run id."""
        tags = {
            JOB_ID_TAG: job_id,
            "mlflow.user": _user(),
            "mlflow.source.type": "PROJECT",
            "mlflow.source.name": str(self.project_dir),
            "mlflow.project.entryPoint": entry_point,
        }
        commit = _git_commit(self.project_dir)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(experiment_id, tags=tags, run_name=job_id)
        if self.client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
            # MLflow 3's UI opens an experiment without this tag on GenAI traces; with it, on the runs table
            self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return str(run.info.run_id)

    def training_run(self, run_id: str) -> str:
        """The run training actually writes to: `run_id`, or the run it resumed into."""
        for _ in range(8):  # a chain of resumes is short; the bound only guards against a cycle
            target = self.client.get_run(run_id).data.tags.get(RESUMED_INTO_TAG)
            if not target or target == run_id:
                return run_id
            run_id = target
        return run_id

    def status(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.status)

    def close(self, run_id: str, status: str, only_if_running: bool = True) -> None:
        """End the run as `status` (FINISHED, FAILED, KILLED); by default only a run still marked RUNNING."""
        RunStatus.from_string(status)  # raises on a misspelt status
        if only_if_running and self.status(run_id) != "RUNNING":
            return
        self.client.set_terminated(run_id, status=status)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
