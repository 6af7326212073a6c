"""Drift tests in core.profile: p-values per feature, Holm's correction over a window, what counts as drifted.

.venv/bin/python -m pytest tests/core/test_profile_tests.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from core.profile import (
    DRIFT_ALPHA,
    FeatureDrift,
    categorical_profile,
    correct,
    homogeneity_p,
    ks_p_value,
    numeric_profile,
    score,
    window_drifted,
)


def test_numeric_p_value_follows_the_shift_and_the_window_size() -> None:
    rng = np.random.default_rng(0)
    reference = numeric_profile(rng.normal(size=2000))
    assert score(reference, rng.normal(size=500)).p_value > 0.01
    shifted = score(reference, rng.normal(size=500) + 0.5)
    assert shifted.p_value < 1e-6 and shifted.level == "shift"
    assert ks_p_value(0.1, 50, 2000) > ks_p_value(0.1, 500, 2000) > ks_p_value(0.1, 5000, 2000)
    assert ks_p_value(0.0, 500, 2000) == 1.0


def test_a_feature_that_stops_arriving_and_a_new_category_are_drift() -> None:
    rng = np.random.default_rng(1)
    reference = numeric_profile(rng.normal(size=1000))
    gone = score(reference, np.full(50, np.nan))
    assert gone.missing_live == 1.0 and gone.p_value < 1e-10 and gone.level == "shift"
    codes = categorical_profile(rng.choice(["a", "b"], 1000))
    assert score(codes, rng.choice(["a", "b"], 400)).p_value > 0.01
    assert score(codes, ["a"] * 190 + ["b"] * 190 + ["new"] * 20).p_value < 1e-6
    assert homogeneity_p([10, 0], [0, 0]) == 1.0


def test_holm_correction_over_the_window() -> None:
    def drift(p: float) -> FeatureDrift:
        return FeatureDrift(0.0, None, 100, 100, p_value=p)

    raw = {"a": drift(0.004), "b": drift(0.003), "c": drift(0.5)}
    assert all(d.drifted for d in (raw["a"], raw["b"]))  # uncorrected, each alone is significant at 0.01
    fixed = correct(raw)
    assert fixed["b"].adjusted_p == pytest.approx(0.009) and fixed["a"].adjusted_p == pytest.approx(0.009)
    assert fixed["c"].adjusted_p == pytest.approx(0.5) and window_drifted(fixed) == ["a", "b"]
    assert window_drifted(correct({**raw, "d": drift(0.6), "e": drift(0.7)})) == []  # 5 features: 0.015 > alpha
    assert DRIFT_ALPHA == 0.01 and list(fixed) == list(raw)
