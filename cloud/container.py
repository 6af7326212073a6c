"""The training image's entry command: SageMaker runs `<image> train` for a job and `<image> serve` on an endpoint.

    python -m cloud.container train --root /opt/ml     # what `docker run <image> train` does
    python -m cloud.container serve --root /opt/ml     # kiln serve on :8080 from /opt/ml/model

`train` reads `<root>/input/config/hyperparameters.json` (written by SageMaker from the job that
`cloud.sagemaker_backend` created), unpacks the project source from the `code` channel or from S3, and runs the
entry point's MLproject command inside the MLflow run named by the hyperparameters. A marker in
`<root>/checkpoints/` (synced to S3 by SageMaker) tells a restarted spot job that it ran before: it then passes
`resume=<run id>` to entry points that take it, so training continues from the run's last complete checkpoint
(projects/common/checkpoint.py: a kill during an upload leaves the previous one in charge) in the same run. On
error the cause goes to `<root>/output/failure` (SageMaker's FailureReason); on success the run's registered ONNX
model is copied to `<root>/model`, which `serve` loads.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cloud.distribution import HostPlan, host_plan
from cloud.sagemaker_backend import HP_DISTRIBUTION, HP_ENTRY_POINT, HP_EXPERIMENT_ID, HP_RUN_ID, HP_SOURCE
from core.errors import KilnError, UserError
from core.redact import redact
from core.settings import read_env

MARKER = "kiln-run.json"
# How long a training process keeps retrying a tracking server that is away before a call fails: MLflow's
# urllib3 retries wait 2, 4, 8, ... seconds, at most 120 s each; MLflow allows at most 10 retries, which span
# about 10 minutes (its default, 7, about 4). See docs/team-server.md.
RESILIENT_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}


@dataclass(frozen=True)
class ContainerSettings:
    root: Path = Path("/opt/ml")  # KILN_SM_ROOT: SageMaker's tree (input/, model/, output/, checkpoints/)
    workdir: Path | None = None  # KILN_SM_WORKDIR: where the source is unpacked; unset = a temporary folder
    port: int = 8080  # KILN_SM_PORT: serve's port; SageMaker endpoints call 8080
    model_name: str = "model"  # KILN_SM_MODEL_NAME: the name `serve` gives the model in /opt/ml/model


class Paths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hyperparameters = root / "input" / "config" / "hyperparameters.json"
        self.code_channel = root / "input" / "data" / "code"
        self.model = root / "model"
        self.output = root / "output"
        self.failure = root / "output" / "failure"
        self.checkpoints = root / "checkpoints"
        self.resource_config = root / "input" / "config" / "resourceconfig.json"


@dataclass(frozen=True)
class Job:
    entry_point: str
    run_id: str
    experiment_id: str | None
    source: str
    params: dict[str, str]
    distribution: str = "none"  # "ddp": every host runs the entry point as ranks of one data-parallel training

    @classmethod
    def from_hyperparameters(cls, path: Path) -> Job:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read {path}: {err}") from None
        values = {str(k): _unquote(v) for k, v in raw.items()}
        missing = [k for k in (HP_ENTRY_POINT, HP_SOURCE) if not values.get(k)]
        if missing:
            raise UserError(f"{path}: hyperparameter {missing[0]!r} is missing (was the job made by kiln?)")
        run_id = values.pop(HP_RUN_ID, "") or os.environ.get("MLFLOW_RUN_ID", "")
        if not run_id:
            raise UserError(f"{path}: no {HP_RUN_ID!r} hyperparameter and no MLFLOW_RUN_ID")
        return cls(
            entry_point=values.pop(HP_ENTRY_POINT),
            run_id=run_id,
            experiment_id=values.pop(HP_EXPERIMENT_ID, None) or os.environ.get("MLFLOW_EXPERIMENT_ID"),
            source=values.pop(HP_SOURCE),
            distribution=values.pop(HP_DISTRIBUTION, "none") or "none",
            params=values,
        )


def _unquote(value: Any) -> str:
    """The SageMaker SDK JSON-encodes hyperparameter values ('"abc"'); boto3 callers pass them raw."""
    text = str(value)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(text))
        except json.JSONDecodeError:
            return text
    return text


def fetch_source(job: Job, paths: Paths, dest: Path) -> Path:
    """Unpack the project: from the `code` channel SageMaker downloaded, else from `kiln_source` on S3."""
    archive = paths.code_channel / "source.tar.gz"
    if not archive.is_file():
        archive = _download_s3(job.source, dest.parent / "source.tar.gz")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")  # refuses absolute paths and links out of dest
    if not (dest / "MLproject").is_file():
        raise UserError(f"source {job.source} has no MLproject")
    return dest


def _download_s3(uri: str, dest: Path) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise UserError(f"hyperparameter {HP_SOURCE!r}: {uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    try:
        boto3.client("s3").download_file(bucket, key, str(dest))
    except (BotoCoreError, ClientError) as err:
        raise UserError(f"cannot download the source {uri}: {err}") from None
    return dest


def resume_params(job: Job, paths: Paths, takes_resume: bool) -> dict[str, str]:
    """The entry point's params for this attempt; after an earlier attempt of the same run, resume it."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    marker = paths.checkpoints / MARKER
    previous: dict[str, Any] = {}
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except json.JSONDecodeError:
            previous = {}
    attempt = int(previous.get("attempt", 0)) + 1 if previous.get("run_id") == job.run_id else 1
    marker.write_text(json.dumps({"run_id": job.run_id, "attempt": attempt}))
    params = dict(job.params)
    if attempt > 1 and takes_resume and _has_checkpoint(job.run_id):
        params["resume"] = job.run_id
        print(f"kiln: attempt {attempt} of run {job.run_id}: resuming from its last complete checkpoint", flush=True)
    return params


def _has_checkpoint(run_id: str) -> bool:
    """A complete `last` checkpoint (its pointer) is in the run; a half-uploaded one from a kill does not count."""
    from projects.common.checkpoint import has_checkpoint

    try:
        return has_checkpoint(run_id, "last")
    except Exception:  # noqa: BLE001 - no checkpoint to resume from is the answer either way
        return False


def _entry(workdir: Path, entry_point: str) -> Any:
    from mlflow.exceptions import ExecutionException
    from mlflow.projects.utils import load_project

    try:
        # mlflow.projects.utils has no annotations
        entry = load_project(str(workdir)).get_entry_point(entry_point)  # type: ignore[no-untyped-call]
    except ExecutionException:
        entry = None
    if entry is None:
        raise UserError(f"entry point {entry_point!r} is not in the source's MLproject")
    return entry


def entry_command(workdir: Path, entry_point: str, params: dict[str, str]) -> str:
    storage = tempfile.mkdtemp(prefix="kiln-sm-storage-")
    return str(_entry(workdir, entry_point).compute_command(params, storage))


def distribution_plan(job: Job, paths: Paths, workdir: Path) -> HostPlan | None:
    """This host's place in a `distribution: ddp` job; None for a single-process job."""
    if job.distribution == "none":
        return None
    if job.distribution != "ddp":
        raise UserError(f"hyperparameter {HP_DISTRIBUTION!r}: {job.distribution!r} is not none or ddp")
    if "nproc" not in _entry(workdir, job.entry_point).parameters:
        raise UserError(
            f"entry point {job.entry_point!r} has no nproc param: distribution ddp trains the shared-trainer "
            "families (edgnet, microseg, cr_recon)"
        )
    return host_plan(os.environ, paths.resource_config)


def takes_resume(workdir: Path, entry_point: str) -> bool:
    return "resume" in _entry(workdir, entry_point).parameters


def training_env(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in RESILIENT_HTTP.items():
        env.setdefault(key, value)
    # last.pt every epoch: a spot reclaim then loses only the epoch in flight, never a logged one
    env.setdefault("KILN_CHECKPOINT_EVERY_SECONDS", "0")
    env["MLFLOW_RUN_ID"] = job.run_id
    if job.experiment_id:
        env["MLFLOW_EXPERIMENT_ID"] = job.experiment_id
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_command(command: str, workdir: Path, env: dict[str, str], tail: deque[str]) -> int:
    """Run the entry point's shell command; its lines go to stdout (CloudWatch) and the last ones to `tail`."""
    print(f"kiln: $ {redact(command)}", flush=True)
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def forward(signum: int, frame: object) -> None:  # SageMaker's stop sends SIGTERM to the container
        os.killpg(proc.pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = redact(raw.decode(errors="replace").rstrip("\n"))
            print(line, flush=True)
            tail.append(line)
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def export_model(run_id: str, dest: Path) -> Path | None:
    """Copy the newest model version registered from `run_id` (an MLflow model folder) into `dest`."""
    import mlflow

    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    uri = client.get_model_version_download_uri(newest.name, str(newest.version))
    with tempfile.TemporaryDirectory(prefix="kiln-sm-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, dest, dirs_exist_ok=True)
    (dest / "kiln-model.json").write_text(
        json.dumps({"name": newest.name, "version": int(newest.version), "run_id": run_id})
    )
    return dest


def train(settings: ContainerSettings) -> None:
    paths = Paths(settings.root)
    tail: deque[str] = deque(maxlen=20)
    try:
        job = Job.from_hyperparameters(paths.hyperparameters)
        work = settings.workdir or Path(tempfile.mkdtemp(prefix="kiln-sm-src-"))
        workdir = fetch_source(job, paths, work / "project")
        params = resume_params(job, paths, takes_resume(workdir, job.entry_point))
        plan = distribution_plan(job, paths, workdir)
        if plan is not None:
            params["nproc"] = str(plan.nproc)
            print(f"kiln: host {plan.current} ({plan.node_rank + 1} of {len(plan.hosts)}), {plan.nproc} process(es), "
                  f"rendezvous {plan.hosts[0]}:{plan.port}", flush=True)  # fmt: skip
        command = entry_command(workdir, job.entry_point, params)
        code = run_command(command, workdir, {**training_env(job), **(plan.env() if plan else {})}, tail)
        if code != 0:
            cause = next((line for line in reversed(tail) if line.startswith("Error:")), None)
            raise UserError(f"entry point {job.entry_point!r} exited with {code}: {cause or ' | '.join(tail)}")
        if plan is not None and not plan.is_leader:  # the first host logged, exported and registered the model
            print(f"kiln: host {plan.current} done; the model is on host {plan.hosts[0]}", flush=True)
            return
        exported = export_model(job.run_id, paths.model)
        print(f"kiln: model copied to {exported}" if exported else "kiln: the run registered no model", flush=True)
    except KilnError as err:
        _fail(paths, err.message)
    except Exception as err:  # SageMaker shows the failure file; a traceback alone would say less
        _fail(paths, f"{type(err).__name__}: {err}")


def _fail(paths: Paths, message: str) -> None:
    text = redact(message)
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(text[:4096])
    print(f"Error: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


def serve_command(settings: ContainerSettings, staging: Path) -> tuple[list[str], dict[str, str]]:
    """Register `<root>/model` in a private sqlite registry and serve it with `kiln serve`, unchanged.

    The endpoint's model never changes, so alias polling is off; everything else (contract checks, warm-up,
    batching, /ping, /invocations, metrics) is kiln serve's.
    """
    import mlflow

    model_dir = Paths(settings.root).model
    if not (model_dir / "MLmodel").is_file():
        raise UserError(f"{model_dir} holds no MLflow model (no MLmodel file); train with this image first")
    info = model_dir / "kiln-model.json"
    name = json.loads(info.read_text())["name"] if info.is_file() else settings.model_name
    uri = f"sqlite:///{staging / 'registry.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    version = client.create_model_version(name, source=str(model_dir.resolve()))
    client.set_registered_model_alias(name, "production", version.version)
    argv = [sys.executable, "-m", "kiln", "serve", "--models", name, "--host", "0.0.0.0", "--port", str(settings.port)]
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, KILN_POLL_SECONDS="0", MLFLOW_DISABLE_TELEMETRY="true")
    return argv, env


def serve(settings: ContainerSettings) -> None:
    staging = Path(tempfile.mkdtemp(prefix="kiln-sm-serve-"))
    try:
        argv, env = serve_command(settings, staging)
    except KilnError as err:
        raise click.ClickException(err.message) from None
    print(f"kiln: {shlex.join(argv)}", flush=True)
    os.chdir(staging)
    os.execvpe(argv[0], argv, env)


@click.group()
def main() -> None:
    """SageMaker's container commands: train and serve."""


@main.command("train")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="SageMaker's tree. Default: /opt/ml.")
def train_command(root: Path | None) -> None:
    """Run the job's entry point in its MLflow run, then copy the model to <root>/model."""
    train(read_env(ContainerSettings, prefix="KILN_SM_", root=root))


@main.command("serve")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="SageMaker's tree. Default: /opt/ml.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port. Default: 8080.")
def serve_cmd(root: Path | None, port: int | None) -> None:
    """Serve <root>/model with kiln serve on port 8080 (/ping, /invocations)."""
    serve(read_env(ContainerSettings, prefix="KILN_SM_", root=root, port=port))


if __name__ == "__main__":
    main()
