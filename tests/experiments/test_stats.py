"""Summaries of repeated runs and the fold hook.

.venv/bin/python -m pytest tests/experiments/test_stats.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from experiments.stats import closest_to_mean, cv_metrics, cv_value_tags, summarize
from projects.common.folds import FoldSpec, fold_indices, using_fold


def test_summary_is_a_t_interval() -> None:
    values = [0.8, 0.82, 0.79, 0.85]
    s = summarize(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (s.n, s.mean) == (4, pytest.approx(0.815)) and s.std == pytest.approx(np.std(values, ddof=1))
    assert (s.ci95_low, s.ci95_high) == (pytest.approx(low), pytest.approx(high))


def test_cv_metrics_and_tags_cover_shared_metrics() -> None:
    runs = [{"auc": 0.8, "registered_version": 3.0, "only_here": 1.0}, {"auc": 0.9, "registered_version": 4.0}]
    metrics = cv_metrics(runs, skip=("registered_version",))
    assert set(metrics) == {f"cv/auc/{k}" for k in ("mean", "std", "n", "ci95_low", "ci95_high")}
    assert json.loads(cv_value_tags(runs, skip=("registered_version",))["kiln.cv.values.auc"]) == [0.8, 0.9]


def test_closest_to_mean() -> None:
    assert closest_to_mean([0.1, 0.6, 0.9, 0.45]) == 3  # mean 0.5125


def test_folds_partition_and_stratify() -> None:
    labels = np.array([0] * 12 + [1] * 6)
    seen = []
    for i in range(3):
        train, val = fold_indices(len(labels), FoldSpec(3, i, seed=1), labels)
        assert not set(train) & set(val)
        assert np.bincount(labels[val]).tolist() == [4, 2]  # each fold keeps the class ratio
        seen += list(val)
    assert sorted(seen) == list(range(18))


def test_edgnet_and_skinmodel_splits_follow_the_active_fold(tiny_csv) -> None:  # type: ignore[no-untyped-def]
    from projects.edgnet import data as edgdata
    from projects.skinmodel.data import load_table, split_table

    table = load_table(tiny_csv, "label")
    with using_fold(FoldSpec(3, 1)):
        split = split_table(table, 0.2, seed=0)
        train_s, val_s = edgdata.split(list(range(9)), 0.2, seed=0)  # type: ignore[arg-type]
    assert len(split.y_val) == 20 and len(split.y_train) == 40
    assert len(val_s) == 3 and sorted(train_s + val_s) == list(range(9))
    assert len(split_table(table, 0.2, seed=0).y_val) == 12  # outside kiln cv the usual hold-out


@pytest.mark.parametrize("metric", ["val_auc", "best_val_iou", "cv/accuracy", "metrics/mAP50-95(B)"])
def test_interval_of_a_unit_metric_stays_in_0_1(metric: str) -> None:
    """The issue's case: five AUCs near 1 gave `0.9781 .. 1.002`; the interval is clipped to [0, 1]."""
    values = [0.99, 1.0, 0.97, 1.0, 0.995]
    raw = summarize(values)
    assert raw.ci95_high > 1.0  # the unclipped t interval crosses the bound (the bug this guards against)
    s = summarize(values, metric)
    assert s.ci95_high == 1.0 and 0.9 < s.ci95_low < s.mean
    low = summarize([0.0, 0.02, 0.0, 0.05], metric)
    assert low.ci95_low == 0.0 and low.ci95_high > low.mean


def test_loss_interval_is_nonnegative_and_unknown_metrics_are_not_clipped() -> None:
    assert summarize([0.01, 0.2, 0.0], "val_loss").ci95_low == 0.0
    assert summarize([-3.0, 1.0, 2.0], "r2_gain").ci95_low < -3.0
    runs = [{"auc": 0.99}, {"auc": 1.0}, {"auc": 0.97}]
    assert cv_metrics(runs)["cv/auc/ci95_high"] == 1.0
