"""Summaries of repeated runs: mean, standard deviation, n and a 95% t interval per metric, as `kiln cv` logs them.

    python -c "from experiments.stats import summarize; print(summarize([0.8, 0.82, 0.79]))"

The parent run of `kiln cv` carries `cv/<metric>/mean`, `.../std`, `.../n`, `.../ci95_low`, `.../ci95_high` for
every final metric its children share, and the raw values in the tag `kiln.cv.values.<metric>`
(`registry.significance.CV_VALUES_TAG`), which the promotion significance gate reads.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry.significance import CV_VALUES_TAG


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (n - 1)
    n: int
    ci95_low: float  # Student-t interval of the mean; equal to the mean when n == 1
    ci95_high: float

    def as_metrics(self, metric: str) -> dict[str, float]:
        return {f"cv/{metric}/{k}": float(v) for k, v in vars(self).items()}


# Metrics whose values lie in [0, 1] (matched on the name's last part, lower case): a fraction, a probability-like
# score or an overlap. Losses and errors are >= 0. Any other metric is unbounded.
UNIT_MARKERS = ("auc", "iou", "acc", "map", "precision", "recall", "f1", "dice", "agreement", "ap50", "fitness")
NONNEGATIVE_MARKERS = ("loss", "rmse", "mae", "mse", "error", "seconds", "latency", "_ms", "bytes", "size_mb")


def metric_range(metric: str | None) -> tuple[float, float]:
    """(low, high) that a metric's value can take, judged from its name; (-inf, inf) when unknown."""
    name = (metric or "").lower().rsplit("/", 1)[-1]
    if any(m in name for m in NONNEGATIVE_MARKERS):
        return 0.0, math.inf
    if any(m in name for m in UNIT_MARKERS):
        return 0.0, 1.0
    return -math.inf, math.inf


def summarize(values: Sequence[float], metric: str | None = None) -> Summary:
    """Mean, std and a 95% Student-t interval of the mean, clipped to the metric's range (see `metric_range`).

    The t interval is symmetric, so near a bound (AUC 0.99 over 5 folds) it can cross it; an interval past
    1.0 claims values the metric cannot take, so both ends are clipped to the range of `metric`.
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    low, high = metric_range(metric)
    return Summary(mean, std, n, min(max(mean - half, low), high), max(min(mean + half, high), low))


def shared_metrics(per_run: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """metric -> its value in every run, for the finite metrics every run has (in the first run's order)."""
    if not per_run:
        return {}
    keys = [k for k in per_run[0] if all(k in r and math.isfinite(float(r[k])) for r in per_run)]
    return {k: [float(r[k]) for r in per_run] for k in keys}


def cv_metrics(per_run: Sequence[Mapping[str, float]], skip: Sequence[str] = ()) -> dict[str, float]:
    """`cv/<metric>/<stat>` for every shared metric except those in `skip` (bookkeeping such as versions)."""
    out: dict[str, float] = {}
    for metric, values in shared_metrics(per_run).items():
        if metric not in skip:
            out.update(summarize(values, metric).as_metrics(metric))
    return out


def cv_value_tags(per_run: Sequence[Mapping[str, float]], skip: Sequence[str] = ()) -> dict[str, str]:
    """`kiln.cv.values.<metric>` -> the JSON list of per-run values, for the significance gate."""
    return {
        CV_VALUES_TAG + metric: json.dumps([round(v, 10) for v in values])
        for metric, values in shared_metrics(per_run).items()
        if metric not in skip
    }


def closest_to_mean(values: Sequence[float]) -> int:
    """Index of the value nearest the mean (the first on a tie)."""
    mean = statistics.fmean(values)
    return min(range(len(values)), key=lambda i: (abs(values[i] - mean), i))
