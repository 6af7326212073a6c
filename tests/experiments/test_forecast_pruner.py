"""kiln tune's default pruner (`forecast`): prunes a trial that has levelled off behind the best complete trial by
more than the curves' noise can explain, keeps one still rising fast enough to catch up, in both directions.

.venv/bin/python -m pytest tests/experiments/test_forecast_pruner.py -q
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from experiments.tune import NOISE_ATTR, curve_noise, make_pruner


def _study(direction: str, noise: float | None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, pruner=make_pruner("forecast", trials=10, budget=10))
    sign = 1 if direction == "maximize" else -1
    for final in (0.6, 0.7, 0.8):  # three complete trials, levelled at their final value
        trial = study.ask()
        for step in range(1, 11):
            trial.report(sign * final * min(1.0, step / 3), step)
        if noise is not None:
            trial.set_user_attr(NOISE_ATTR, noise)
        study.tell(trial, sign * final)
    return study


def _pruned_at(study: optuna.Study, curve: list[float]) -> int | None:
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    trial = study.ask()
    for step, value in enumerate(curve, start=1):
        trial.report(sign * value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step
    study.tell(trial, sign * curve[-1])
    return None


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_levelled_trial_behind_the_best_is_pruned_after_half_the_budget(direction: str) -> None:
    study = _study(direction, noise=0.01)
    assert _pruned_at(study, [0.5] * 10) == 5  # judged from half the budget, 0.3 behind with no slope


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_rising_trial_and_one_within_the_noise_are_kept(direction: str) -> None:
    assert _pruned_at(_study(direction, noise=0.01), [0.1 * s for s in range(1, 11)]) is None  # rising 0.1 an epoch
    assert _pruned_at(_study(direction, noise=0.01), [0.78] * 10) is None  # 0.02 behind: within 3 noise sds
    assert _pruned_at(_study(direction, noise=0.01), [0.76] * 10) == 5  # 0.04 behind: beyond them


def test_no_noise_estimate_means_no_pruning() -> None:
    assert _pruned_at(_study("maximize", noise=None), [0.1] * 10) is None


def test_curve_noise_recovers_the_noise_of_a_linear_trend() -> None:
    import random

    rng = random.Random(0)
    values = [0.01 * t + rng.gauss(0, 0.02) for t in range(400)]
    assert curve_noise(values) == pytest.approx(0.02, rel=0.2)
    assert curve_noise([0.5, 0.6]) is None
