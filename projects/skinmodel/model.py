"""skinmodel's XGBoost core: build the estimator, stream per-round metrics, convert to ONNX and prove it.

    python -m projects.skinmodel.train --n-estimators 200   # the entry point that uses this module

XGBoost is trained on a plain float32 matrix, so the booster's features are `f0..f{n-1}`, the names
onnxmltools' converter requires; the real column names travel separately (importance JSON, ONNX metadata).
Per-round metrics come from a `TrainingCallback` that logs `train_<metric>` and `val_<metric>` with
`step=round` (0-based, as XGBoost counts `best_iteration`) and reports them to the epoch listeners
(`projects.common.callbacks`), which may stop boosting after that round. Early stopping watches the val loss and
keeps the best round's trees (`save_best`), so `predict_proba` and the ONNX model agree on which trees count.

A booster can be checkpointed with its state (`BoostState`: every round's eval metrics so far, and whether training
ended) in one file, XGBoost's UBJSON with the state as a booster attribute (`save_checkpoint`, `load_checkpoint`).
`fit_listened(..., resume=...)` continues boosting from such a booster with XGBoost's own training continuation
(`xgb_model`): the trees already grown stay, the rounds left are added, and early stopping carries on from the
saved val history (`ResumedEarlyStopping`), so the best round and its trees are the ones a whole run would keep.
The continued rounds draw their row and column samples afresh (XGBoost reseeds when training continues), so with
`subsample` or `colsample_bytree` below 1 a resumed run is a sound continuation, not a bit-for-bit replay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from projects.common import callbacks

# task -> XGBoost objective, eval metrics (the last is the one early stopping watches)
OBJECTIVES: dict[str, tuple[str, list[str]]] = {
    "binary": ("binary:logistic", ["auc", "logloss"]),
    "multiclass": ("multi:softprob", ["merror", "mlogloss"]),
    "regression": ("reg:squarederror", ["rmse"]),
}
EVAL_NAMES = {"validation_0": "train", "validation_1": "val"}  # XGBoost's names for the two eval sets
ONNX_OPSET = 15  # the highest opset onnxmltools' XGBoost converter supports
STATE_ATTR = "kiln_checkpoint"  # the booster attribute a checkpoint keeps its BoostState in (JSON)
History = dict[str, dict[str, list[float]]]  # XGBoost's evals_result(): eval set -> metric -> value per round


class OnnxConversionError(RuntimeError):
    """onnxmltools could not convert the booster, or the ONNX output disagrees with XGBoost's."""


@dataclass
class BoostParams:
    n_estimators: int = 500  # maximum boosting rounds
    max_depth: int = 4  # depth of each tree
    learning_rate: float = 0.05  # shrinkage per round
    early_stopping_rounds: int = 30  # rounds without val-loss improvement before stopping; 0 = never
    subsample: float = 0.9  # row subsampling per tree
    colsample_bytree: float = 0.8  # column subsampling per tree
    seed: int = 0  # XGBoost random_state
    device: str = "cpu"  # "cpu" or "cuda"


@dataclass(frozen=True)
class BoostState:
    """What a checkpoint keeps besides the trees."""

    history: History  # every round's eval metrics so far, XGBoost's names (validation_0 = train, _1 = val)
    done: bool  # training ended (all rounds, early stopping, or a listener's stop): a resume only exports


class RoundLogger(xgb.callback.TrainingCallback):
    """Hands each round's train/val metrics to `log(metrics, step)` as `train_<m>` / `val_<m>`, then to the
    epoch listeners; a listener's stop request ends boosting after this round (`stop_request`). Steps count
    from the booster's first round, also when training continues a saved booster."""

    def __init__(
        self, log: Callable[[Mapping[str, float], int], None], listeners: Iterable[callbacks.EpochListener] = ()
    ) -> None:
        super().__init__()
        self.log = log
        self.listeners = list(listeners)
        self.stop_request: callbacks.StopRequest | None = None
        self.start = 0  # rounds the booster held before this training (a resumed run's)

    def before_training(self, model: Any) -> Any:
        self.start = int(model.num_boosted_rounds())
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Mapping[str, Any]]) -> bool:
        metrics = {
            f"{EVAL_NAMES.get(data, data)}_{name}": float(values[-1])
            for data, by_metric in evals_log.items()
            for name, values in by_metric.items()
        }
        step = self.start + epoch
        self.log(metrics, step)
        self.stop_request = callbacks.report(step, metrics, self.listeners)
        return self.stop_request is not None  # True ends boosting; EarlyStopping still keeps the best round


class Checkpointing(xgb.callback.TrainingCallback):
    """Hands the booster and its state so far to `save` after a round, at most every `every_seconds` (0: every
    round), so that a killed run resumes from there; the end of training is saved by whoever called fit."""

    def __init__(self, save: Callable[[Any, BoostState], None], every_seconds: float, prior: History) -> None:
        super().__init__()
        self.save, self.every, self.prior = save, every_seconds, prior
        self.saved_at = time.monotonic()

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Mapping[str, Any]]) -> bool:
        if time.monotonic() - self.saved_at >= self.every:
            self.save(model, BoostState(merge_history(self.prior, evals_log), done=False))
            self.saved_at = time.monotonic()
        return False


def best_so_far(scores: list[float]) -> tuple[int, int]:
    """(best round, rounds since it) of a minimised val history, as XGBoost's EarlyStopping counts: only a strictly
    lower score is an improvement."""
    best = 0
    for i, score in enumerate(scores):
        if score < scores[best]:
            best = i
    return best, len(scores) - 1 - best


class ResumedEarlyStopping(xgb.callback.EarlyStopping):
    """XGBoost's EarlyStopping that starts from the val history of the rounds a saved booster already ran, so the
    best round, the rounds without improvement and the trees kept are those one uninterrupted run would have."""

    def __init__(self, scores: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores = list(scores)

    def before_training(self, model: Any) -> Any:
        model = super().before_training(model)
        if self.scores and self.data and self.metric_name:
            best, since = best_so_far(self.scores)
            self.stopping_history = {self.data: {self.metric_name: list(self.scores)}}
            self.best_scores = {self.data: {self.metric_name: [self.scores[best]]}}
            self.current_rounds = since
            model.set_attr(best_score=str(self.scores[best]), best_iteration=str(best))
        return model


def build_estimator(
    task: str, params: BoostParams, callbacks: list[xgb.callback.TrainingCallback], prior: History | None = None
) -> xgb.XGBModel:
    """The estimator; `prior` (a saved booster's history) makes early stopping carry on from it, and the
    estimator then boosts only the rounds left of `n_estimators`."""
    objective, metrics = OBJECTIVES[task]
    done = rounds_in(prior)
    if params.early_stopping_rounds > 0:
        scores = (prior or {}).get("validation_1", {}).get(metrics[-1], [])
        callbacks = [
            *callbacks,
            ResumedEarlyStopping(
                scores, rounds=params.early_stopping_rounds, metric_name=metrics[-1], data_name="validation_1",
                save_best=True,
            ),
        ]  # fmt: skip
    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(
        n_estimators=params.n_estimators - done,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        objective=objective,
        eval_metric=metrics,
        tree_method="hist",
        device=params.device,
        random_state=params.seed,
        callbacks=callbacks,
    )


def fit(
    task: str,
    params: BoostParams,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    log: Callable[[Mapping[str, float], int], None],
) -> xgb.XGBModel:
    """Train with per-round logging and (optional) early stopping on the val set."""
    return fit_listened(task, params, x_train, y_train, x_val, y_val, log)[0]


def fit_listened(
    task: str,
    params: BoostParams,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    log: Callable[[Mapping[str, float], int], None],
    listeners: Iterable[callbacks.EpochListener] = (),
    *,
    checkpoint: Checkpointing | None = None,
    resume: tuple[xgb.Booster, BoostState] | None = None,
) -> tuple[xgb.XGBModel, callbacks.StopRequest | None]:
    """Train with per-round logging and (optional) early stopping on the val set, telling `listeners` of every
    round; returns the model and the listener's stop request, if one stopped boosting. `checkpoint` saves the
    booster as it grows; `resume` continues a saved booster (its rounds count towards `n_estimators`)."""
    logger = RoundLogger(log, listeners)
    booster, prior = resume if resume is not None else (None, None)
    model = build_estimator(
        task, params, [logger, *([checkpoint] if checkpoint else [])], prior.history if prior else None
    )
    model.fit(x_train, y_train, eval_set=[(x_train, y_train), (x_val, y_val)], verbose=False, xgb_model=booster)
    return model, logger.stop_request


def rounds_in(history: History | None) -> int:
    """Boosting rounds a history covers (0 for none)."""
    return max((len(v) for by_metric in (history or {}).values() for v in by_metric.values()), default=0)


def merge_history(prior: History | None, new: Mapping[str, Mapping[str, Any]]) -> History:
    """A saved booster's history followed by the rounds trained since."""
    out = {
        data: {name: list(values) for name, values in by_metric.items()} for data, by_metric in (prior or {}).items()
    }
    for data, by_metric in new.items():
        for name, values in by_metric.items():
            out.setdefault(data, {}).setdefault(name, []).extend(float(v) for v in values)
    return out


def model_history(model: xgb.XGBModel, prior: BoostState | None = None) -> History:
    """Every round's eval metrics of a model just trained, a resumed run's earlier rounds first."""
    return merge_history(prior.history if prior else None, model.evals_result())


def finished(state: BoostState, params: BoostParams, metric: str) -> bool:
    """Whether a saved booster has nothing left to train: marked done, all rounds grown, or early stopping's
    patience already spent (a run killed between its last round and its final checkpoint)."""
    if state.done or rounds_in(state.history) >= params.n_estimators:
        return True
    scores = state.history.get("validation_1", {}).get(metric, [])
    return params.early_stopping_rounds > 0 and bool(scores) and best_so_far(scores)[1] >= params.early_stopping_rounds


def save_checkpoint(booster: xgb.Booster, state: BoostState, path: Path) -> Path:
    """The booster and its state in one UBJSON file (the state as a booster attribute, removed again after)."""
    booster.set_attr(**{STATE_ATTR: json.dumps({"history": state.history, "done": state.done})})
    try:
        booster.save_model(str(path))
    finally:
        booster.set_attr(**{STATE_ATTR: None})
    return path


def load_checkpoint(path: Path) -> tuple[xgb.Booster, BoostState]:
    """A booster saved by `save_checkpoint`, and its state; ValueError when the file holds no kiln state."""
    booster = xgb.Booster(model_file=str(path))
    raw = booster.attr(STATE_ATTR)
    if raw is None:
        raise ValueError(f"{path.name} is an XGBoost model without kiln's checkpoint state")
    booster.set_attr(**{STATE_ATTR: None})
    state = json.loads(raw)
    return booster, BoostState(history=state["history"], done=bool(state["done"]))


def finished_estimator(task: str, params: BoostParams, booster: xgb.Booster, state: BoostState) -> xgb.XGBModel:
    """The trained estimator from a finished checkpoint, without training: its trees up to the best round (a
    checkpoint written at the end of training already holds only those)."""
    best = booster.attr("best_iteration")
    if params.early_stopping_rounds > 0 and best is not None and booster.num_boosted_rounds() > int(best) + 1:
        score = booster.attr("best_score")
        booster = booster[: int(best) + 1]
        booster.set_attr(best_iteration=best, best_score=score)
    model = build_estimator(task, params, [])
    model.load_model(bytearray(booster.save_raw("ubj")))
    return model


def best_round(model: xgb.XGBModel) -> int:
    """The 0-based round whose trees the model keeps: early stopping's best, else the last round trained."""
    best = getattr(model, "best_iteration", None)
    return int(best) if best is not None else int(model.get_booster().num_boosted_rounds()) - 1


def best_round_metrics(model: xgb.XGBModel, history: History | None = None) -> dict[str, float]:
    """`best_val_<m>` for every metric XGBoost tracked: the per-round `val_<m>` of the kept round, exactly.
    `history` is every round's (`model_history`); by default the model's own from its last `fit`."""
    at = best_round(model)
    val = (history or model.evals_result())["validation_1"]
    return {f"best_val_{name}": float(values[at]) for name, values in val.items()}


def predict(model: xgb.XGBModel, x: np.ndarray) -> np.ndarray:
    """Class probabilities (n, k) for classifiers, predictions (n,) for regressors."""
    if isinstance(model, xgb.XGBClassifier):
        return np.asarray(model.predict_proba(x), dtype=np.float32)
    return np.asarray(model.predict(x), dtype=np.float32)


def _score(value: float | list[float]) -> float:
    """One importance score; xgboost types a score as a list for multi-output boosters, which kiln never trains."""
    return float(value[0]) if isinstance(value, list) else float(value)


def feature_importance(model: xgb.XGBModel, feature_names: list[str]) -> dict[str, dict[str, float]]:
    """importance type -> {real column name: score}, every feature listed (0 when never split on)."""
    booster = model.get_booster()
    out: dict[str, dict[str, float]] = {}
    for kind in ("gain", "total_gain", "weight", "cover"):
        scores = booster.get_score(importance_type=kind)
        by_name = {name: _score(scores.get(f"f{i}", 0.0)) for i, name in enumerate(feature_names)}
        out[kind] = dict(sorted(by_name.items(), key=lambda kv: -kv[1]))
    return out


def to_onnx(model: xgb.XGBModel, n_features: int) -> Any:
    """Convert with onnxmltools; the input is `input`, float32 [batch, n_features]."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        return convert_xgboost(
            model, initial_types=[("input", FloatTensorType([None, n_features]))], target_opset=ONNX_OPSET
        )
    except Exception as exc:  # the converter raises bare RuntimeError/AttributeError on unsupported boosters
        raise OnnxConversionError(f"onnxmltools could not convert the XGBoost model: {exc}") from exc


def check_onnx(onnx_model: Any, model: xgb.XGBModel, x: np.ndarray, atol: float = 1e-4) -> float:
    """Run `x` through onnxruntime and XGBoost; raise unless probabilities (or predictions) match.

    Returns the largest absolute difference.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x}), strict=True))
    expected = predict(model, x)
    got = outputs["probabilities"] if "probabilities" in outputs else outputs["variable"].reshape(-1)
    scale = 1.0 if isinstance(model, xgb.XGBClassifier) else max(1.0, float(np.abs(expected).max()))
    diff = float(np.max(np.abs(got - expected))) if len(x) else 0.0
    if got.shape != expected.shape or diff > atol * scale:
        raise OnnxConversionError(
            f"ONNX output differs from XGBoost's: shape {got.shape} vs {expected.shape}, max abs diff {diff:.3g}"
        )
    if "label" in outputs and not np.array_equal(outputs["label"], np.argmax(expected, axis=1)):
        ties = np.abs(np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2]) < 2 * atol
        if np.any((outputs["label"] != np.argmax(expected, axis=1)) & ~ties):
            raise OnnxConversionError("ONNX labels differ from XGBoost's argmax on rows without a probability tie")
    return diff


def save_native(model: xgb.XGBModel, path: Path) -> Path:
    """XGBoost's own JSON format, for users who want the booster outside ONNX."""
    model.save_model(str(path))
    return path
