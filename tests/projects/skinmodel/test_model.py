"""skinmodel XGBoost core: per-round logging, early stopping that keeps the best round, ONNX that matches."""

import numpy as np
import onnxruntime as ort
import pytest

from projects.skinmodel import model as xgbcore


def data(task, n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2]
    if task == "binary":
        y = (score > 0).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(score, [-0.7, 0.7]).astype(np.int64)
    else:
        y = (3 * score + 1).astype(np.float32)
    return x[:120], y[:120], x[120:], y[120:]


@pytest.mark.parametrize(
    ("task", "keys"),
    [("binary", {"train_auc", "train_logloss", "val_auc", "val_logloss"}),
     ("multiclass", {"train_merror", "train_mlogloss", "val_merror", "val_mlogloss"}),
     ("regression", {"train_rmse", "val_rmse"})],
)  # fmt: skip
def test_every_round_is_logged_with_its_step(task, keys):
    logged = []
    params = xgbcore.BoostParams(n_estimators=12, max_depth=2, early_stopping_rounds=0)
    xgbcore.fit(task, params, *data(task), log=lambda metrics, step: logged.append((step, dict(metrics))))
    assert [step for step, _ in logged] == list(range(12))
    assert set(logged[0][1]) == keys


def test_early_stopping_keeps_the_best_round():
    x_tr, y_tr, x_val, y_val = data("binary")
    rng = np.random.default_rng(1)
    y_tr = np.where(rng.random(len(y_tr)) < 0.3, 1 - y_tr, y_tr)  # noisy labels: the val loss turns upward
    logged = []
    params = xgbcore.BoostParams(n_estimators=400, max_depth=6, learning_rate=0.3, early_stopping_rounds=5)
    model = xgbcore.fit("binary", params, x_tr, y_tr, x_val, y_val, lambda m, s: logged.append((s, m["val_logloss"])))
    assert len(logged) < 400
    best_round = min(logged, key=lambda sv: sv[1])[0]
    assert model.best_iteration == best_round
    assert model.get_booster().num_boosted_rounds() == best_round + 1  # later trees dropped


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_onnx_matches_xgboost(task):
    x_tr, y_tr, x_val, y_val = data(task)
    model = xgbcore.fit(task, xgbcore.BoostParams(n_estimators=20, max_depth=3), x_tr, y_tr, x_val, y_val,
                        lambda m, s: None)  # fmt: skip
    onnx_model = xgbcore.to_onnx(model, 5)
    assert xgbcore.check_onnx(onnx_model, model, x_val) < 1e-4
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == (["variable"] if task == "regression" else ["label", "probabilities"])


def test_check_onnx_catches_a_wrong_model():
    x_tr, y_tr, x_val, y_val = data("binary")
    fit = lambda n: xgbcore.fit("binary", xgbcore.BoostParams(n_estimators=n), x_tr, y_tr, x_val, y_val,  # noqa: E731
                                lambda m, s: None)  # fmt: skip
    with pytest.raises(xgbcore.OnnxConversionError, match="ONNX output differs from XGBoost's"):
        xgbcore.check_onnx(xgbcore.to_onnx(fit(3), 5), fit(30), x_val)


def test_feature_importance_uses_real_names():
    x_tr, y_tr, x_val, y_val = data("binary")
    model = xgbcore.fit("binary", xgbcore.BoostParams(n_estimators=20), x_tr, y_tr, x_val, y_val, lambda m, s: None)
    names = ["alpha", "beta", "gamma", "delta", "noise"]
    importance = xgbcore.feature_importance(model, names)
    assert set(importance) == {"gain", "total_gain", "weight", "cover"}
    assert set(importance["gain"]) == set(names)
    assert list(importance["gain"])[0] in {"alpha", "gamma"}  # the strongest signals rank first
