"""The significance gate: is the candidate's improvement over the alias holder larger than run-to-run noise?

    kiln promote edgnet --version 5 --significance 0.05
    python -c "from registry.significance import welch; print(welch((0.8, 0.82, 0.81), (0.7, 0.71, 0.69), 'max'))"

A single run's metric is one draw from a distribution (seed, data order, fold). When both versions come
with several draws, the gate compares the two samples with a one-sided Welch t-test (unequal variances) and
refuses a move whose improvement is not significant at the given level. A version has several draws when:
- its source run, or that run's parent, is a `kiln cv` run: the tag `kiln.cv.values.<metric>` holds the
  per-fold (or per-seed) values as a JSON list; or
- its experiment holds several finished runs of the same config (identical params apart from `seed` and
  names, see REPLICATE_IGNORED) that logged the metric.
Without two or more draws on each side the gate says why it cannot judge and fails; `--force` overrides.
The interval printed is the two-sided (1 - 2*alpha) Welch interval of the difference, whose lower end is
above zero exactly when the one-sided test is significant at alpha.

k-fold values are not independent draws: the folds' training sets overlap and all of them come from one data
set, so their spread understates how much the cv mean moves from one data set (or split) to the next. For
`kiln.cv.kind = folds` the gate uses Nadeau and Bengio's corrected variance, s^2 * (1/k + n_test/n_train) with
n_test/n_train = 1/(k-1), instead of s^2/k. The decision bench (bench/decisions.py, docs/decisions.md) measured
the plain Welch test promoting 6.3% of no-difference candidates at alpha 0.05 with 3 folds when each version's
cv ran on its own data draw; the corrected test stays under alpha at 3, 5 and 10 folds, at a cost in power.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from core import vocab
from registry.checks import GateCheck
from registry.errors import InvalidRequestError
from registry.lookup import is_not_found

CV_VALUES_TAG = vocab.CV_VALUES_PREFIX  # + metric: JSON list of the per-fold or per-seed values (written by kiln cv)
PARENT_TAG = vocab.PARENT_TAG
# Params that differ between replicates of one config without changing the recipe.
REPLICATE_IGNORED = frozenset({"seed", "model_name", "resume", "run_name", "device", "workers"})
MAX_REPLICATE_SEARCH = 1000  # runs of an experiment scanned for replicates


@dataclass(frozen=True)
class Sample:
    """Several draws of one version's metric and where they came from."""

    values: tuple[float, ...]
    source: str  # e.g. "5 folds of kiln cv run 1a2b3c4d"
    kind: str = "draws"  # "folds" (k-fold cv: correlated), "seeds" or "draws" (independent runs)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def variance_of_mean(self) -> float:
        """s^2/n for independent draws; Nadeau-Bengio's s^2 (1/k + 1/(k-1)) for k folds of one data set."""
        return self.std**2 * fold_factor(self.kind, self.n) / self.n


def fold_factor(kind: str, n: int) -> float:
    """How much larger the variance of a mean of `n` values of this kind is than s^2/n."""
    return 1 + n / (n - 1) if kind == "folds" and n > 1 else 1.0


@dataclass(frozen=True)
class Verdict:
    candidate: Sample
    holder: Sample
    mode: str  # "max" or "min"
    alpha: float
    diff: float  # candidate mean - holder mean
    ci_low: float  # (1 - 2 alpha) two-sided Welch interval of `diff`
    ci_high: float
    p_value: float  # one-sided: probability of an improvement this large if there were none
    df: float  # Welch-Satterthwaite degrees of freedom

    @property
    def improved(self) -> bool:
        return self.diff > 0 if self.mode == "max" else self.diff < 0

    @property
    def significant(self) -> bool:
        return self.improved and self.p_value < self.alpha

    @property
    def correction(self) -> str:
        return "_nadeau_bengio" if "folds" in (self.candidate.kind, self.holder.kind) else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "test": "welch_t_one_sided" + self.correction, "alpha": self.alpha, "p_value": self.p_value,
            "diff": self.diff,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "ci_level": 1 - 2 * self.alpha, "df": self.df,
            "candidate_mean": self.candidate.mean, "candidate_std": self.candidate.std, "candidate_n": self.candidate.n,
            "candidate_source": self.candidate.source, "holder_mean": self.holder.mean, "holder_std": self.holder.std,
            "holder_n": self.holder.n, "holder_source": self.holder.source, "significant": self.significant,
        }  # fmt: skip


def check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and 0 < alpha < 0.5):
        raise InvalidRequestError(f"--significance must be a level between 0 and 0.5 (e.g. 0.05), got {alpha!r}")
    return float(alpha)


def welch(
    candidate: Sequence[float], holder: Sequence[float], mode: str, alpha: float = 0.05, *,
    candidate_kind: str = "draws", holder_kind: str = "draws",
) -> Verdict:  # fmt: skip
    """One-sided Welch t-test of "the candidate is better" (higher for max, lower for min); a side whose values
    are k folds of one cv run gets the Nadeau-Bengio variance (see the module docstring)."""
    from scipy import stats

    cand = Sample(tuple(candidate), "candidate", candidate_kind)
    hold = Sample(tuple(holder), "holder", holder_kind)
    diff = cand.mean - hold.mean
    va, vb = cand.variance_of_mean, hold.variance_of_mean
    se = math.sqrt(va + vb)
    gain = diff if mode == "max" else -diff
    if se == 0:  # no spread at all: the difference is exact
        return Verdict(cand, hold, mode, alpha, diff, diff, diff, 0.0 if gain > 0 else 1.0, math.inf)
    df = (va + vb) ** 2 / (va**2 / (cand.n - 1) + vb**2 / (hold.n - 1))
    p_value = float(stats.t.sf(gain / se, df))
    half = float(stats.t.ppf(1 - alpha, df)) * se
    return Verdict(cand, hold, mode, alpha, diff, diff - half, diff + half, p_value, df)


def _with_sources(verdict: Verdict, candidate: Sample, holder: Sample) -> Verdict:
    return Verdict(candidate, holder, verdict.mode, verdict.alpha, verdict.diff, verdict.ci_low, verdict.ci_high,
                   verdict.p_value, verdict.df)  # fmt: skip


def _get_run(client: MlflowClient, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def _cv_values(run: Run, metric: str) -> tuple[float, ...] | None:
    text = run.data.tags.get(CV_VALUES_TAG + metric)
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in json.loads(text))
    except (ValueError, TypeError):
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _recipe(params: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in REPLICATE_IGNORED}


def _replicates(client: MlflowClient, run: Run, metric: str) -> list[float]:
    runs = client.search_runs(
        [run.info.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=MAX_REPLICATE_SEARCH
    )
    recipe = _recipe(run.data.params)
    if not recipe:
        return []
    values = [
        float(r.data.metrics[metric]) for r in runs if metric in r.data.metrics and _recipe(r.data.params) == recipe
    ]
    return [v for v in values if math.isfinite(v)]


def sample_for(client: MlflowClient, run_id: str | None, metric: str) -> Sample | str:
    """The draws behind a version's source run, or a sentence saying why there are none."""
    if not run_id:
        return "it was registered without a source run"
    run = _get_run(client, run_id)
    if run is None:
        return f"its source run {run_id} no longer exists"
    values = _cv_values(run, metric)
    if values is not None:
        kind = run.data.tags.get(vocab.CV_KIND, "draws")
        return Sample(values, f"{len(values)} {kind} of kiln cv run {run_id[:8]}", kind)
    parent_id = run.data.tags.get(PARENT_TAG)
    parent = _get_run(client, parent_id) if parent_id else None
    if parent is not None and (values := _cv_values(parent, metric)) is not None:
        kind = parent.data.tags.get(vocab.CV_KIND, "draws")
        return Sample(values, f"{len(values)} {kind} of kiln cv run {str(parent_id)[:8]}", kind)
    replicates = _replicates(client, run, metric)
    if len(replicates) >= 2:
        return Sample(tuple(replicates), f"{len(replicates)} runs of the same config as run {run_id[:8]}")
    return (
        f"its source run {run_id[:8]} is neither a kiln cv run nor one of several runs of the same config "
        f"with {metric} (run `kiln cv` or repeat the run with other seeds)"
    )


def describe(verdict: Verdict, metric: str, cand_label: str, holder_label: str) -> str:
    c, h = verdict.candidate, verdict.holder
    level = f"{1 - 2 * verdict.alpha:.0%}"
    outcome = (
        f"significant at {verdict.alpha:g}"
        if verdict.significant
        else ("not an improvement" if not verdict.improved else f"not significant at {verdict.alpha:g}")
    )
    return (
        f"{metric}: {cand_label} {c.mean:.4g} ± {c.std:.2g} (n={c.n}, {c.source}) vs {holder_label} "
        f"{h.mean:.4g} ± {h.std:.2g} (n={h.n}, {h.source}); difference {verdict.diff:+.4g} "
        f"({level} CI {verdict.ci_low:+.4g} .. {verdict.ci_high:+.4g}), "
        f"one-sided Welch{' (Nadeau-Bengio fold correction)' if verdict.correction else ''} "
        f"p={verdict.p_value:.3g}: {outcome}"
    )


@dataclass(frozen=True)
class SignificanceOutcome:
    check: GateCheck
    verdict: Verdict | None  # None when the gate could not judge


def significance_gate(
    client: MlflowClient,
    *,
    metric: str,
    mode: str,
    alpha: float,
    candidate: tuple[str, str | None],  # (label such as "v5", source run id)
    holder: tuple[str, str | None],
) -> SignificanceOutcome:
    """Judge the candidate against the holder; a GateCheck named "significance", passed or not."""
    cand = sample_for(client, candidate[1], metric)
    hold = sample_for(client, holder[1], metric)
    for label, found in ((candidate[0], cand), (holder[0], hold)):
        if isinstance(found, str):
            return SignificanceOutcome(
                GateCheck("significance", False, f"cannot judge significance: {label}: {found}"), None
            )
    assert isinstance(cand, Sample) and isinstance(hold, Sample)
    for label, sample in ((candidate[0], cand), (holder[0], hold)):
        if sample.n < 2:
            why = f"cannot judge significance: {label} has a single draw of {metric} ({sample.source})"
            return SignificanceOutcome(GateCheck("significance", False, why), None)
    verdict = welch(cand.values, hold.values, mode, alpha, candidate_kind=cand.kind, holder_kind=hold.kind)
    verdict = _with_sources(verdict, cand, hold)
    detail = describe(verdict, metric, candidate[0], holder[0])
    return SignificanceOutcome(GateCheck("significance", verdict.significant, detail), verdict)
