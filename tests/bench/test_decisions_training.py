"""The training side's decision bench, seeded and small: every row with a target meets it.

.venv/bin/python -m pytest tests/bench/test_decisions_training.py -q
"""

from __future__ import annotations

import pytest

from bench import decisions, decisions_training
from bench.decision_rows import Row


def assert_targets_met(rows: list[Row]) -> None:
    assert rows
    missed = [f"{r.measure}: {r.rate:.4f} (target {r.target})" for r in rows if r.met is False]
    assert not missed, missed


def test_runner_merges_the_training_simulations() -> None:
    assert set(decisions_training.SIMULATIONS) <= set(decisions.all_simulations())


@pytest.mark.slow  # the same simulation runs unmarked in tests/experiments/test_advise_sim.py
def test_advise_rows_cover_every_kind_and_the_hard_rules() -> None:
    rows = decisions_training.advise(quick=True, seed=1)
    assert_targets_met(rows)
    measures = {r.measure for r in rows}
    assert "missed not_learning (1 - recall)" in measures and "false noisy_validation (1 - precision)" in measures
    assert all(r.misses == 0 for r in rows if r.measure == "healthy verdict for a run stuck at its baseline")


def test_pruning_default_never_loses_the_best_config() -> None:
    """kiln tune's default (forecast) keeps the best config in every seeded search and still saves epochs; the full
    300 searches on seeds 0 and 1 lose it 0 times too (docs/decisions.md). Seed 4's 25 searches are hard ones: the
    median pruner, kiln's old default, loses the best config in 2 of them."""
    rows = decisions_training.pruning(quick=True, seed=4)
    assert_targets_met(rows)
    forecast = next(r for r in rows if r.measure == "best config pruned, forecast pruner")
    assert forecast.target == "<= 0" and forecast.misses == 0, "kiln tune's default pruned the best config"
    assert forecast.detail["epochs_saved_share"] > 0.2
    assert next(r for r in rows if r.measure == "best config pruned, median pruner").misses >= 1
    names = {r.measure.rsplit(", ", 1)[1] for r in rows}
    assert names == {"forecast pruner", "median pruner", "median-late pruner", "hyperband pruner"}


def test_int8_gate_refuses_slower_and_bigger_and_keeps_faster() -> None:
    rows = decisions_training.int8_gate(quick=True, seed=0)
    assert_targets_met(rows)
    assert next(r for r in rows if r.measure == "int8 at 0.5x fp32's latency refused").false_alarms == 0


def test_cv_intervals_stay_in_range() -> None:
    rows = decisions_training.cv_interval(quick=True, seed=0)
    assert_targets_met(rows)
    assert all(r.false_alarms == 0 and r.detail["coverage_of_true_mean"] > 0.85 for r in rows)
