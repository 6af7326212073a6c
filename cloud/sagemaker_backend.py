"""`mlflow run --backend sagemaker`: run an MLproject entry point as a SageMaker training job.

    mlflow run . -e edgnet --backend sagemaker --backend-config sm.json -P epochs=30

Registered under MLflow's `mlflow.project_backend` entry-point group (pyproject.toml). Before anything is
created the backend checks the config (`cloud.sagemaker_config`), that the tracking server answers and that the
bucket exists. It then opens the MLflow run, packs what git tracks into `source.tar.gz`, uploads it under
`<s3_prefix>/<job>/source/`, and creates the training job with the entry point, its params and the run id as
hyperparameters. The image's container side (`cloud.container`) logs into that same run. `wait()` streams the
job's CloudWatch log lines and maps its end state onto the run: Completed -> FINISHED, Failed -> FAILED (with
SageMaker's failure reason), Stopped -> KILLED. Ctrl-C or SIGTERM (the job service's cancel) stops the job.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun

from cloud.sagemaker_config import SageMakerConfig, load_backend_config
from core import vocab
from core.errors import ConfigError, KilnError, UserError
from core.redact import mask_uri, redact

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHECKPOINT_DIR = "/opt/ml/checkpoints"
# Hyperparameters the container side reads; everything else in the hyperparameters is an entry point param.
HP_ENTRY_POINT, HP_RUN_ID, HP_SOURCE, HP_EXPERIMENT_ID = "kiln_entry_point", "kiln_run_id", "kiln_source", "kiln_exp"
HP_DISTRIBUTION = "kiln_distribution"  # "ddp": every host trains as ranks of one run (cloud/distribution.py)
RESERVED = frozenset({HP_ENTRY_POINT, HP_RUN_ID, HP_SOURCE, HP_EXPERIMENT_ID, HP_DISTRIBUTION})
# SageMaker state -> MLflow run status
RUN_STATUS = {
    "InProgress": "RUNNING",
    "Completed": "FINISHED",
    "Failed": "FAILED",
    "Stopping": "KILLED",
    "Stopped": "KILLED",
}


class SageMakerError(KilnError):
    """SageMaker or S3 refused a request; the message names the config key when one is at fault."""


def poll_seconds() -> float:
    """How often a waiting client describes the job (KILN_SAGEMAKER_POLL_SECONDS, default 15)."""
    raw = os.environ.get("KILN_SAGEMAKER_POLL_SECONDS", "15")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"KILN_SAGEMAKER_POLL_SECONDS={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"KILN_SAGEMAKER_POLL_SECONDS={raw!r} must be > 0")
    return value


@dataclass(frozen=True)
class Clients:
    sagemaker: Any
    s3: Any
    logs: Any

    @classmethod
    def for_config(cls, config: SageMakerConfig) -> Clients:
        """boto3 clients in the config's region; AWS_ENDPOINT_URL (moto in tests) is honoured by boto3 itself."""
        import boto3
        import botocore.exceptions

        try:
            session = boto3.session.Session(region_name=config.region)
        except botocore.exceptions.ProfileNotFound as err:
            raise ConfigError(f"AWS_PROFILE: {err}") from None
        if session.region_name is None:
            raise ConfigError("region: not set in the backend config and no AWS default region is configured")
        return cls(session.client("sagemaker"), session.client("s3"), session.client("logs"))


class SageMakerBackend(AbstractBackend):
    """The `sagemaker` project backend; MLflow builds one per `mlflow run` and calls `run` once."""

    def run(
        self,
        project_uri: str,
        entry_point: str,
        params: Mapping[str, Any],
        version: str | None,
        backend_config: Mapping[str, Any] | str,
        tracking_uri: str | None,
        experiment_id: str,
    ) -> SageMakerSubmittedRun:
        from mlflow.exceptions import ExecutionException

        try:
            submitted = submit(project_uri, entry_point, dict(params or {}), version, backend_config, experiment_id)
        except KilnError as err:
            # mlflow's CLI prints a traceback for anything but ExecutionException; one line is enough here.
            raise ExecutionException(err.message) from None
        # `mlflow run` (the CLI) never waits on a plugin backend (it passes SYNCHRONOUS=False); the Python API
        # does by default. Wait here only when nobody else will.
        mlflow_waits = isinstance(backend_config, Mapping) and backend_config.get("SYNCHRONOUS") is True
        if submitted.config.wait and not mlflow_waits:
            try:
                ok = submitted.wait()
            except KeyboardInterrupt:
                submitted.cancel()
                raise
            if not ok:
                raise ExecutionException(f"SageMaker job {submitted.job_name} ended {submitted.final_status}")
        return submitted


def submit(
    project_uri: str,
    entry_point: str,
    params: dict[str, Any],
    version: str | None,
    backend_config: Mapping[str, Any] | str,
    experiment_id: str,
) -> SageMakerSubmittedRun:
    """Check everything, then open the run, upload the source and create the job."""
    import mlflow
    from mlflow.projects.utils import fetch_and_validate_project, get_or_create_run, load_project

    config = load_backend_config(backend_config)
    tracking_uri = resolve_tracking_uri(config.tracking_uri or mlflow.get_tracking_uri())
    clients = Clients.for_config(config)
    check_bucket(clients.s3, config)
    bad = sorted(RESERVED & set(params))
    if bad:
        raise UserError(f"param {bad[0]!r} is reserved by the SageMaker backend")
    # mlflow.projects.utils has no annotations: its project, run and folder are typed by the uses below
    work_dir: str = fetch_and_validate_project(project_uri, version, entry_point, params)  # type: ignore[no-untyped-call]
    entry = load_project(work_dir).get_entry_point(entry_point)  # type: ignore[no-untyped-call]
    if entry is None:
        raise UserError(f"entry point {entry_point!r} is not in {work_dir}/MLproject")
    if config.distribution == "ddp" and "nproc" not in entry.parameters:
        raise ConfigError(
            f"distribution: entry point {entry_point!r} has no nproc param; ddp trains edgnet, microseg, cr_recon",
            field="distribution",
        )
    files = tracked_files(Path(work_dir))
    run = get_or_create_run(  # type: ignore[no-untyped-call]  # mlflow.projects.utils has no annotations
        config.run_id, project_uri, experiment_id, work_dir, version, entry_point, params
    )
    run_id = run.info.run_id
    job_name = job_name_for(entry_point, run_id)
    try:
        source = upload_source(clients.s3, config, job_name, Path(work_dir), files)
        request = training_job_request(config, job_name, entry_point, params, run_id, experiment_id, source)
        request["Environment"] = job_environment(tracking_uri, run_id, experiment_id)
        arn = create_job(clients.sagemaker, request)
    except Exception as err:
        _close_failed(run_id, err)
        raise
    tag_run(run_id, config, job_name, arn, source)
    print(f"kiln: started SageMaker training job {job_name} for run {run_id}", file=sys.stderr, flush=True)
    return SageMakerSubmittedRun(run_id, job_name, clients, config)


def resolve_tracking_uri(uri: str) -> str:
    """The job needs an http(s) server it can reach; check the client can reach it too (GET /health)."""
    import httpx

    if not uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"tracking_uri: a SageMaker job cannot report to {mask_uri(uri)}; set MLFLOW_TRACKING_URI or "
            "tracking_uri to the team server's http(s) URL (docs/team-server.md)",
            field="tracking_uri",
        )
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=10)
    except httpx.HTTPError as err:
        raise ConfigError(
            f"tracking_uri: cannot reach the tracking server at {mask_uri(uri)} ({type(err).__name__})",
            field="tracking_uri",
        ) from None
    if response.status_code != 200:
        raise ConfigError(
            f"tracking_uri: {mask_uri(uri)}/health answered {response.status_code}; is it an MLflow server?",
            field="tracking_uri",
        )
    return uri.rstrip("/")


def check_bucket(s3: Any, config: SageMakerConfig) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=config.bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        what = "does not exist" if code in ("404", "NoSuchBucket", "NotFound") else f"cannot be used ({code})"
        raise ConfigError(f"s3_prefix: bucket {config.bucket!r} {what}", field="s3_prefix") from None
    except BotoCoreError as err:
        raise ConfigError(f"s3_prefix: cannot reach S3 for bucket {config.bucket!r} ({err})") from None


def tracked_files(work_dir: Path) -> list[str]:
    """What git tracks in the project folder (uncommitted edits to tracked files included, untracked files not)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached"], cwd=work_dir, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise UserError(
            f"project {str(work_dir)!r} is not a git work tree; the SageMaker backend ships what git tracks ({err})"
        ) from None
    files = [f for f in out.decode().split("\0") if f and (work_dir / f).is_file()]
    if "MLproject" not in files:
        raise UserError(f"project {str(work_dir)!r}: git does not track MLproject; `git add MLproject` first")
    return files


def pack_source(work_dir: Path, files: list[str], dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name in sorted(files):
            tar.add(work_dir / name, arcname=name, recursive=False)
    return dest


def upload_source(s3: Any, config: SageMakerConfig, job_name: str, work_dir: Path, files: list[str]) -> str:
    key = "/".join(p for p in (config.key_prefix, job_name, "source", "source.tar.gz") if p)
    with tempfile.TemporaryDirectory(prefix="kiln-sm-") as tmp:
        archive = pack_source(work_dir, files, Path(tmp) / "source.tar.gz")
        s3.upload_file(str(archive), config.bucket, key)
    return f"s3://{config.bucket}/{key}"


def job_name_for(entry_point: str, run_id: str) -> str:
    """`kiln-<entry>-<utc time>-<run id>`: unique, and within SageMaker's 63 characters and alphabet."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    entry = re.sub(r"[^A-Za-z0-9]+", "-", entry_point).strip("-")[:24] or "entry"
    return f"kiln-{entry}-{stamp}-{run_id[:8]}"


def hyperparameters(
    entry_point: str, params: Mapping[str, Any], run_id: str, experiment_id: str, source: str
) -> dict[str, str]:
    values = {str(k): str(v) for k, v in params.items()}
    values.update(
        {HP_ENTRY_POINT: entry_point, HP_RUN_ID: run_id, HP_SOURCE: source, HP_EXPERIMENT_ID: str(experiment_id)}
    )
    for key, value in values.items():
        if len(value) > 2500:
            raise UserError(f"param {key!r}: SageMaker hyperparameter values are at most 2500 characters")
    return values


def training_job_request(
    config: SageMakerConfig,
    job_name: str,
    entry_point: str,
    params: Mapping[str, Any],
    run_id: str,
    experiment_id: str,
    source: str,
) -> dict[str, Any]:
    base = f"s3://{config.bucket}/" + "/".join(p for p in (config.key_prefix, job_name) if p)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config.max_run_seconds}
    wait = config.effective_max_wait()
    if wait is not None:
        stopping["MaxWaitTimeInSeconds"] = wait
    return {
        "TrainingJobName": job_name,
        "RoleArn": config.role_arn,
        "AlgorithmSpecification": {"TrainingImage": config.image_uri, "TrainingInputMode": "File"},
        "HyperParameters": {
            **hyperparameters(entry_point, params, run_id, experiment_id, source),
            **({HP_DISTRIBUTION: "ddp"} if config.distribution == "ddp" else {}),
        },
        "InputDataConfig": [
            {
                "ChannelName": "code",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": source.rsplit("/", 1)[0] + "/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"{base}/output"},
        "ResourceConfig": {
            "InstanceType": config.instance_type,
            "InstanceCount": config.instance_count,
            "VolumeSizeInGB": config.volume_size_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": config.use_spot,
        "CheckpointConfig": {"S3Uri": f"{base}/checkpoints", "LocalPath": CHECKPOINT_DIR},
        "Tags": [{"Key": k, "Value": v} for k, v in sorted({**config.tags, "kiln:run_id": run_id}.items())],
    }


def job_environment(tracking_uri: str, run_id: str, experiment_id: str) -> dict[str, str]:
    """What the container needs to log into the run. No credentials: the job authenticates as its IAM role."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": str(experiment_id),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def create_job(sagemaker: Any, request: dict[str, Any]) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(sagemaker.create_training_job(**request)["TrainingJobArn"])
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message", str(err))
        raise SageMakerError(f"SageMaker refused the training job {request['TrainingJobName']}: {message}") from None
    except BotoCoreError as err:
        raise SageMakerError(f"cannot reach SageMaker: {err}") from None


def stop_job(sagemaker: Any, job_name: str) -> None:
    """StopTrainingJob (what `kiln tune` does to a pruned trial); a job that already ended is left as it is."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sagemaker.stop_training_job(TrainingJobName=job_name)
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message", str(err))
        if "already" not in message.lower() and "status" not in message.lower():
            raise SageMakerError(f"SageMaker refused to stop training job {job_name}: {message}") from None
    except BotoCoreError as err:
        raise SageMakerError(f"cannot reach SageMaker to stop {job_name}: {err}") from None


def tag_run(run_id: str, config: SageMakerConfig, job_name: str, arn: str, source: str) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    tags = {
        vocab.SAGEMAKER_JOB_NAME: job_name,
        vocab.SAGEMAKER_JOB_ARN: arn,
        vocab.SAGEMAKER_INSTANCE_TYPE: config.instance_type,
        vocab.SAGEMAKER_SPOT: str(config.use_spot).lower(),
        vocab.SAGEMAKER_SOURCE: source,
        vocab.SAGEMAKER_CHECKPOINTS: f"s3://{config.bucket}/"
        + "/".join(p for p in (config.key_prefix, job_name, "checkpoints") if p),
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def _close_failed(run_id: str, err: BaseException) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, vocab.NOTE_TAG, f"SageMaker job not created: {redact(str(err))[:2000]}")
        client.set_terminated(run_id, "FAILED")


class SageMakerSubmittedRun(SubmittedRun):
    """One training job, watched from the client: status, log lines, cancel."""

    def __init__(self, run_id: str, job_name: str, clients: Clients, config: SageMakerConfig) -> None:
        super().__init__()
        self._run_id = run_id
        self.job_name = job_name
        self.clients = clients
        self.config = config
        self.final_status: str | None = None
        self.logs = LogTail(clients.logs, job_name)

    @property
    def run_id(self) -> str:
        return self._run_id

    def describe(self) -> dict[str, Any]:
        return dict(self.clients.sagemaker.describe_training_job(TrainingJobName=self.job_name))

    def get_status(self) -> str:
        return RUN_STATUS.get(str(self.describe()["TrainingJobStatus"]), "RUNNING")

    def wait(self) -> bool:
        """Stream log lines until the job ends; then set the run's status from the job's. True when Completed."""
        interval = poll_seconds()
        with _sigterm_as_interrupt():
            while True:
                job = self.describe()
                self.logs.print_new()
                status = str(job["TrainingJobStatus"])
                if status in ("Completed", "Failed", "Stopped"):
                    self.logs.print_new()
                    self._finish(job)
                    return status == "Completed"
                time.sleep(interval)

    def cancel(self) -> None:
        """Stop the job and wait (up to 10 minutes) until SageMaker says it stopped."""
        from botocore.exceptions import ClientError

        with contextlib.suppress(ClientError):  # already ended: nothing to stop
            self.clients.sagemaker.stop_training_job(TrainingJobName=self.job_name)
        print(f"kiln: stopping SageMaker training job {self.job_name}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = self.describe()
            if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                self._finish(job)
                return
            time.sleep(min(poll_seconds(), 5))

    def _finish(self, job: Mapping[str, Any]) -> None:
        import mlflow

        status = RUN_STATUS[str(job["TrainingJobStatus"])]
        self.final_status = str(job["TrainingJobStatus"])
        client = mlflow.MlflowClient()
        reason = job.get("FailureReason")
        if status == "FAILED" and reason:
            client.set_tag(self.run_id, vocab.SAGEMAKER_FAILURE_REASON, redact(str(reason))[:5000])
            print(f"kiln: SageMaker job {self.job_name} failed: {redact(str(reason))}", file=sys.stderr, flush=True)
        seconds = job.get("BillableTimeInSeconds")
        if seconds is not None:
            client.set_tag(self.run_id, vocab.SAGEMAKER_BILLABLE_SECONDS, str(seconds))
        client.set_terminated(self.run_id, status)


class LogTail:
    """Prints each new CloudWatch line of the job's streams (`<job>/algo-1-...`) once, in order per stream."""

    def __init__(self, logs: Any, job_name: str) -> None:
        self.logs = logs
        self.job_name = job_name
        self.tokens: dict[str, str | None] = {}

    def streams(self) -> list[str]:
        from botocore.exceptions import ClientError

        try:
            found = self.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=self.job_name + "/")
        except ClientError:  # the group appears with the job's first line
            return []
        return sorted(s["logStreamName"] for s in found.get("logStreams", []))

    def new_lines(self) -> Iterator[str]:
        from botocore.exceptions import ClientError

        for stream in self.streams():
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                token = self.tokens.get(stream)
                if token:
                    kwargs["nextToken"] = token
                try:
                    page = self.logs.get_log_events(**kwargs)
                except ClientError:
                    break
                for event in page.get("events", []):
                    yield str(event.get("message", ""))
                self.tokens[stream] = page.get("nextForwardToken")
                if not page.get("events") or page.get("nextForwardToken") == token:
                    break

    def print_new(self) -> int:
        count = 0
        for line in self.new_lines():
            print(redact(line), flush=True)
            count += 1
        return count


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """mlflow's runner cancels on KeyboardInterrupt; the job service stops jobs with SIGTERM. Treat both alike."""
    if not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
