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


def summarize(values: Sequence[float]) -> Summary:
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    return Summary(mean, std, n, mean - half, mean + half)


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
            out.update(summarize(values).as_metrics(metric))
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
