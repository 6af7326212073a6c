"""Train the skinmodel (XGBoost on a CSV) inside an MLflow run, then convert to ONNX, check and register it.

    mlflow run . -e skinmodel --env-manager local -P n_estimators=300
    python -m projects.skinmodel.train --data my.csv --target label --task auto
    python -m projects.skinmodel.train --resume <run_id>   # continue a killed run, or export a finished one

With no `--data`, the bundled sample (scikit-learn's breast-cancer table, `data/tabular.py`) is used with
its target column `diagnosis`. The CSV is checked before a run starts, so a bad file never leaves a
half-logged run behind. The booster is checkpointed in the run (`projects.skinmodel.checkpoint`), which is what
`--resume` continues, or exports without training when the run had finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import xgboost as xgb
from matplotlib.figure import Figure
from sklearn import metrics as skm

from core.contract import ModelContract, TabularInput, TabularPost
from core.errors import UserError
from data.tabular import TARGET as SAMPLE_TARGET
from data.tabular import ensure_breast_cancer
from projects.common import console, registration, tracking
from projects.common.callbacks import EpochListener, figures_wanted, wants_export
from projects.common.config import entry_point
from projects.common.onnx_export import log_onnx_model
from projects.skinmodel import checkpoint as boostckpt
from projects.skinmodel import model as xgbcore
from projects.skinmodel.baseline import baseline_test, trivial_baseline
from projects.skinmodel.config import FAMILY as FAMILY
from projects.skinmodel.config import RANKING as RANKING
from projects.skinmodel.config import SkinConfig as SkinConfig
from projects.skinmodel.data import Split, Table, load_table, split_table


def check_config(cfg: SkinConfig) -> None:
    positive = {"n_estimators": cfg.n_estimators, "max_depth": cfg.max_depth, "learning_rate": cfg.learning_rate}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name} must be > 0, got {value}")
    if cfg.early_stopping_rounds < 0:
        raise UserError(f"early_stopping_rounds must be >= 0, got {cfg.early_stopping_rounds}")
    for name, share in {"subsample": cfg.subsample, "colsample_bytree": cfg.colsample_bytree}.items():
        if not 0 < share <= 1:
            raise UserError(f"{name} must be in (0, 1], got {share}")
    if not cfg.model_name.strip():
        raise UserError("model_name must not be empty")


def resolve_data(cfg: SkinConfig) -> tuple[Path, str]:
    """The CSV path and target column, falling back to the bundled sample."""
    if not cfg.data:
        return ensure_breast_cancer(), cfg.target or SAMPLE_TARGET
    if not cfg.target:
        raise UserError(f"--target is required with --data {cfg.data}: name the column to predict")
    return Path(cfg.data).expanduser(), cfg.target


def xgb_device(pref: str) -> str:
    """XGBoost's device string; `auto` picks CUDA when this XGBoost build has it and a GPU is visible.

    Checked without importing torch, which would double this entry point's start-up time.
    """
    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        return "cuda" if _gpu_visible() else "cpu"
    if pref == "cpu":
        return pref
    if pref == "cuda" or pref.startswith("cuda:"):
        if not _gpu_visible():
            raise UserError(f"device {pref!r} requested but no CUDA GPU is visible to XGBoost; use cpu or auto")
        return pref
    raise UserError(f"unknown device {pref!r}; use auto, cpu, cuda or cuda:N")


def _gpu_visible() -> bool:
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def boost_params(cfg: SkinConfig) -> xgbcore.BoostParams:
    return xgbcore.BoostParams(
        n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, learning_rate=cfg.learning_rate,
        early_stopping_rounds=cfg.early_stopping_rounds, subsample=cfg.subsample,
        colsample_bytree=cfg.colsample_bytree, seed=cfg.seed, device=xgb_device(cfg.device),
    )  # fmt: skip


def final_metrics(table: Table, split: Split, proba: np.ndarray) -> dict[str, float]:
    """Val metrics of the final (best-round) model, from its predictions. `train` replaces the `best_val_*`
    ones XGBoost tracks with XGBoost's own value of the kept round (`xgbcore.best_round_metrics`)."""
    y = split.y_val
    if table.task == "regression":
        rmse = float(np.sqrt(skm.mean_squared_error(y, proba)))
        return {"best_val_rmse": rmse, "val_mae": float(skm.mean_absolute_error(y, proba)),
                "val_r2": float(skm.r2_score(y, proba))}  # fmt: skip
    labels = np.arange(len(table.classes))
    pred = proba.argmax(axis=1)
    out = {"val_accuracy": float(skm.accuracy_score(y, pred))}
    if table.task == "binary":
        out["best_val_auc"] = float(skm.roc_auc_score(y, proba[:, 1]))
        out["best_val_logloss"] = float(skm.log_loss(y, proba, labels=labels))
        out["val_precision"] = float(skm.precision_score(y, pred, zero_division=0))
        out["val_recall"] = float(skm.recall_score(y, pred, zero_division=0))
        out["val_f1"] = float(skm.f1_score(y, pred, zero_division=0))
    else:
        out["best_val_mlogloss"] = float(skm.log_loss(y, proba, labels=labels))
        out["best_val_merror"] = 1.0 - out["val_accuracy"]
        out["val_f1_macro"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
    return out


def importance_figure(importance: dict[str, float], top: int = 20) -> Figure:
    """Horizontal bars of the `top` features by gain."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    items = list(importance.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#3b7dd8")
    ax.set_xlabel("average gain per split")
    ax.set_title(f"XGBoost feature importance (top {len(items)})")
    fig.tight_layout()
    plt.close(fig)
    return fig


def log_artifacts(model: object, table: Table, split: Split, proba: np.ndarray) -> None:
    importance = xgbcore.feature_importance(model, table.feature_names)  # type: ignore[arg-type]
    mlflow.log_dict(importance, "feature_importance.json")
    if figures_wanted():  # not for a trial or fold of kiln tune / kiln cv
        mlflow.log_figure(importance_figure(importance["gain"]), "feature_importance.png")
    if table.classes:
        matrix = skm.confusion_matrix(split.y_val, proba.argmax(axis=1), labels=np.arange(len(table.classes)))
        mlflow.log_dict({"classes": table.classes, "matrix (rows=true, cols=predicted)": matrix.tolist()},
                        "confusion_matrix.json")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(xgbcore.save_native(model, Path(tmp) / "model.json")), "xgboost")  # type: ignore[arg-type]


def contract(table: Table) -> ModelContract:
    """Records in the CSV's column order, float32 with NaN for a missing cell; classes or a value out."""
    names = tuple(table.feature_names)
    post = TabularPost(task=table.task, feature_names=names, classes=tuple(table.classes))
    return ModelContract(task="tabular", family="skinmodel", postprocess=post, ranking=RANKING[table.task],
                         tabular_input=TabularInput(feature_names=names))  # fmt: skip


def export_and_register(
    cfg: SkinConfig, model: xgb.XGBModel, table: Table, split: Split, register: bool = True
) -> int | None:
    """Convert to ONNX, check it against XGBoost on the whole val set, log and (when `register`) register.
    Returns the version, None when not registered."""
    onnx_model = xgbcore.to_onnx(model, len(table.feature_names))
    diff = xgbcore.check_onnx(onnx_model, model, split.x_val)
    registration.bookkeeping(onnx_max_abs_diff=diff)
    version = log_onnx_model(
        onnx_model, input_example=split.x_val[:5], model_name=cfg.model_name, contract=contract(table),
        profile_samples=split.x_val,
        register=register,
    )  # fmt: skip
    return int(version.version) if version is not None else None


def _log_context(cfg: SkinConfig, path: Path, table: Table, split: Split) -> None:
    tracking.log_config(cfg, extra={"resolved_task": table.task, "train_rows": len(split.y_train),
                                    "val_rows": len(split.y_val)})  # fmt: skip
    digest = tracking.files_digest([path], path.parent)
    tracking.log_dataset(str(path.resolve()), digest, path.stem, profile=table.profile())
    baseline, kind = trivial_baseline(table.task, split)
    tracking.tag_family(
        "skinmodel", RANKING[table.task], task=table.task, baseline=f"{baseline:.6g}", baseline_kind=kind
    )


def train(cfg: SkinConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    """Check the data, train, track, export and register; returns the final metrics."""
    check_config(cfg)
    path, target = resolve_data(cfg)
    drop = [c.strip() for c in cfg.drop_columns.split(",") if c.strip()]
    table = load_table(path, target, cfg.task, drop)
    split = split_table(table, cfg.val_fraction, cfg.seed)
    params = boost_params(cfg)
    registration.check_mode(cfg.register)
    # A bad --resume fails here, before the old run is reopened (and, failing, marked FAILED).
    resumed = boostckpt.fetch(cfg.resume, len(table.feature_names)) if cfg.resume else None
    with tracking.start_run(run_name=cfg.model_name, resume_run_id=cfg.resume or None):
        data_text = f"{path.name} ({len(table.target)} rows, {len(table.feature_names)} features)"
        console.header("skinmodel", table.task, data_text, params.device)
        _log_context(cfg, path, table, split)
        data = (split.x_train, split.y_train, split.x_val, split.y_val)
        model, stop, history = boostckpt.fit(table.task, params, data, round_logger(params.n_estimators), listeners,
                                             resumed)  # fmt: skip
        proba = xgbcore.predict(model, split.x_val)
        final = {**final_metrics(table, split, proba), **xgbcore.best_round_metrics(model, history)}
        mlflow.log_metrics(final)  # measured; the counters below are tags
        counters = {"best_iteration": xgbcore.best_round(model), "n_trees": model.get_booster().num_boosted_rounds()}
        registration.bookkeeping(**counters)
        final.update({k: float(v) for k, v in counters.items()})
        log_artifacts(model, table, split, proba)
        outcome = registration.export_and_register(
            cfg.register, RANKING[table.task], final, cfg.model_name,
            lambda register: export_and_register(cfg, model, table, split, register), allowed=wants_export(stop),
            evidence=lambda: baseline_test(table.task, split, proba),
        )  # fmt: skip
        if outcome.version is not None:
            final["registered_version"] = float(outcome.version)
        tracking.set_note(_summary(cfg, table, final, outcome.note))
        url = console.active_run_url()
    print(_summary(cfg, table, final, outcome.note))
    console.footer(url, cfg.model_name, outcome.version)
    return final


def round_logger(total: int) -> Callable[[Mapping[str, float], int], None]:
    """Log each round's metrics to the run and print a progress line about ten times over `total` rounds."""
    every = max(1, total // 10)

    def log(metrics: Mapping[str, float], step: int) -> None:
        tracking.log_epoch(metrics, step)
        if step == 0 or (step + 1) % every == 0:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_"))
            print(f"round {step + 1}/{total}: {shown}", flush=True)

    return log


def _summary(cfg: SkinConfig, table: Table, final: dict[str, float], registered: str) -> str:
    headline = {k: v for k, v in final.items() if k.startswith("best_val_") or k == "val_accuracy"}
    scores = ", ".join(f"{k}={v:.4f}" for k, v in headline.items())
    return (f"skinmodel {table.task} on {len(table.feature_names)} features: {scores}; "
            f"{int(final['n_trees'])} trees; {registered}")  # fmt: skip


main = entry_point(SkinConfig, train, "Train an XGBoost model on a CSV and register it as ONNX.")


def smoke(folder: Path) -> dict[str, Any]:
    """The bundled sample, 20 shallow rounds with early stopping: the registry's smoke test."""
    return {"n_estimators": 20, "max_depth": 2, "learning_rate": 0.3, "early_stopping_rounds": 5, "register": "always"}


if __name__ == "__main__":
    main()
