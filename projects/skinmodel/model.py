"""skinmodel's XGBoost core: build the estimator, stream per-round metrics, convert to ONNX and prove it.

    python -m projects.skinmodel.train --n-estimators 200   # the entry point that uses this module

XGBoost is trained on a plain float32 matrix, so the booster's features are `f0..f{n-1}`, the names
onnxmltools' converter requires; the real column names travel separately (importance JSON, ONNX metadata).
Per-round metrics come from a `TrainingCallback` that logs `train_<metric>` and `val_<metric>` with
`step=round` (0-based, as XGBoost counts `best_iteration`) and reports them to the epoch listeners
(`projects.common.callbacks`), which may stop boosting after that round. Early stopping watches the val loss and
keeps the best round's trees (`save_best`), so `predict_proba` and the ONNX model agree on which trees count.
"""

from __future__ import annotations

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


class RoundLogger(xgb.callback.TrainingCallback):
    """Hands each round's train/val metrics to `log(metrics, step)` as `train_<m>` / `val_<m>`, then to the
    epoch listeners; a listener's stop request ends boosting after this round (`stop_request`)."""

    def __init__(
        self, log: Callable[[Mapping[str, float], int], None], listeners: Iterable[callbacks.EpochListener] = ()
    ) -> None:
        super().__init__()
        self.log = log
        self.listeners = list(listeners)
        self.stop_request: callbacks.StopRequest | None = None

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Mapping[str, Any]]) -> bool:
        metrics = {
            f"{EVAL_NAMES.get(data, data)}_{name}": float(values[-1])
            for data, by_metric in evals_log.items()
            for name, values in by_metric.items()
        }
        self.log(metrics, epoch)
        self.stop_request = callbacks.report(epoch, metrics, self.listeners)
        return self.stop_request is not None  # True ends boosting; EarlyStopping still keeps the best round


def build_estimator(task: str, params: BoostParams, callbacks: list[xgb.callback.TrainingCallback]) -> xgb.XGBModel:
    objective, metrics = OBJECTIVES[task]
    if params.early_stopping_rounds > 0:
        callbacks = [
            *callbacks,
            xgb.callback.EarlyStopping(
                rounds=params.early_stopping_rounds, metric_name=metrics[-1], data_name="validation_1", save_best=True
            ),
        ]
    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(
        n_estimators=params.n_estimators,
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
) -> tuple[xgb.XGBModel, callbacks.StopRequest | None]:
    """Train with per-round logging and (optional) early stopping on the val set, telling `listeners` of every
    round; returns the model and the listener's stop request, if one stopped boosting."""
    logger = RoundLogger(log, listeners)
    model = build_estimator(task, params, [logger])
    model.fit(x_train, y_train, eval_set=[(x_train, y_train), (x_val, y_val)], verbose=False)
    return model, logger.stop_request


def best_round(model: xgb.XGBModel) -> int:
    """The 0-based round whose trees the model keeps: early stopping's best, else the last round trained."""
    best = getattr(model, "best_iteration", None)
    return int(best) if best is not None else int(model.get_booster().num_boosted_rounds()) - 1


def best_round_metrics(model: xgb.XGBModel) -> dict[str, float]:
    """`best_val_<m>` for every metric XGBoost tracked: the per-round `val_<m>` of the kept round, exactly."""
    at = best_round(model)
    history = model.evals_result()["validation_1"]
    return {f"best_val_{name}": float(values[at]) for name, values in history.items()}


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
