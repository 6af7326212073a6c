"""`kiln tune --backend sagemaker`: every trial of a study is a SageMaker training job; this process only drives.

    kiln tune edgnet --space space.yaml --trials 10 --parallel 2 --backend sagemaker --backend-config sm.json \\
        --storage postgresql+psycopg://kiln:...@db/optuna --study edg-sm
    kiln tune edgnet --space space.yaml --trials 10 --parallel 2 --backend sagemaker --backend-config sm.json \\
        --storage postgresql+psycopg://kiln:...@db/optuna --study edg-sm --resume     # after the driver died

The study, its parent run and each trial's child run are those of `experiments.tune` (same tags, same summary). The
difference is where a trial trains: the driver asks Optuna for a trial (`study.ask`), opens its child run on the
team tracking server and creates a training job for the target's MLproject entry point with the trial's params
(`cloud.sagemaker_backend`: the job reports into that child run, spot when the config says so). At most
`--parallel` jobs run at once. Every `KILN_SAGEMAKER_POLL_SECONDS` the driver describes each job and reads the
child run's per-epoch objective from the tracking server; it reports it to Optuna and, when the pruner says so,
stops the job (`StopTrainingJob`) and ends the run FINISHED with `kiln.tune.state=pruned`. A job that fails (or is
stopped by anyone else, or loses its spot capacity) is a failed trial with SageMaker's FailureReason as its
`kiln.error`. The trial's job name is stored on the trial before the job is created, so `--resume` reattaches to
jobs still running and never starts a trial's job twice. No trial registers a model; at the end the best trial's
own logged model (its ONNX export) is registered, without training it again.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from core import vocab
from core.errors import ConfigError, KilnError, UserError

JOB_ATTR = "sagemaker_job"  # the trial's job name, set before the job is created
RUN_ATTR = "mlflow_run_id"  # as experiments.tune sets it
TERMINAL = ("Completed", "Failed", "Stopped")


@dataclass
class Live:
    """A trial whose job this driver watches."""

    number: int
    job: str
    run_id: str
    reported: int = 0  # the last step reported to Optuna
    best: float | None = None


@dataclass
class SageMakerTrials:
    """The trial executor `experiments.tune.tune(..., executor=...)` calls with its TuneSpec."""

    backend_config: str | Mapping[str, Any]
    parallel: int = 2
    resume: bool = False
    poll_seconds: float | None = None  # default: cloud.sagemaker_backend.poll_seconds()
    max_jobs_seen: int = field(default=0, init=False)  # the most jobs this driver had running at once

    def __post_init__(self) -> None:
        from cloud.sagemaker_config import load_backend_config

        if self.parallel < 1:
            raise ConfigError(f"--parallel must be at least 1, got {self.parallel}")
        self.config = load_backend_config(self.backend_config)  # a bad key fails before any study or run

    def __call__(self, spec: Any) -> None:
        from cloud import sagemaker_backend as smb
        from experiments.tune import open_study

        study = open_study(spec)
        client = MlflowClient()
        clients = smb.Clients.for_config(self.config)
        smb.check_bucket(clients.s3, self.config)
        self.tracking_uri = smb.resolve_tracking_uri(self.config.tracking_uri or _tracking_uri())
        self.entry = entry_point_of(spec.target)
        live = self._reattach(study, client, clients) if self.resume else []
        self.source = ""
        poll = self.poll_seconds if self.poll_seconds is not None else smb.poll_seconds()
        cap = spec.trials if self.resume else spec.trial_cap  # resuming finishes the study: --trials is its total
        while True:
            while len(live) < self.parallel and len(study.trials) < cap:
                live.append(self._launch(spec, study, client, clients))
            self.max_jobs_seen = max(self.max_jobs_seen, len(live))
            if not live:
                return
            time.sleep(poll)
            live = [t for t in live if not self._check(spec, study, client, clients, t)]

    # ------------------------------------------------------------------ starting and reattaching

    def _launch(self, spec: Any, study: Any, client: MlflowClient, clients: Any) -> Live:
        from cloud import sagemaker_backend as smb
        from experiments.runs import create_child
        from experiments.tune import WORKER

        trial = study.ask()
        params = spec.space.suggest(trial)
        tags = {vocab.TUNE_STUDY: spec.study, vocab.TUNE_TRIAL: str(trial.number), vocab.TUNE_STATE: "running",
                vocab.TUNE_WORKER: WORKER}  # fmt: skip
        child = create_child(client, spec.parent_run_id, f"trial-{trial.number}", tags)
        job = smb.job_name_for(f"t{trial.number}-{self.entry}", child)
        trial.set_user_attr(RUN_ATTR, child)
        trial.set_user_attr(JOB_ATTR, job)  # before the job exists: a resumed driver never creates it twice
        trial.set_user_attr(vocab.STUDY_WORKER_ATTR, WORKER)
        experiment = client.get_run(child).info.experiment_id
        job_params = {**{k: str(v) for k, v in {**spec.sets, **spec.space.fixed, **params}.items()}}
        job_params.setdefault("register", "never")  # trials log their model; the best one is registered at the end
        try:
            source = self._source(clients, job)
            request = smb.training_job_request(self.config, job, self.entry, job_params, child, experiment, source)
            request["Environment"] = smb.job_environment(self.tracking_uri, child, experiment)
            arn = smb.create_job(clients.sagemaker, request)
        except Exception as err:
            _end(client, child, "failed", f"{type(err).__name__}: {err}")
            study.tell(trial.number, state=_state("FAIL"))
            raise
        smb.tag_run(child, self.config, job, arn, source)
        print(f"[tune] trial {trial.number}: SageMaker job {job} (run {child}) {_params_text(params)}", flush=True)
        return Live(trial.number, job, child)

    def _source(self, clients: Any, job: str) -> str:
        """The project's git-tracked files, packed and uploaded once per driver (every trial's job reads it)."""
        from pathlib import Path

        from cloud import sagemaker_backend as smb

        if not self.source:
            root = Path.cwd()
            self.source = smb.upload_source(clients.s3, self.config, job, root, smb.tracked_files(root))
        return self.source

    def _reattach(self, study: Any, client: MlflowClient, clients: Any) -> list[Live]:
        """Trials a killed driver left running: watch their jobs again; a trial whose job was never created fails."""
        live = []
        for frozen in study.trials:
            if frozen.state.name != "RUNNING":
                continue
            job, run_id = frozen.user_attrs.get(JOB_ATTR, ""), frozen.user_attrs.get(RUN_ATTR, "")
            if job and _job_exists(clients.sagemaker, job):
                steps = _history(client, run_id, ())
                live.append(Live(frozen.number, job, run_id, reported=max((s for s, _ in steps), default=0)))
                print(f"[tune] trial {frozen.number}: reattached to SageMaker job {job}", flush=True)
                continue
            reason = "the driver stopped before the trial's SageMaker job was created"
            if run_id:
                _end(client, run_id, "failed", reason)
            study.tell(frozen.number, state=_state("FAIL"))
            print(f"[tune] trial {frozen.number} failed - {reason}", flush=True)
        if live:
            # Intermediate values already in the study stand; only later epochs are reported.
            for t in live:
                frozen = study.trials[t.number]
                if frozen.intermediate_values:
                    t.reported = max(frozen.intermediate_values)
                    t.best = frozen.intermediate_values[t.reported]
        return live

    # ------------------------------------------------------------------ watching a job

    def _check(self, spec: Any, study: Any, client: MlflowClient, clients: Any, t: Live) -> bool:
        """Report new epochs, prune, or record the end; True once the trial is over."""
        described = clients.sagemaker.describe_training_job(TrainingJobName=t.job)
        status = described["TrainingJobStatus"]
        trial = _trial(study, t.number)
        for step, value in _history(client, t.run_id, spec.step_keys):
            if step <= t.reported or not math.isfinite(value):
                continue
            if t.best is None or (value > t.best if spec.mode == "max" else value < t.best):
                t.best = value
            trial.report(t.best, step)
            t.reported = step
            if status not in TERMINAL and trial.should_prune():
                return self._prune(spec, study, client, clients, t)
        if status == "Completed":
            return self._complete(spec, study, client, t)
        if status in ("Failed", "Stopped"):
            reason = described.get("FailureReason") or f"the job was {status.lower()} outside the study"
            _end(client, t.run_id, "failed", f"SageMaker job {t.job} {status.lower()}: {reason}")
            study.tell(t.number, state=_state("FAIL"))
            print(f"[tune] trial {t.number} failed - {reason}", flush=True)
            return True
        return False

    def _prune(self, spec: Any, study: Any, client: MlflowClient, clients: Any, t: Live) -> bool:
        from cloud import sagemaker_backend as smb

        smb.stop_job(clients.sagemaker, t.job)
        reason = f"pruned by optuna ({spec.pruner} pruner) at step {t.reported}; SageMaker job {t.job} stopped"
        client.set_tag(t.run_id, vocab.STOPPED_BY, reason)
        _end(client, t.run_id, "pruned")
        study.tell(t.number, state=_state("PRUNED"))
        print(f"[tune] trial {t.number} pruned at step {t.reported}", flush=True)
        return True

    def _record_noise(self, spec: Any, study: Any, client: MlflowClient, t: Live) -> None:
        """The trial's epoch-to-epoch noise from its logged curve, as a local trial records it: the forecast pruner's
        margin (without it, that pruner prunes nothing)."""
        from experiments.tune import NOISE_ATTR, curve_noise

        raw = [value for _, value in _history(client, t.run_id, spec.step_keys) if math.isfinite(value)]
        noise = curve_noise(raw)
        if noise is not None:
            _trial(study, t.number).set_user_attr(NOISE_ATTR, noise)

    def _complete(self, spec: Any, study: Any, client: MlflowClient, t: Live) -> bool:
        value = client.get_run(t.run_id).data.metrics.get(spec.metric)
        if value is None or not math.isfinite(value):
            _end(client, t.run_id, "failed", f"the job completed without logging {spec.metric}")
            study.tell(t.number, state=_state("FAIL"))
            return True
        client.set_tag(t.run_id, vocab.TUNE_VALUE, repr(float(value)))
        _end(client, t.run_id, "complete")
        self._record_noise(spec, study, client, t)
        study.tell(t.number, float(value))
        print(f"[tune] trial {t.number} complete {value:.6g}", flush=True)
        return True


def entry_point_of(target: str) -> str:
    """The MLproject entry point a trial's job runs: the preset's (or family's) own."""
    from projects.common.families import lookup

    family, preset = lookup(target)
    return preset.name if preset is not None else family.entry_points[0]


def _tracking_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def _state(name: str) -> Any:
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _trial(study: Any, number: int) -> Any:
    """A live `optuna.Trial` for trial `number` (also one a previous driver asked for)."""
    import optuna

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def _history(client: MlflowClient, run_id: str, keys: tuple[str, ...]) -> list[tuple[int, float]]:
    """(step, value) of the first of `keys` the run logged, in step order; any key's steps when `keys` is empty."""
    run = client.get_run(run_id)
    names = [k for k in keys if k in run.data.metrics] or ([] if keys else list(run.data.metrics))
    for name in names:
        history = client.get_metric_history(run_id, name)
        if history:
            return sorted({m.step: m.value for m in history}.items())
    return []


def _job_exists(sagemaker: Any, job: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        sagemaker.describe_training_job(TrainingJobName=job)
    except ClientError:
        return False
    return True


def _end(client: MlflowClient, run_id: str, state: str, error: str = "") -> None:
    """Tag the child run with the trial's state and close it: FAILED for a failed trial, else FINISHED."""
    client.set_tag(run_id, vocab.TUNE_STATE, state)
    if error:
        client.set_tag(run_id, vocab.ERROR, error[:4000])
    status = RunStatus.to_string(RunStatus.FAILED if state == "failed" else RunStatus.FINISHED)
    if client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status)


def _params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tune_on_sagemaker(
    target: str,
    space_path: str,
    trials: int,
    *,
    backend_config: str | Mapping[str, Any],
    parallel: int = 2,
    resume: bool = False,
    register: bool = True,
    poll_seconds: float | None = None,
    **options: Any,
) -> Any:
    """`experiments.tune.tune` with every trial a SageMaker job; then the best trial's own model is registered.

    `options` are tune's (study, storage, pruner, sampler, seed, metric, mode, sets, experiment, timeout).
    With `resume`, `trials` is the study's total: the trials the killed driver started count.
    """
    import dataclasses

    from experiments.tune import tune

    if resume and not options.get("study"):
        raise ConfigError("--resume needs --study (the name of the study to continue)")
    executor = SageMakerTrials(backend_config, parallel, resume, poll_seconds)
    result = tune(target, space_path, trials, register_best=False, executor=executor, **options)
    if not register or result.best_trial is None:
        return result
    client = MlflowClient()
    best_run = result.trial_runs[result.best_trial]
    version = register_best(client, result.parent_run_id, best_run)
    note = f"{result.note} Trial {result.best_trial}'s own model (run {best_run}) registered as version {version}."
    client.set_tag(result.parent_run_id, vocab.NOTE_TAG, note)
    return dataclasses.replace(result, registered_version=version, note=note)


# ------------------------------------------------------------------ the best trial's own model


def register_best(client: MlflowClient, parent_run_id: str, run_id: str, name: str | None = None) -> int:
    """Register the ONNX model the best trial's run logged (no training): tags and cards as a trained run's version.

    Returns the version. The parent run gets `kiln.tune.registered_version` and `kiln.tune.best_run`.
    """
    import mlflow
    import onnx

    from core.contract import parse_contract
    from projects.common.modelcard import write_cards
    from projects.common.onnx_export import version_tags

    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    if not models:
        raise KilnError(f"the best trial's run {run_id} logged no model to register")
    model = max(models, key=lambda m: m.creation_timestamp)
    local = mlflow.artifacts.download_artifacts(f"{model.artifact_location}/model.onnx")
    proto = onnx.load(local, load_external_data=False)
    contract = parse_contract({p.key: p.value for p in proto.metadata_props})
    name = name or run.data.params.get("model_name") or run.data.params.get("variant") or ""
    if not name:
        raise UserError(f"run {run_id} has no model_name param; cannot name the registered model")
    version = mlflow.register_model(f"models:/{model.model_id}", name, await_registration_for=60)
    for key, value in version_tags(contract).items():
        client.set_model_version_tag(name, version.version, key, value)
    write_cards(client, name, int(version.version), contract, run_id)
    client.set_tag(parent_run_id, vocab.TUNE_REGISTERED_VERSION, str(int(version.version)))
    print(f"[tune] registered {name} v{version.version} from trial run {run_id} (no re-training)", file=sys.stderr)
    return int(version.version)
