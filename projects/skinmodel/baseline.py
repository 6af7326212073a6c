"""skinmodel's trivial models and the test `register=auto` asks of a run: is it significantly better than them?

    python -c "from projects.skinmodel.baseline import trivial_baseline; help(trivial_baseline)"

A model that ignores the features answers a constant score (AUC 0.5, binary), the training class frequencies
(multiclass, ranked by log loss) or the training mean (regression, ranked by RMSE). `trivial_baseline` gives the
value the run is tagged with (`kiln.baseline`); `baseline_test` the evidence on the validation rows that
projects/common/registration.py decides on, through registry/baseline.py's tests.
"""

from __future__ import annotations

import numpy as np

from projects.skinmodel.data import Split
from registry.baseline import BaselineTest, auc_test, paired_loss_test


def trivial_baseline(task: str, split: Split) -> tuple[float, str]:
    """The ranking metric of a model that ignores the features: constant score (AUC 0.5), the class frequencies
    (their log loss on val), or the training mean (its RMSE on val). registry/baseline.py reads it."""
    if task == "binary":
        return 0.5, "a constant score"
    losses, kind = trivial_losses(task, split)
    mean = float(np.mean(losses))
    return (mean if task == "multiclass" else float(np.sqrt(mean))), kind


def trivial_losses(task: str, split: Split) -> tuple[np.ndarray, str]:
    """Per val row: the log loss of the training class frequencies (multiclass) or the squared error of the
    training mean (regression)."""
    if task == "multiclass":
        classes, counts = np.unique(split.y_train, return_counts=True)
        prior = dict(zip(classes.tolist(), (counts / counts.sum()).tolist(), strict=True))
        p = np.array([prior.get(y, 0.0) for y in split.y_val.tolist()])
        return -np.log(np.clip(p, 1e-15, 1.0)), "the training class frequencies"
    return (split.y_val.astype(float) - float(np.mean(split.y_train))) ** 2, "the training mean"


def baseline_test(task: str, split: Split, proba: np.ndarray) -> BaselineTest:
    """Is the model significantly better than the trivial one on the val rows (`register=auto` asks)? The AUC
    against 0.5 (binary), or its per-row losses against the trivial model's (registry/baseline.py)."""
    if task == "binary":
        return auc_test(split.y_val, proba[:, 1])
    trivial, kind = trivial_losses(task, split)
    if task == "multiclass":
        picked = np.asarray(proba)[np.arange(len(split.y_val)), split.y_val.astype(int)]
        model = -np.log(np.clip(picked, 1e-15, 1.0))
        value, baseline, metric = float(np.mean(model)), float(np.mean(trivial)), "log loss"
    else:
        model = (split.y_val.astype(float) - np.asarray(proba, dtype=float).reshape(-1)) ** 2
        value, baseline, metric = float(np.sqrt(np.mean(model))), float(np.sqrt(np.mean(trivial))), "RMSE"
    return paired_loss_test(model, trivial, metric=metric, value=value, baseline=baseline, baseline_kind=kind)
