"""The family's trivial baseline, and the warning a first promotion gets when a version does not beat it.

    python -c "from registry.baseline import at_baseline; print(at_baseline(0.0, 0.0, 'max'))"

Training logs, on each run, the value its ranking metric (`kiln.metric`) would have for a trivial model of the
task as the run tag `kiln.baseline`: the IoU of the best mask that ignores the image (all background, all
foreground or a fixed mask), mAP 0 for a detector that finds nothing, the Pearson of always predicting the mean
spectrum, the AUC or accuracy of always answering the majority class.
A promotion over a held alias is judged against the holder; a *first* promotion has nothing to be compared
with, so kiln compares the version with its baseline instead and warns (it does not refuse) when it is no
better: an all-zero detector should not reach production without someone noticing.

Registration (`register=auto`, projects/common/registration.py) asks more than a point comparison: a model whose
scores are noise beats AUC 0.5 half the time, and any noise mask beats the IoU 0 of an all-background mask. The
tests here judge whether the model is *significantly* better than the trivial model on the validation examples,
one-sided at `REGISTER_ALPHA`: `auc_test` (Mann-Whitney U: is the AUC above 0.5?), `paired_loss_test` (a paired
t-test of per-row losses against the trivial model's: regression, multiclass), `pooled_iou_test` (a paired
sign-flip permutation test of the pooled IoU against the best trivial mask's, `best_trivial_mask`) and
`paired_score_test` (per-sample scores, higher is better: cr_recon's Pearson against the mean spectrum). Each
returns a `BaselineTest` whose `sentence` says what was found in words a user reads. bench/decisions.py measures
how often a model that learned nothing registers (about alpha) and how often a learned one does not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from mlflow import MlflowClient
from numpy.typing import ArrayLike

from core import vocab
from registry.gates import choose_metric, fmt
from registry.lookup import get_model, get_version, metric_hints, run_data

BASELINE_TAG = vocab.BASELINE  # run tag: the ranking metric's value for the family's trivial model
BASELINE_KIND_TAG = vocab.BASELINE_KIND  # optional run tag: what the trivial model is ("all background")
BASELINE_P_TAG = vocab.BASELINE_P  # run tag: the one-sided p-value of "the model beats its trivial baseline"
REGISTER_ALPHA = 0.05  # register=auto needs the model significantly better than its trivial one at this level
PERMUTATIONS = 9999  # sign-flip draws of `pooled_iou_test` (exact enumeration up to EXACT_PAIRS images)
EXACT_PAIRS = 12


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


@dataclass(frozen=True)
class BaselineTest:
    """The test that a model beats its trivial baseline on the validation examples, and its outcome."""

    metric: str  # how the user reads the value: "AUC", "RMSE", "IoU", "log loss", "Pearson"
    mode: str  # "max" or "min": the direction in which `value` is better
    value: float  # the model's value on the examples tested
    baseline: float  # the trivial model's value on the same examples
    baseline_kind: str  # what the trivial model is: "a constant score", "all-foreground mask"
    p_value: float  # one-sided: the chance of a lead this large if the model were no better than the trivial one
    n: int  # examples tested
    unit: str  # "validation rows", "validation images"
    test: str  # "Mann-Whitney U", "paired t-test", "paired permutation test"

    def beats(self, alpha: float = REGISTER_ALPHA) -> bool:
        """Significantly better than the trivial model, and better in the ranking's direction."""
        return self.p_value <= alpha and not at_baseline(self.value, self.baseline, self.mode)

    def sentence(self, alpha: float = REGISTER_ALPHA) -> str:
        """ "AUC 0.54 on 40 validation rows is not significantly above 0.5 (a constant score; Mann-Whitney U,
        p=0.31 > 0.05)"."""
        side = "above" if self.mode == "max" else "below"
        verdict = f"is significantly {side}" if self.beats(alpha) else f"is not significantly {side}"
        sign = "<=" if self.p_value <= alpha else ">"
        test = f"{self.test}, p={self.p_value:.2g} {sign} {alpha:g}"
        return (f"{self.metric} {self.value:.3g} on {self.n} {self.unit} {verdict} {self.baseline:.3g}, "
                f"the trivial baseline ({self.baseline_kind}; {test})")  # fmt: skip


def _p(value: float) -> float:
    """A p-value, with an undefined one (no variation at all) read as 'no evidence': 1."""
    return 1.0 if math.isnan(value) else min(1.0, max(0.0, float(value)))


def auc_test(labels: ArrayLike, scores: ArrayLike) -> BaselineTest:
    """Is the AUC of `scores` for the binary `labels` (1 = positive) above 0.5? One-sided Mann-Whitney U
    (tie-corrected normal approximation, exact for small untied samples); one class only: p = 1."""
    from scipy.stats import mannwhitneyu

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return BaselineTest("AUC", "max", 0.5, 0.5, "a constant score", 1.0, len(s), "validation rows",
                            "no test: the validation rows hold one class")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all scores tied: the p-value is NaN, read as 1
        result = mannwhitneyu(pos, neg, alternative="greater")
    auc = float(result.statistic) / (len(pos) * len(neg))
    return BaselineTest("AUC", "max", auc, 0.5, "a constant score", _p(result.pvalue), len(s), "validation rows",
                        "Mann-Whitney U")  # fmt: skip


def _t_greater(diff: np.ndarray) -> float:
    """One-sided p-value of a paired t-test that the mean of `diff` is above 0; no spread: 0 or 1 by its sign."""
    from scipy.stats import ttest_1samp

    if len(diff) < 2 or float(np.ptp(diff)) == 0.0:
        return 0.0 if len(diff) >= 2 and float(diff[0]) > 0 else 1.0
    return _p(float(ttest_1samp(diff, 0.0, alternative="greater").pvalue))


def paired_loss_test(
    model_loss: ArrayLike, trivial_loss: ArrayLike, *, metric: str, value: float, baseline: float, baseline_kind: str
) -> BaselineTest:
    """Is the model's mean per-row loss below the trivial model's on the same rows? A one-sided paired t-test.
    `value`/`baseline` are what the user reads (an RMSE is the square root of the mean squared errors tested)."""
    model, trivial = np.asarray(model_loss, dtype=np.float64), np.asarray(trivial_loss, dtype=np.float64)
    p = _t_greater(trivial - model)
    return BaselineTest(metric, "min", value, baseline, baseline_kind, p, len(model), "validation rows",
                        "paired t-test of per-row losses")  # fmt: skip


def paired_score_test(
    model_score: ArrayLike, trivial_score: ArrayLike, *, metric: str, baseline_kind: str, unit: str
) -> BaselineTest:
    """Is the model's mean per-sample score (higher is better) above the trivial model's? One-sided paired t-test."""
    model, trivial = np.asarray(model_score, dtype=np.float64), np.asarray(trivial_score, dtype=np.float64)
    p = _t_greater(model - trivial)
    return BaselineTest(metric, "max", float(np.mean(model)), float(np.mean(trivial)), baseline_kind, p, len(model),
                        unit, "paired t-test of per-sample scores")  # fmt: skip


def trivial_masks(truth: np.ndarray, levels: int = 32) -> Iterator[tuple[str, np.ndarray]]:
    """Masks that ignore the image, for `truth` masks [n, H, W] (bool): all background, all foreground, and the
    fixed masks of the pixels foreground in at least a share t of these very masks (up to `levels` values of t).
    Fitted on the masks they are scored on, the best of them is the best answer a model could give without looking
    at the image, or better: no fixed mask (a central blob, say) beats it by luck. The price is power on a few
    images (there the fitted mask nearly copies them); with 4 images or fewer nothing is significant anyway."""
    yield "all-background mask", np.zeros(truth.shape[1:], dtype=bool)
    yield "all-foreground mask", np.ones(truth.shape[1:], dtype=bool)
    share = truth.mean(axis=0)
    found = np.unique(share[share > 0])
    for t in found[np.unique(np.linspace(0, len(found) - 1, min(levels, len(found))).round().astype(int))]:
        yield f"a fixed mask of the pixels foreground in >= {t:.0%} of the images", share >= t


def overlaps(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image (intersection, union) pixel counts, [n, 2], of masks [n, H, W] (or one mask [H, W] for all)."""
    pred = np.broadcast_to(pred, truth.shape)
    axes = tuple(range(1, truth.ndim))
    return np.stack([(pred & truth).sum(axis=axes), (pred | truth).sum(axis=axes)], axis=1).astype(np.float64)


def _pooled(sums: np.ndarray) -> np.ndarray:
    """Pooled IoU of summed (intersection, union) pairs [..., 2]; nothing on either side: 1 (core.metrics)."""
    inter, union = sums[..., 0], sums[..., 1]
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


def best_trivial_mask(truth: np.ndarray) -> tuple[str, float, np.ndarray]:
    """The trivial mask with the highest pooled IoU on `truth` [n, H, W]: (its name, its IoU, its per-image sums)."""
    scored = [(name, overlaps(mask, truth)) for name, mask in trivial_masks(truth)]
    name, sums = max(scored, key=lambda item: float(_pooled(item[1].sum(axis=0))))
    return name, float(_pooled(sums.sum(axis=0))), sums


def pooled_iou_test(model_sums: ArrayLike, trivial_sums: ArrayLike, baseline_kind: str, seed: int = 0) -> BaselineTest:
    """Is the model's pooled IoU above the trivial mask's on the same images? A paired sign-flip permutation test:
    if the model were no better, swapping its result with the trivial mask's on any image would not matter; the
    p-value is the share of swaps (all of them up to EXACT_PAIRS images, else PERMUTATIONS random ones, seeded)
    whose pooled-IoU lead is at least the observed one. `*_sums` are per-image (intersection, union), [n, 2]."""
    model, trivial = np.asarray(model_sums, dtype=np.float64), np.asarray(trivial_sums, dtype=np.float64)
    n = len(model)
    value, baseline = float(_pooled(model.sum(axis=0))), float(_pooled(trivial.sum(axis=0)))
    if n <= EXACT_PAIRS:
        swap = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    else:
        swap = np.random.default_rng(seed).random((PERMUTATIONS, n)) < 0.5
    keep = (~swap).astype(np.float64)
    flip = swap.astype(np.float64)
    left = keep @ model + flip @ trivial  # [draws, 2]: the "model" side's summed sums after the swaps
    right = keep @ trivial + flip @ model
    lead = _pooled(left) - _pooled(right)
    observed = value - baseline
    hits = int(np.sum(lead >= observed - 1e-12))
    p = hits / len(swap) if n <= EXACT_PAIRS else (hits + 1) / (len(swap) + 1)
    return BaselineTest("IoU", "max", value, baseline, baseline_kind, _p(p), n, "validation images",
                        "paired permutation test")  # fmt: skip
