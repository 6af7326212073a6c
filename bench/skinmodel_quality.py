"""skinmodel quality on the bundled breast-cancer sample: validation AUC with the entry point's defaults.

    .venv/bin/python bench/skinmodel_quality.py            # 5 split seeds + one full entry-point run
    .venv/bin/python bench/skinmodel_quality.py --seeds 10

For each seed the 569 rows are split 80/20 (stratified) and XGBoost trains with the `skinmodel` defaults
(500 rounds max, depth 4, learning rate 0.05, early stopping after 30 rounds on val logloss). The val set
is also the early-stopping set, as in the entry point, so the figure is slightly optimistic; the spread over
seeds shows how much a 114-row val set moves it. The last line runs the real entry point (`train(cfg)`,
tracking into a throwaway sqlite store) and reports what it logged, ONNX check included. Target: AUC >= 0.98.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from data.tabular import TARGET, ensure_breast_cancer
from projects.skinmodel import model as xgbcore
from projects.skinmodel.data import load_table, split_table
from projects.skinmodel.train import SkinConfig, boost_params, final_metrics, train


def core_run(seed: int) -> tuple[float, float, int]:
    """val AUC, val accuracy and tree count for one split seed (no MLflow)."""
    table = load_table(ensure_breast_cancer(), TARGET)
    split = split_table(table, SkinConfig().val_fraction, seed)
    params = boost_params(SkinConfig(seed=seed))
    model = xgbcore.fit(table.task, params, split.x_train, split.y_train, split.x_val, split.y_val, lambda m, s: None)
    scores = final_metrics(table, split, xgbcore.predict(model, split.x_val))
    return scores["best_val_auc"], scores["val_accuracy"], model.get_booster().num_boosted_rounds()


def entry_point_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        return train(SkinConfig(model_name="skinmodel_bench"))


@click.command()
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1), help="Split seeds to average.")
def main(seeds: int) -> None:
    aucs = []
    for seed in range(seeds):
        start = time.perf_counter()
        auc, acc, trees = core_run(seed)
        aucs.append(auc)
        print(
            f"seed {seed}: val AUC {auc:.4f}  val accuracy {acc:.4f}  {trees} trees  {time.perf_counter() - start:.1f}s"
        )
    print(f"val AUC over {seeds} seeds: mean {np.mean(aucs):.4f}  min {np.min(aucs):.4f}  max {np.max(aucs):.4f}")
    start = time.perf_counter()
    final = entry_point_run()
    seconds = time.perf_counter() - start
    print(f"entry point (seed 0, tracked, ONNX checked and registered): val AUC {final['best_val_auc']:.4f}, "
          f"val accuracy {final['val_accuracy']:.4f}, {int(final['n_trees'])} trees, {seconds:.1f}s")  # fmt: skip


if __name__ == "__main__":
    main()
