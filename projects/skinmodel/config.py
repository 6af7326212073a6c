"""skinmodel's config and family registration: light (no xgboost, no mlflow), so `kiln train skinmodel --help` starts
fast.

    kiln train skinmodel --help

`projects/skinmodel/train.py` re-exports `SkinConfig` and does the training; the family names its functions
with `lazy(...)`, so that module is imported only when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contract import Ranking
from projects.common.config import cfg_field, register_field
from projects.common.families import Family, lazy, register_family

# task -> the metric that ranks versions: the best (kept) round's value, logged once. The per-round `val_auc`
# series would rank by the last round trained, whose trees early stopping threw away.
RANKING = {
    "binary": Ranking("best_val_auc", "max"),
    "multiclass": Ranking("best_val_mlogloss", "min"),
    "regression": Ranking("best_val_rmse", "min"),
}


@dataclass
class SkinConfig:
    data: str = cfg_field("", "CSV file with a header row; empty = the bundled breast-cancer sample")
    target: str = cfg_field("", "target column; empty = 'diagnosis' for the sample, required for other CSVs")
    task: str = cfg_field("auto", "auto, binary, multiclass or regression")
    n_estimators: int = cfg_field(500, "maximum boosting rounds")
    max_depth: int = cfg_field(4, "depth of each tree")
    learning_rate: float = cfg_field(0.05, "shrinkage per boosting round")
    early_stopping_rounds: int = cfg_field(30, "stop after this many rounds without val-loss improvement; 0 = never")
    val_fraction: float = cfg_field(0.2, "share of rows held out for validation (stratified for classes)")
    seed: int = cfg_field(0, "seed for the split and XGBoost's subsampling")
    model_name: str = cfg_field("skinmodel", "registered model name")
    register: str = register_field()
    drop_columns: str = cfg_field("", "comma-separated columns to leave out (IDs, free text)")
    subsample: float = cfg_field(0.9, "share of rows sampled per tree")
    colsample_bytree: float = cfg_field(0.8, "share of columns sampled per tree")
    device: str = cfg_field("auto", "auto (CUDA when present), cpu or cuda")
    resume: str = cfg_field("", "MLflow run id to continue from its booster checkpoint (or, finished, to export)")


FAMILY = register_family(
    Family(
        name="skinmodel",
        config_cls=SkinConfig,
        train=lazy("projects.skinmodel.train:train"),
        task="tabular",
        ranking=RANKING["binary"],  # the bundled sample's task; multiclass and regression runs rank as RANKING says
        selected_by=Ranking("val_logloss", "min"),  # early stopping keeps the round with the lowest val loss
        smoke=lazy("projects.skinmodel.train:smoke"),
        summary="XGBoost on a CSV (binary, multiclass or regression), exported to ONNX",
        mlproject=(
            "data",
            "target",
            "task",
            "n_estimators",
            "max_depth",
            "learning_rate",
            "early_stopping_rounds",
            "val_fraction",
            "seed",
            "model_name",
            "register",
            "drop_columns",
            "resume",
        ),
    )
)
