"""Reference profiles of a model's inputs and outputs, and the drift scores that compare live traffic with them.

    python -c "import numpy as np; from core.profile import numeric_profile, score; \
r = numeric_profile(np.random.randn(2000)); print(score(r, np.random.randn(500) + 1))"

Training logs a profile with the model (serving/runtime/profiling.py builds it at export); the server keeps the same
statistics over a rolling window of live traffic and scores each feature against the reference:
- numeric features: the reference's deciles cut the axis into bins; the population stability index (PSI) compares
  the share of reference and live values per bin, and a Kolmogorov-Smirnov statistic compares the live values with
  the reference's percentile curve (101 points, linear in between);
- categorical features (class labels, small integer codes): PSI over the category shares, unseen ones pooled.
PSI reads as usual: under 0.1 stable, 0.1-0.2 moderate shift, over 0.2 large; it measures how far, not whether.
Whether a window has drifted is a test per feature with a p-value (`FeatureDrift.p_value`): numeric features by
KS against the reference curve (the exact one-sample distribution at the effective size n*m/(n+m) of a live
window of n and a reference of m) and a Fisher test of the missing share; categorical features by a chi-square
test of homogeneity of the two samples' category counts (an unseen category counts against the reference's
none). A window alarms when any feature's Holm-adjusted p-value (`correct`, over every feature scored together)
is below DRIFT_ALPHA: at most a 1% chance per window that an in-distribution window alarms, however many
features the model has (docs/decisions.md measures it). Such a feature's level is "shift".
Image statistics (brightness, contrast, sharpness) are defined here once, on 0-255 gray pixels, so that training
and serving compute the same numbers. Pure numpy: no kiln import, usable from any layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

PROFILE_FORMAT = 1
BINS = 10  # deciles of the reference: each bin holds a tenth of it
TOP_CATEGORIES = 50  # categories kept by name; the rest are pooled as OTHER
OTHER = "__other__"
EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
PSI_MODERATE = 0.1
PSI_SHIFT = 0.2
DRIFT_ALPHA = 0.01  # the chance that a window of in-distribution traffic raises drift, over all features together


@dataclass(frozen=True)
class NumericProfile:
    """A numeric feature of the reference: its deciles as bins, its percentile curve, its share of missing."""

    edges: tuple[float, ...]  # inner bin edges (increasing); len(edges) + 1 bins
    shares: tuple[float, ...]  # share of the reference's finite values in each bin
    percentiles: tuple[float, ...]  # 0th..100th percentile (101 values): the reference CDF for KS
    count: int  # finite reference values
    missing: float  # share of NaN (or None) in the reference
    mean: float
    std: float
    kind: str = field(default="numeric", init=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "edges": list(self.edges), "shares": list(self.shares),
            "percentiles": list(self.percentiles), "count": self.count, "missing": self.missing,
            "mean": self.mean, "std": self.std,
        }  # fmt: skip


@dataclass(frozen=True)
class CategoricalProfile:
    """A categorical feature of the reference: the share of each category (the rare ones pooled as OTHER)."""

    shares: dict[str, float]
    count: int
    kind: str = field(default="categorical", init=False)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "shares": dict(self.shares), "count": self.count}


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class Profile:
    """Every input and output feature of a model's reference data, keyed by feature name."""

    inputs: dict[str, FeatureProfile]
    outputs: dict[str, FeatureProfile]
    rows: int  # reference samples the profile was built from
    source: str = ""  # what the samples were ("validation split", "input example", ...)

    def features(self) -> dict[str, FeatureProfile]:
        return {
            **{f"input.{k}": v for k, v in self.inputs.items()},
            **{f"output.{k}": v for k, v in self.outputs.items()},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT, "rows": self.rows, "source": self.source,
            "inputs": {k: v.to_json() for k, v in self.inputs.items()},
            "outputs": {k: v.to_json() for k, v in self.outputs.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        """Parse a profile written by `to_json`; ValueError names what is wrong."""
        if not isinstance(data, Mapping) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a kiln profile of format {PROFILE_FORMAT}")
        return cls(
            inputs={str(k): _feature_from_json(str(k), v) for k, v in dict(data.get("inputs") or {}).items()},
            outputs={str(k): _feature_from_json(str(k), v) for k, v in dict(data.get("outputs") or {}).items()},
            rows=int(data.get("rows", 0)),
            source=str(data.get("source", "")),
        )


def _feature_from_json(name: str, data: Any) -> FeatureProfile:
    try:
        if data["kind"] == "numeric":
            return NumericProfile(
                edges=tuple(float(x) for x in data["edges"]), shares=tuple(float(x) for x in data["shares"]),
                percentiles=tuple(float(x) for x in data["percentiles"]), count=int(data["count"]),
                missing=float(data["missing"]), mean=float(data["mean"]), std=float(data["std"]),
            )  # fmt: skip
        if data["kind"] == "categorical":
            return CategoricalProfile(
                shares={str(k): float(v) for k, v in data["shares"].items()}, count=int(data["count"])
            )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"profile feature {name!r} is malformed: {err}") from None
    raise ValueError(f"profile feature {name!r} has unknown kind {data.get('kind')!r}")


# --- building ---------------------------------------------------------------------------------------------


def numeric_profile(values: Iterable[float] | np.ndarray, bins: int = BINS) -> NumericProfile:
    """Deciles (or `bins` quantiles) of the finite values as bin edges, and the percentile curve."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = array[np.isfinite(array)]
    missing = float(1 - len(finite) / len(array)) if len(array) else 0.0
    if len(finite) == 0:
        return NumericProfile((), (1.0,), (), 0, missing, math.nan, math.nan)
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = _bin_counts(finite, edges) / len(finite)
    percentiles = np.quantile(finite, np.linspace(0, 1, 101))
    return NumericProfile(
        tuple(float(e) for e in edges), tuple(float(s) for s in shares), tuple(float(p) for p in percentiles),
        int(len(finite)), missing, float(finite.mean()), float(finite.std()),
    )  # fmt: skip


def categorical_profile(values: Iterable[Any], top: int = TOP_CATEGORIES) -> CategoricalProfile:
    """The share of each category (as text); beyond the `top` most frequent, pooled as OTHER."""
    labels = [category(v) for v in values]
    if not labels:
        return CategoricalProfile({}, 0)
    names, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shares = {str(names[i]): float(counts[i] / len(labels)) for i in order[:top]}
    rest = float(counts[order[top:]].sum() / len(labels))
    if rest > 0:
        shares[OTHER] = rest
    return CategoricalProfile(shares, len(labels))


def category(value: Any) -> str:
    """One value as a category name: integral floats lose their '.0', so 1 and 1.0 are the same class."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def looks_categorical(values: np.ndarray, max_levels: int = 20) -> bool:
    """A numeric column of few whole-number levels (codes, flags) is profiled by category, not by decile."""
    finite = values[np.isfinite(values)]
    return bool(len(finite)) and bool(np.all(finite == np.round(finite))) and len(np.unique(finite)) <= max_levels


def column_profile(values: np.ndarray) -> FeatureProfile:
    """Categorical for few whole-number levels, numeric otherwise."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return categorical_profile(array[np.isfinite(array)]) if looks_categorical(array) else numeric_profile(array)


def build_profile(
    inputs: Mapping[str, Sequence[Any] | np.ndarray],
    outputs: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    rows: int,
    source: str = "",
    categorical: Iterable[str] = (),
) -> Profile:
    """A profile from per-feature value lists; names in `categorical` (or that look it) are profiled by category."""
    forced = set(categorical)

    def one(name: str, values: Sequence[Any] | np.ndarray) -> FeatureProfile:
        if name in forced:
            return categorical_profile(values)
        return column_profile(np.asarray(values, dtype=np.float64))

    return Profile(
        inputs={k: one(k, v) for k, v in inputs.items()},
        outputs={k: one(k, v) for k, v in outputs.items()},
        rows=rows,
        source=source,
    )


# --- image statistics -------------------------------------------------------------------------------------


def gray_pixels(image: np.ndarray) -> np.ndarray:
    """HxW or HxWxC (or CxHxW when C is 1 or 3 and H, W are larger) 0-255 values -> float32 HxW gray."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[2] not in (1, 3):
        x = x.transpose(1, 2, 0)
    if x.ndim == 3:
        x = x[:, :, 0] if x.shape[2] == 1 else x[:, :, :3] @ np.array([0.114, 0.587, 0.299], np.float32)[: x.shape[2]]
    return x


def image_stats(gray: np.ndarray) -> dict[str, float]:
    """Brightness (mean), contrast (standard deviation) and sharpness (variance of the 4-neighbour Laplacian) of
    a 0-255 gray image; a blurred or out-of-focus camera shows as a sharpness drop."""
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2 or g.shape[0] < 3 or g.shape[1] < 3:
        return {"brightness": float(g.mean()), "contrast": float(g.std()), "sharpness": 0.0}
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return {"brightness": float(g.mean()), "contrast": float(g.std()), "sharpness": float(laplacian.var())}


# --- scoring ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: PSI (always), KS (numeric features), and how many live values were scored.

    PSI grows with sampling noise as samples shrink (about (bins - 1) * (1/n + 1/m) with no drift at all), so a
    level needs PSI above both the usual cut and `noise`: the PSI that chance alone exceeds once in a hundred
    (PSI * n*m/(n+m) is close to chi-square with bins - 1 degrees of freedom when nothing changed)."""

    psi: float
    ks: float | None
    live: int
    reference: int
    missing_live: float = 0.0
    missing_reference: float = 0.0
    bins: int = BINS
    p_value: float = 1.0  # this feature alone: how likely a difference this large is with no drift
    adjusted_p: float | None = None  # Holm-adjusted over every feature of the window (`correct`)

    @property
    def noise(self) -> float:
        if not self.live or not self.reference:
            return math.inf
        from scipy.stats import chi2

        effective = self.live * self.reference / (self.live + self.reference)
        return float(chi2.ppf(0.99, max(self.bins - 1, 1))) / effective

    @property
    def drifted(self) -> bool:
        """Significant at DRIFT_ALPHA after the correction for the window's number of features."""
        return (self.p_value if self.adjusted_p is None else self.adjusted_p) < DRIFT_ALPHA

    @property
    def level(self) -> str:
        if self.drifted:
            return "shift"
        return "moderate" if self.psi > max(PSI_MODERATE, self.noise) else "stable"

    def to_json(self) -> dict[str, Any]:
        return {
            "psi": round(self.psi, 5), "ks": None if self.ks is None else round(self.ks, 5), "level": self.level,
            "noise_psi": round(self.noise, 5), "p_value": _round_p(self.p_value),
            "adjusted_p": None if self.adjusted_p is None else _round_p(self.adjusted_p),
            "live": self.live, "reference": self.reference,
            "missing_live": round(self.missing_live, 5), "missing_reference": round(self.missing_reference, 5),
        }  # fmt: skip


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected)."""
    e = np.clip(np.asarray(expected, dtype=np.float64), eps, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(percentiles: Sequence[float], values: np.ndarray) -> float:
    """Largest gap between the live values' empirical CDF and the reference's percentile curve."""
    ref = np.asarray(percentiles, dtype=np.float64)
    live = np.sort(np.asarray(values, dtype=np.float64))
    if len(ref) < 2 or len(live) == 0:
        return 0.0
    levels = np.linspace(0, 1, len(ref))
    points = np.concatenate([live, ref])
    ref_cdf = np.interp(points, ref, levels, left=0.0, right=1.0)
    below = np.searchsorted(live, points, side="left") / len(live)
    at_or_below = np.searchsorted(live, points, side="right") / len(live)
    return float(max(np.abs(at_or_below - ref_cdf).max(), np.abs(below - ref_cdf).max()))


def score(reference: FeatureProfile, values: Sequence[Any] | np.ndarray) -> FeatureDrift:
    """Drift of live `values` against one reference feature."""
    if isinstance(reference, CategoricalProfile):
        return _score_categorical(reference, values)
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = array[np.isfinite(array)]
    missing = float(1 - len(finite) / len(array)) if len(array) else 0.0
    p_missing = _missing_p(reference, len(array), missing)
    if not len(finite) or not reference.count:
        value = _missing_psi(reference.missing, missing)
        return FeatureDrift(value, None, len(finite), reference.count, missing, reference.missing, p_value=p_missing)
    edges = np.asarray(reference.edges)
    live_shares = _bin_counts(finite, edges) / len(finite)
    value = psi(reference.shares, live_shares) + _missing_psi(reference.missing, missing)
    ks = ks_statistic(reference.percentiles, finite)
    p_value = min(1.0, 2 * min(ks_p_value(ks, len(finite), reference.count), p_missing))  # two tests: Bonferroni
    return FeatureDrift(value, ks, len(finite), reference.count, missing, reference.missing, len(reference.shares),
                        p_value)  # fmt: skip


def _score_categorical(reference: CategoricalProfile, values: Sequence[Any] | np.ndarray) -> FeatureDrift:
    labels = [category(v) for v in np.asarray(values, dtype=object).reshape(-1)]
    if not labels or not reference.count:
        return FeatureDrift(0.0, None, len(labels), reference.count)
    known = set(reference.shares)
    pooled = [v if v in known else OTHER for v in labels]
    names = sorted(known | {OTHER})
    expected = [reference.shares.get(n, 0.0) for n in names]
    counts = [pooled.count(n) for n in names]
    actual = [c / len(pooled) for c in counts]
    p_value = homogeneity_p([e * reference.count for e in expected], counts)
    return FeatureDrift(psi(expected, actual), None, len(labels), reference.count, bins=len(names), p_value=p_value)


# --- the tests behind `drifted` ---------------------------------------------------------------------------


def ks_p_value(ks: float, live: int, reference: int) -> float:
    """P(KS >= ks) with no drift, for a live window of `live` values against a reference of `reference`: the exact
    one-sample distribution at the effective size live*reference/(live+reference) (the two-sample statistic's)."""
    if live <= 0 or reference <= 0 or ks <= 0:
        return 1.0
    from scipy.stats import kstwo

    effective = max(1, round(live * reference / (live + reference)))
    return float(kstwo.sf(ks, effective))


def _missing_p(reference: NumericProfile, live_total: int, live_missing: float) -> float:
    """Fisher's exact test: is the live window's share of missing values different from the reference's?"""
    if live_total <= 0 or reference.count <= 0 or live_missing == reference.missing:
        return 1.0
    from scipy.stats import fisher_exact

    ref_total = round(reference.count / (1 - reference.missing)) if reference.missing < 1 else reference.count
    ref_missing = ref_total - reference.count
    live_nan = round(live_missing * live_total)
    table = [[live_nan, live_total - live_nan], [ref_missing, reference.count]]
    return float(fisher_exact(table).pvalue)


def homogeneity_p(reference_counts: Sequence[float], live_counts: Sequence[int]) -> float:
    """Chi-square test that two samples' category counts come from one distribution (categories empty in both
    are dropped); 1.0 when there is nothing to compare."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    live = np.asarray(live_counts, dtype=np.float64)
    keep = (ref + live) > 0
    if keep.sum() < 2 or ref.sum() <= 0 or live.sum() <= 0:
        return 1.0
    from scipy.stats import chi2

    table = np.stack([ref[keep], live[keep]])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return float(chi2.sf(statistic, keep.sum() - 1))


def correct(scores: Mapping[str, FeatureDrift]) -> dict[str, FeatureDrift]:
    """Holm's step-down adjustment of every feature's p-value over the whole window: a window alarms (some
    feature `drifted`) with probability at most DRIFT_ALPHA when nothing drifted, however many features."""
    order = sorted(scores, key=lambda name: scores[name].p_value)
    count, running = len(order), 0.0
    out: dict[str, FeatureDrift] = {}
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (count - rank) * scores[name].p_value))
        out[name] = replace(scores[name], adjusted_p=running)
    return {name: out[name] for name in scores}


def window_drifted(scores: Mapping[str, FeatureDrift]) -> list[str]:
    """The features of a corrected window (`correct`) that drifted."""
    return sorted(name for name, drift in scores.items() if drift.drifted)


def _round_p(p: float) -> float:
    return float(f"{p:.3g}")


def _missing_psi(expected: float, actual: float) -> float:
    """The missing-value share as one more two-bin term: a feature that stops arriving is drift too."""
    if expected == actual:
        return 0.0
    return psi([1 - expected, expected], [1 - actual, actual])


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # right=True: a value equal to an edge goes to the lower bin, as np.quantile's edges were taken
    return np.bincount(np.digitize(values, edges, right=True), minlength=len(edges) + 1).astype(np.float64)
