"""`kiln tune`: hyperparameter search over any registered family with Optuna, tracked as MLflow parent/child runs.

    kiln tune skinmodel --space space.yaml --trials 20 --pruner forecast
    kiln tune edgnet --space edg.yaml --trials 40 --study edg-lr --storage sqlite:///optuna.db --workers 2
    mlflow run . -e tune --env-manager local -P target=skinmodel -P space=space.yaml -P trials=20

One parent run per study, one nested child run per trial (`mlflow.parentRunId`), each a full tracked training
with its params and per-epoch metrics, tagged `kiln.tune.trial` and `kiln.tune.state` (complete, pruned, failed).
Each epoch's value of the objective (its running best) goes to Optuna; the pruner may stop a trial, which ends
cleanly (FINISHED, `kiln.stopped_by`). A failing trial is recorded (FAILED, `kiln.error`) and the study goes on.
Trials never register a model, draw no figures and decode their data once per study (projects/common/datacache.py);
with `--register-best` the best trial is exported and registered from its own run and best weights (or booster),
without training it again, so an N-trial study is N trainings and adds one version whose source run is the trial.
The parent gets the best params and value, `trials.csv`, the optimisation history, intermediate values and parameter
importance plots, and a note. Studies live in an Optuna RDB storage
(a sqlite file by default, or PostgreSQL) that several processes or machines share; the same `--study` resumes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
import mlflow
from mlflow import MlflowClient

from core import vocab
from core.errors import ConfigError, KilnError, UserError, cli_errors
from core.redact import mask_uri
from experiments.options import flag_value, optional_number, parse_overrides
from experiments.runs import (
    NOTE_TAG,
    close_parent,
    create_child,
    experiment_id,
    finish_in_run,
    mark_failed,
    open_parent,
    stamp,
    train_in_run,
)
from experiments.space import Space, load_space

PRUNERS = ("forecast", "median", "hyperband", "none")
# Optuna trial user attribute: the epoch-to-epoch noise of a complete trial's raw objective (the `forecast` pruner's
# margin). Kept here, not in core/vocab.py, only because that file had another session's uncommitted edits (move it).
NOISE_ATTR = vocab.CURVE_NOISE
NOISE_SIGMAS = 3.0  # the forecast pruner's margin, in noise standard deviations
SAMPLERS = ("tpe", "random")
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
READY_SECONDS = 120.0  # the longest the first process waits for spawned workers to open the study
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which `kiln tune` process ran a trial (several share a study)


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker process needs (picklable: workers are spawned)."""

    target: str
    space: Space
    trials: int
    metric: str
    mode: str
    step_keys: tuple[str, ...]  # per-step metric names that stand for the objective, first found wins
    pruner: str
    sampler: str
    seed: int | None
    study: str
    storage: str
    timeout: float | None
    sets: dict[str, str]
    parent_run_id: str = ""
    tracking_uri: str = ""
    trial_cap: int = 0  # stop once the study holds this many trials (earlier sessions' trials included)
    budget: int = 0  # epochs (or boosting rounds) of one trial, for the pruner's warm-up; 0 = unknown


@dataclass(frozen=True)
class TuneResult:
    study: str
    parent_run_id: str
    metric: str
    mode: str
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    counts: dict[str, int]  # state -> number of trials
    registered_version: int | None = None
    registered_run_id: str | None = None  # the run the version was exported from: the best trial's own
    note: str = ""
    trial_runs: dict[int, str] = field(default_factory=dict)  # trial number -> child run id


def default_storage() -> str:
    """A sqlite file under $KILN_HOME (default ./.kiln), so every study can be resumed by name."""
    home = Path(os.environ.get("KILN_HOME") or Path.cwd() / ".kiln")
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'optuna.db'}"


def curve_noise(values: list[float]) -> float | None:
    """The epoch-to-epoch noise (a standard deviation) of a trial's raw per-epoch objective, from its second half:
    second differences remove a locally linear trend and have sd sqrt(6) sigma under independent noise; their median
    absolute value (/ 0.6745) resists a jump such as a learning-rate drop. None under 3 values."""
    tail = values[len(values) // 2 :]
    diffs = sorted(abs(tail[i + 2] - 2 * tail[i + 1] + tail[i]) for i in range(len(tail) - 2))
    if not diffs:
        return None
    return statistics.median(diffs) / 0.6745 / math.sqrt(6)


class ForecastPruner:
    """Prunes a trial only when even an optimistic forecast of its end cannot reach the best complete trial.

    After half the budget (and `startup` complete trials), the trial's running best is extended to the last step at
    the slope of its last fifth of the budget (at least 2 steps): on a saturating curve that slope only falls, so
    the straight line is an upper bound. The trial is pruned when that forecast, plus NOISE_SIGMAS times the median
    noise of the complete trials (`curve_noise`, their NOISE_ATTR), stays below the best complete trial's value:
    the incumbent's running best is itself inflated by its noisiest epoch. A study whose complete trials carry no
    noise estimate prunes nothing (both backends record it when a trial completes). Direction-aware."""

    def __init__(self, budget: int, startup: int) -> None:
        self.budget, self.startup = budget, startup  # budget 0: the longest complete trial's

    def prune(self, study: Any, trial: Any) -> bool:
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        step = trial.last_step
        if len(done) < self.startup or step is None:
            return False
        budget = self.budget or max(int(t.last_step or 0) for t in done)
        window = max(2, budget // 5)
        if step < max(window, budget // 2):
            return False
        noises = [float(t.user_attrs[NOISE_ATTR]) for t in done if t.user_attrs.get(NOISE_ATTR) is not None]
        if not noises:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        seen = {int(s): sign * float(v) for s, v in trial.intermediate_values.items() if math.isfinite(v)}
        past = [v for s, v in seen.items() if s <= step - window]
        if not seen or not past:
            return False
        now = max(seen.values())
        forecast = now + (now - max(past)) / window * max(0, budget - step)
        bar = max(sign * float(t.value) for t in done)
        return bool(forecast + NOISE_SIGMAS * statistics.median(noises) < bar)


def make_pruner(name: str, trials: int, budget: int = 0) -> Any:
    """Optuna's pruner; `budget` is the epochs (boosting rounds) of a trial, 0 when unknown."""
    import optuna

    startup = min(5, max(2, trials // 5))
    if name == "forecast":
        # the default: never pruned the best config in docs/decisions.md's 300-search bench (both seeds)
        return _as_optuna_pruner(ForecastPruner(budget, startup))
    if name == "median":
        # A few complete trials before judging, and nothing judged in a trial's first half: under kiln's warmup-cosine
        # schedule a fast learning rate often starts lower and overtakes once the rate decays (docs/experiments.md:
        # a warm-up of 1 or of a third of the epochs pruned the best config of a 20-trial edgnet search).
        warmup = max(1, budget // 2)
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r} is not one of {list(PRUNERS)}")


def _as_optuna_pruner(rule: ForecastPruner) -> Any:
    import optuna

    class _Pruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            return rule.prune(study, trial)

    return _Pruner()


def make_sampler(name: str, seed: int | None) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r} is not one of {list(SAMPLERS)}")


def open_study(spec: TuneSpec) -> Any:
    """Create the study or load it (resume); a study made for another target or direction is refused."""
    import optuna

    direction: Literal["maximize", "minimize"] = "maximize" if spec.mode == "max" else "minimize"
    try:
        study = optuna.create_study(
            study_name=spec.study, storage=spec.storage, direction=direction, load_if_exists=True,
            sampler=make_sampler(spec.sampler, spec.seed), pruner=make_pruner(spec.pruner, spec.trials, spec.budget),
        )  # fmt: skip
    except Exception as err:  # storage URL that cannot be opened: SQLAlchemy's or Optuna's own errors
        raise UserError(f"cannot open Optuna storage {mask_uri(spec.storage)!r}: {err}") from None
    attrs = study.user_attrs
    if attrs.get(vocab.STUDY_TARGET_ATTR, spec.target) != spec.target or study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {spec.study!r} in {mask_uri(spec.storage)} was made for {attrs.get(vocab.STUDY_TARGET_ATTR)!r} "
            f"({study.direction.name.lower()}); choose another --study name"
        )
    return study


class TrialReporter:
    """The epoch listener of one trial: reports the objective's running best and asks the pruner."""

    def __init__(self, trial: Any, keys: tuple[str, ...], mode: str, pruner: str) -> None:
        self.trial, self.keys, self.mode, self.pruner = trial, keys, mode, pruner
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.reported = 0
        self.raw: list[float] = []  # the objective's per-epoch values, for `curve_noise`

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        from projects.common.callbacks import StopTraining

        key = next((k for k in self.keys if k in metrics), None)
        if key is None or not math.isfinite(metrics[key]):
            return
        value = metrics[key]
        self.raw.append(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
        self.trial.report(self.best, step)
        self.reported += 1
        if self.trial.should_prune():
            self.pruned_at = step
            raise StopTraining(f"pruned by optuna ({self.pruner} pruner) at step {step}", export=False)


def step_keys(metric: str, selected_by: Any, mode: str) -> tuple[str, ...]:
    """Per-step names of the objective: itself, its per-step twin (best_val_iou -> val_iou, best/x -> metrics/x), and
    the family's selection metric when it points the same way."""
    keys = [metric]
    if metric.startswith("best_"):
        keys.append(metric.removeprefix("best_"))
    if metric.startswith("best/"):
        keys.append("metrics/" + metric.removeprefix("best/"))
    if selected_by is not None and selected_by.mode == mode and selected_by.metric not in keys:
        keys.append(selected_by.metric)
    return tuple(keys)


def objective(spec: TuneSpec, client: MlflowClient) -> Any:
    import optuna

    def run_trial(trial: optuna.Trial) -> float:
        params = spec.space.suggest(trial)
        tags = {vocab.TUNE_STUDY: spec.study, vocab.TUNE_TRIAL: str(trial.number), vocab.TUNE_STATE: "running",
                vocab.TUNE_WORKER: WORKER}  # fmt: skip
        child = create_child(client, spec.parent_run_id, f"trial-{trial.number}", tags)
        trial.set_user_attr("mlflow_run_id", child)
        trial.set_user_attr(vocab.STUDY_WORKER_ATTR, WORKER)
        reporter = TrialReporter(trial, spec.step_keys, spec.mode, spec.pruner)
        try:
            final = train_in_run(client, child, spec.target, {**spec.sets, **spec.space.fixed, **params}, [reporter])
        except Exception as err:
            mark_failed(client, child, err)
            client.set_tag(child, vocab.TUNE_STATE, "failed")
            raise
        if reporter.pruned_at is not None:
            client.set_tag(child, vocab.TUNE_STATE, "pruned")
            raise optuna.TrialPruned(f"trial {trial.number} pruned at step {reporter.pruned_at}")
        value = final.get(spec.metric)
        if value is None or not math.isfinite(value):
            client.set_tag(child, vocab.TUNE_STATE, "failed")
            error = UserError(
                f"trial {trial.number}: training returned {spec.metric}={value}; it returned {sorted(final)}"
            )
            client.set_tag(child, vocab.ERROR, error.message)
            raise error
        client.set_tag(child, vocab.TUNE_STATE, "complete")
        trial.set_user_attr(NOISE_ATTR, curve_noise(reporter.raw))  # the forecast pruner's margin
        client.set_tag(child, vocab.TUNE_VALUE, repr(float(value)))
        return float(value)

    return run_trial


def _print_trial(study: Any, trial: Any) -> None:
    state = STATES.get(trial.state.name, trial.state.name.lower())
    value = f" {trial.value:.6g}" if trial.value is not None else ""
    reason = trial.system_attrs.get("fail_reason", "")
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    print(
        f"[tune] trial {trial.number} {state}{value} {params}{(' - ' + reason.splitlines()[-1]) if reason else ''}",
        flush=True,
    )


def run_worker(spec: TuneSpec, ready: Any = None) -> None:
    """Run trials until the study holds `trial_cap` trials (or the timeout passes); used by every worker.

    A spawned worker releases `ready` once its study is open, so the first process can wait for it.
    """
    import optuna

    if spec.tracking_uri:
        mlflow.set_tracking_uri(spec.tracking_uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec)
    if ready is not None:
        ready.release()
    remaining = spec.trial_cap - len(study.trials)
    if remaining <= 0:
        return
    from projects.common.datacache import sharing

    cap = optuna.study.MaxTrialsCallback(spec.trial_cap, states=None)
    # The trials share the decoded data (sharing). No gc_after_trial: a full collection of a heap that holds torch,
    # MLflow and matplotlib cost 0.3-0.5 s of CPU a trial, and a trial's tensors are freed by reference counting.
    with sharing():
        study.optimize(
            objective(spec, MlflowClient()), n_trials=remaining, timeout=spec.timeout, catch=(Exception,),
            callbacks=[cap, _print_trial],
        )  # fmt: skip


def _spawned_worker(spec: TuneSpec, threads: int, ready: Any = None) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    run_worker(spec, ready)


def _wait_ready(ready: Any, procs: list[Any], limit: float = READY_SECONDS) -> None:
    """Wait until every spawned worker has its study open (or has died): a spawned process spends seconds on
    imports, and without the wait this one could run the whole study alone while the others start."""
    deadline, started = time.monotonic() + limit, 0
    while started < len(procs) and time.monotonic() < deadline:
        if ready.acquire(timeout=0.5):
            started += 1
        elif started + sum(p.exitcode is not None for p in procs) >= len(procs):
            return


def run_workers(spec: TuneSpec, workers: int) -> None:
    """This process and `workers - 1` spawned ones share the study; CPU threads are split between them."""
    if workers <= 1:
        run_worker(spec)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Semaphore(0)
    procs = [ctx.Process(target=_spawned_worker, args=(spec, threads, ready)) for _ in range(workers - 1)]
    for proc in procs:
        proc.start()
    try:
        _wait_ready(ready, procs)
        _spawned_worker(spec, threads)
    finally:
        for proc in procs:
            proc.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        print(f"[tune] warning: {len(failed)} worker process(es) exited with codes {failed}", flush=True)


def tune(
    target: str,
    space_path: str,
    trials: int,
    *,
    metric: str | None = None,
    mode: str | None = None,
    pruner: str = "forecast",
    sampler: str = "tpe",
    seed: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    timeout: float | None = None,
    sets: Mapping[str, str] | None = None,
    experiment: str | None = None,
    register_best: bool = True,
    executor: Callable[[TuneSpec], None] | None = None,
) -> TuneResult:
    """Run (or resume) a study; returns what it found. Bad flags or space entries fail before any trial.

    `executor(spec)` runs the study's trials instead of this machine's `workers` processes: the trial-executor seam
    (`experiments.tune_sagemaker.SageMakerTrials` runs each trial as a SageMaker job).
    """
    import optuna

    from projects.common.families import resolve_family_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial gets one `[tune]` line instead
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if mode is not None and mode not in ("max", "min"):
        raise ConfigError(f"--mode must be max or min, got {mode!r}")
    make_pruner(pruner, trials), make_sampler(sampler, seed)  # bad names fail here
    sets = dict(sets or {})
    family, _ = resolve_family_config(target, sets)
    space = load_space(space_path, target, sets)
    cfg = resolve_family_config(target, {**sets, **space.fixed})[1]
    budget = int(getattr(cfg, "epochs", 0) or getattr(cfg, "n_estimators", 0) or 0)
    metric = metric or family.ranking.metric
    mode = mode or (family.ranking.mode if metric == family.ranking.metric else _infer_mode(metric))
    spec = TuneSpec(
        target, space, trials, metric, mode, step_keys(metric, family.selected_by, mode), pruner, sampler, seed,
        study or f"{target}-{stamp()}", storage or default_storage(), timeout, sets,
        tracking_uri=mlflow.get_tracking_uri(), budget=budget,
    )  # fmt: skip
    optuna_study = open_study(spec)
    client = MlflowClient()
    parent = _open_parent(client, spec, optuna_study, experiment)
    spec = _with(spec, parent_run_id=parent, trial_cap=len(optuna_study.trials) + trials)
    status = "FAILED"
    try:
        if executor is not None:
            executor(spec)
        else:
            run_workers(spec, workers)
        result = summarize(client, spec, register_best)
        status = "FINISHED"
        return result
    finally:
        close_parent(client, parent, status)


def _with(spec: TuneSpec, **changes: Any) -> TuneSpec:
    return TuneSpec(**{**spec.__dict__, **changes})


def _infer_mode(metric: str) -> str:
    from registry.gates import infer_mode

    return infer_mode(metric)


def _open_parent(client: MlflowClient, spec: TuneSpec, study: Any, experiment: str | None) -> str:
    reuse = study.user_attrs.get(vocab.STUDY_PARENT_ATTR)
    if reuse:
        try:
            client.get_run(reuse)
        except Exception:
            reuse = None  # the parent was deleted from the tracking store: start a new one
    tags = {vocab.TUNE_STUDY: spec.study, vocab.TUNE_STORAGE: mask_uri(spec.storage), vocab.METRIC: spec.metric,
            vocab.MODE: spec.mode, vocab.TUNE_TARGET: spec.target}  # fmt: skip
    parent = open_parent(client, experiment_id(client, experiment), f"tune-{spec.study}", tags, reuse)
    study.set_user_attr(vocab.STUDY_PARENT_ATTR, parent)
    study.set_user_attr(vocab.STUDY_TARGET_ATTR, spec.target)
    study.set_user_attr(vocab.METRIC, spec.metric)
    _log_new_params(client, parent, {
        "target": spec.target, "space": spec.space.source, "metric": spec.metric, "mode": spec.mode,
        "pruner": spec.pruner, "sampler": spec.sampler, "seed": spec.seed, "study": spec.study,
        **{f"set.{k}": v for k, v in spec.sets.items()}, **{f"fixed.{k}": v for k, v in spec.space.fixed.items()},
    })  # fmt: skip
    client.log_text(parent, "\n".join(spec.space.describe()) + "\n", "space.txt")
    return parent


def _log_new_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    existing = client.get_run(run_id).data.params
    for key, value in params.items():
        if key not in existing and value is not None:
            client.log_param(run_id, key, str(value)[:6000])


# ------------------------------------------------------------------ the study's summary on the parent run


def summarize(client: MlflowClient, spec: TuneSpec, register_best: bool) -> TuneResult:
    import optuna

    study = optuna.load_study(study_name=spec.study, storage=spec.storage)
    trials = study.trials
    counts: dict[str, int] = {}
    for t in trials:
        state = STATES.get(t.state.name, t.state.name.lower())
        counts[state] = counts.get(state, 0) + 1
    runs = {t.number: str(t.user_attrs.get("mlflow_run_id", "")) for t in trials}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    parent = spec.parent_run_id
    _log_artifacts(client, parent, study, complete)
    if not complete:
        note = f"No trial of study {spec.study} completed ({_counts_text(counts)}); nothing to register."
        client.set_tag(parent, NOTE_TAG, note)
        return TuneResult(
            spec.study, parent, spec.metric, spec.mode, None, None, {}, counts, note=note, trial_runs=runs
        )
    best = study.best_trial
    _log_best(client, spec, best, counts)
    result = TuneResult(spec.study, parent, spec.metric, spec.mode, best.number, float(best.value or 0.0),
                        dict(best.params), counts, trial_runs=runs)  # fmt: skip
    if register_best:
        result = _register_best(client, spec, best, result)
    note = _note(spec, complete, best, counts, result)
    client.set_tag(parent, NOTE_TAG, note)
    return TuneResult(**{**result.__dict__, "note": note})


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _log_best(client: MlflowClient, spec: TuneSpec, best: Any, counts: Mapping[str, int]) -> None:
    parent = spec.parent_run_id
    metrics = {spec.metric: float(best.value), "tune/best_trial": float(best.number),
               **{f"tune/n_{state}": float(n) for state, n in counts.items()}}  # fmt: skip
    for key, value in metrics.items():
        client.log_metric(parent, key, value)
    client.set_tag(parent, vocab.TUNE_BEST_TRIAL, str(best.number))
    client.set_tag(parent, vocab.TUNE_BEST_RUN, str(best.user_attrs.get("mlflow_run_id", "")))
    for key, value in best.params.items():
        client.set_tag(parent, vocab.TUNE_BEST_PREFIX + key, repr(value) if isinstance(value, float) else str(value))
    client.log_dict(parent, {"trial": best.number, "value": best.value, "metric": spec.metric, "params": best.params,
                             "fixed": spec.space.fixed, "sets": spec.sets}, "best_params.json")  # fmt: skip


def _log_artifacts(client: MlflowClient, parent: str, study: Any, complete: list[Any]) -> None:
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    client.log_text(parent, frame.to_csv(index=False), "trials.csv")
    for name, figure in _plots(study, complete).items():
        client.log_figure(parent, figure, f"plots/{name}.png")


def _plots(study: Any, complete: list[Any]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from matplotlib.axes import Axes

    wanted = {
        "optimization_history": ovm.plot_optimization_history,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    if len(complete) >= 2 and len({json.dumps(t.params, sort_keys=True, default=str) for t in complete}) >= 2:
        wanted["param_importances"] = ovm.plot_param_importances
    figures: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib backend is marked experimental
        for name, plot in wanted.items():
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances of a parameter that never varied
                print(f"[tune] skipped plot {name}: {err}", flush=True)
                continue
            panel = axes if isinstance(axes, Axes) else axes.flat[0]  # a plot of several panels is an array of Axes
            figure = panel.get_figure(root=True)
            if figure is None:  # never for an Axes optuna drew; the type allows it
                continue
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figures[name] = figure
            plt.close(figure)
    return figures


def _register_best(client: MlflowClient, spec: TuneSpec, best: Any, result: TuneResult) -> TuneResult:
    """Export and register the best trial from its own run (its best weights, no training)."""
    run = str(best.user_attrs.get("mlflow_run_id", ""))
    print(f"[tune] registering trial {best.number} from its own run {run}", flush=True)
    try:
        final = finish_in_run(client, run, spec.target, {**spec.sets, **spec.space.fixed, **best.params})
    except Exception as err:
        raise KilnError(f"registering the best trial {best.number} from its run {run} failed: {err}") from err
    version = final.get("registered_version")
    if version is None:
        return result
    client.set_tag(spec.parent_run_id, vocab.TUNE_REGISTERED_VERSION, str(int(version)))
    client.set_tag(spec.parent_run_id, vocab.TUNE_REGISTERED_RUN, run)
    return TuneResult(**{**result.__dict__, "registered_version": int(version), "registered_run_id": run})


def _note(spec: TuneSpec, complete: list[Any], best: Any, counts: Mapping[str, int], result: TuneResult) -> str:
    values = sorted((float(t.value) for t in complete), reverse=spec.mode == "max")
    runner = f"; runner-up {values[1]:.6g} ({float(best.value) - values[1]:+.4g})" if len(values) > 1 else ""
    median = f"; median of {len(values)} complete trials {statistics.median(values):.6g}"
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    text = (f"Study {spec.study}: trial {best.number} won with {spec.metric}={float(best.value):.6g}{runner}{median} "
            f"({_counts_text(counts)}). Best params: {params}.")  # fmt: skip
    if result.registered_version is not None:
        text += f" Registered version {result.registered_version} from trial {best.number}'s own run."
    return text


# ---------------------------------------------------------------- the MLproject entry point `tune`
# MLproject parameters cannot be absent, so every optional value arrives as a string and "" means "not given".


@click.command("tune")
@click.option("--target", required=True, help="Family or preset to tune.")
@click.option("--space", "space_path", required=True, help="YAML search space.")
@click.option("--trials", default="20", help="Trials to run.")
@click.option("--metric", default="", help="Objective ('' = the family's ranking metric).")
@click.option("--mode", default="", help="max or min ('' = the family's).")
@click.option("--pruner", default="forecast", help="forecast (default), median, hyperband or none.")
@click.option("--sampler", default="tpe", help="tpe or random.")
@click.option("--seed", default="", help="Sampler seed ('' = random).")
@click.option("--timeout", default="", help="Seconds after which no new trial starts ('' = none).")
@click.option("--study", default="", help="Study name; the same name resumes ('' = TARGET-<time>).")
@click.option("--storage", default="", help="Optuna RDB URL ('' = sqlite file under $KILN_HOME).")
@click.option("--workers", default="1", help="Processes sharing the study.")
@click.option("--sets", "joined", default="", help="Space-separated key=value config overrides for every trial.")
@click.option(
    "--register-best", "register_best", default="true", help="true: register the best trial from its own run."
)
@cli_errors
def main(target: str, space_path: str, trials: str, metric: str, mode: str, pruner: str, sampler: str,
         seed: str, timeout: str, study: str, storage: str, workers: str, joined: str,
         register_best: str) -> None:  # fmt: skip
    """`mlflow run . -e tune`: the same search as `kiln tune`, in the run `mlflow run` created (the parent)."""
    if mode.strip() and mode not in ("max", "min"):
        raise click.BadParameter(f"{mode!r} is not max or min", param_hint="--mode")
    result = tune(
        target, space_path, optional_number(trials, "--trials", int), metric=metric or None, mode=mode or None,
        pruner=pruner, sampler=sampler, seed=optional_number(seed, "--seed", int), study=study or None,
        storage=storage or None, workers=optional_number(workers, "--workers", int) or 1,
        timeout=optional_number(timeout, "--timeout"), sets=parse_overrides((), joined),
        register_best=flag_value(register_best, "--register-best"),
    )  # fmt: skip
    click.echo(result.note)


if __name__ == "__main__":
    main()
