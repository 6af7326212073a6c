"""The family's trivial baseline, and the warning a first promotion gets when a version does not beat it.

    python -c "from registry.baseline import at_baseline; print(at_baseline(0.0, 0.0, 'max'))"

Training logs, on each run, the value its ranking metric (`kiln.metric`) would have for a trivial model of the
task as the run tag `kiln.baseline`: IoU of an all-background mask, mAP 0 for a detector that finds nothing,
the Pearson of always predicting the mean spectrum, the AUC or accuracy of always answering the majority class.
A promotion over a held alias is judged against the holder; a *first* promotion has nothing to be compared
with, so kiln compares the version with its baseline instead and warns (it does not refuse) when it is no
better: an all-zero detector should not reach production without someone noticing.
"""

from __future__ import annotations

import math

from mlflow import MlflowClient

from core import vocab
from registry.gates import choose_metric, fmt
from registry.lookup import get_model, get_version, metric_hints, run_data

BASELINE_TAG = vocab.BASELINE  # run tag: the ranking metric's value for the family's trivial model
BASELINE_KIND_TAG = vocab.BASELINE_KIND  # optional run tag: what the trivial model is ("all background")


def at_baseline(value: float, baseline: float, mode: str) -> bool:
    """True when `value` is no better than `baseline` (a tie counts: it learned nothing measurable)."""
    if math.isnan(value):
        return True
    return value <= baseline if mode == "max" else value >= baseline


def baseline_warning(client: MlflowClient, model: str, version: int, *, metric: str | None = None) -> str | None:
    """A sentence when `model` v`version` is at or below its run's `kiln.baseline`; None otherwise or unknown."""
    registered = get_model(client, model)
    candidate = get_version(client, model, version)
    metrics, tags = run_data(client, candidate.run_id)
    raw = tags.get(BASELINE_TAG)
    if raw is None:
        return None
    try:
        baseline = float(raw)
    except ValueError:
        return None
    choice = choose_metric(metric, None, metric_hints(client, candidate, registered))
    if choice is None or choice.metric not in metrics:
        return None
    value = metrics[choice.metric]
    if not at_baseline(value, baseline, choice.mode):
        return None
    kind = tags.get(BASELINE_KIND_TAG)
    what = f" ({kind})" if kind else ""
    return (
        f"{model} v{version}'s {choice.metric} {fmt(value)} is no better than the trivial baseline {fmt(baseline)}"
        f"{what}: it has not learned the task; roll back with `kiln rollback {model}` if this was not meant"
    )
