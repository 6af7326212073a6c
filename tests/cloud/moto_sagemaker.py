"""What moto's SageMaker lacks for these tests, added to its in-process server: jobs that stay InProgress until a
test ends them, StopTrainingJob, and the job's Environment in DescribeTrainingJob (real SageMaker has all three).

Imported by tests/cloud/conftest.py before the moto server starts.
"""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.sagemaker import models, responses

ACCOUNT, REGION = "123456789012", "us-east-1"
_create = responses.SageMakerResponse.create_training_job


def _create_in_progress(self: Any) -> Any:
    result = _create(self)
    job = self.sagemaker_backend.training_jobs[self._get_param("TrainingJobName")]
    job.environment = self._get_param("Environment") or {}
    job.training_job_status, job.secondary_status = "InProgress", "Starting"
    return result


def _stop(self: Any) -> Any:
    name = self._get_param("TrainingJobName")
    job = self.sagemaker_backend.training_jobs.get(name)
    if job is None:
        raise models.ValidationError(message=f"Could not find training job '{name}'.")
    job.training_job_status, job.secondary_status = "Stopped", "Stopped"
    return ActionResult({})


responses.SageMakerResponse.create_training_job = _create_in_progress
responses.SageMakerResponse.stop_training_job = _stop


def jobs() -> dict[str, Any]:
    return models.sagemaker_backends[ACCOUNT][REGION].training_jobs


def finish(name: str, status: str, reason: str = "") -> None:
    job = jobs()[name]
    job.training_job_status, job.secondary_status = status, status
    job.failure_reason = reason
