"""skinmodel's checkpoint: the booster as it grows and at the end, in the run, and resuming or finishing from it.

    python -m projects.skinmodel.train --resume <run_id>   # continue a killed run, or export a finished one

The booster and its state (`model.BoostState`: every round's eval metrics, and whether training ended) are one
UBJSON file, published as `checkpoints/booster-<stamp>.ubj` with the atomic pointer scheme every family shares
(`projects.common.checkpoint`): while boosting at most every KILN_CHECKPOINT_EVERY_SECONDS, and always at the end
(then holding the kept trees only, up to early stopping's best round).

`--resume RUN` reads the newest complete checkpoint of RUN before the run reopens (a run without one is a
ResumeError naming it). A finished booster is exported and registered as the run would have been, without training:
kiln tune and kiln cv register a trial or fold this way, from its own run. An unfinished one (a killed run)
continues with XGBoost's training continuation: the rounds left of `n_estimators` are added to the saved trees, and
early stopping goes on from the saved val history (`model.ResumedEarlyStopping`), so it keeps the round one
uninterrupted run would keep. The continued rounds draw fresh row/column samples (XGBoost reseeds), so with
`subsample` or `colsample_bytree` below 1 the result is a sound continuation, not a bit-for-bit replay.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import mlflow
import numpy as np
import xgboost as xgb

from core.settings import read_env
from projects.common import tracking
from projects.common.callbacks import EpochListener, StopRequest
from projects.common.checkpoint import CheckpointSettings, ResumeError, fetch_checkpoint_file, log_checkpoint_file
from projects.skinmodel import model as xgbcore

NAME = "booster"  # checkpoints/booster-<stamp>.ubj
Resumed = tuple[xgb.Booster, xgbcore.BoostState]


def fetch(run_id: str, n_features: int) -> Resumed:
    """The newest complete booster checkpoint of `run_id`; ResumeError naming the run when it has none (not a
    skinmodel run, or one trained before skinmodel kept checkpoints), or when the booster was trained on a table
    with another number of features."""
    with tempfile.TemporaryDirectory(prefix="kiln-resume-") as tmp:
        path = fetch_checkpoint_file(run_id, NAME, Path(tmp))
        try:
            booster, state = xgbcore.load_checkpoint(path)
        except (ValueError, KeyError, xgb.core.XGBoostError) as exc:
            raise ResumeError(f"cannot resume run {run_id!r}: checkpoint {path.name} is unreadable ({exc})") from None
    if booster.num_features() != n_features:
        raise ResumeError(
            f"cannot resume run {run_id!r}: its booster was trained on {booster.num_features()} features and this "
            f"data has {n_features}; resume with the run's own --data, --target and --drop-columns"
        )
    return booster, state


def save(booster: xgb.Booster, state: xgbcore.BoostState) -> None:
    """Publish the booster and its state to the active run as its newest checkpoint."""
    with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as tmp:
        log_checkpoint_file(xgbcore.save_checkpoint(booster, state, Path(tmp) / "booster.ubj"), NAME, "ubj")


def fit(
    task: str,
    params: xgbcore.BoostParams,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    log: Callable[[Mapping[str, float], int], None],
    listeners: tuple[EpochListener, ...],
    resumed: Resumed | None,
) -> tuple[xgb.XGBModel, StopRequest | None, xgbcore.History]:
    """Train (or continue `resumed`) with checkpoints, or, when `resumed` has nothing left to train, load it.
    Returns the model, a listener's stop request and every round's eval metrics."""
    watched = xgbcore.OBJECTIVES[task][1][-1]
    prior = resumed[1] if resumed is not None else None
    if resumed is not None and prior is not None:
        rounds = xgbcore.rounds_in(prior.history)
        if xgbcore.finished(prior, params, watched):
            print(f"The run finished training ({rounds} rounds): exporting its booster, no round trained", flush=True)
            return xgbcore.finished_estimator(task, params, *resumed), None, prior.history
        _log_missing_rounds(prior.history)
        print(f"Resuming after round {rounds} of {params.n_estimators}", flush=True)
    every = read_env(CheckpointSettings).checkpoint_every_seconds
    checkpoint = xgbcore.Checkpointing(save, every, prior.history if prior else {})
    model, stop = xgbcore.fit_listened(task, params, *data, log, listeners, checkpoint=checkpoint, resume=resumed)
    history = xgbcore.model_history(model, prior)
    save(model.get_booster(), xgbcore.BoostState(history, done=True))
    return model, stop, history


def _log_missing_rounds(history: xgbcore.History) -> None:
    """Rounds in the checkpoint whose metrics a killed session never logged (async logging dies with it)."""
    run = mlflow.active_run()
    if run is None:
        return
    key = next((f"val_{name}" for name in history.get("validation_1", {})), None)
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, key)} if key else set()
    for step in range(xgbcore.rounds_in(history)):
        if step not in logged:
            row = {
                f"{xgbcore.EVAL_NAMES.get(data, data)}_{name}": values[step]
                for data, by_metric in history.items()
                for name, values in by_metric.items()
                if step < len(values)
            }
            tracking.log_epoch(row, step)
