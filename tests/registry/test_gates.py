"""Gates, metric choice and mode inference: pure functions, no store.

.venv/bin/python -m pytest tests/registry/test_gates.py -q
"""

from __future__ import annotations

import pytest

from registry.errors import InvalidRequestError
from registry.gates import GateInput, choose_metric, infer_mode, run_gates


def gate_input(**overrides: object) -> GateInput:
    base: dict[str, object] = dict(
        model="m", alias="production", version=3, metric="val_iou", mode="max", value=0.8,
        min_value=None, max_value=None, current_version=2, current_value=0.7,
    )  # fmt: skip
    base.update(overrides)
    return GateInput(**base)


@pytest.mark.parametrize(
    ("metric", "mode"),
    [("val_loss", "min"), ("val_iou", "max"), ("rmse", "min"), ("val_mAP50", "max"), ("epoch_seconds", "min")],
)
def test_infer_mode_lower_is_better_only_for_losses_errors_and_times(metric: str, mode: str) -> None:
    assert infer_mode(metric) == mode


def test_candidate_better_than_current_passes_naming_both_numbers() -> None:
    (check,) = run_gates(gate_input())
    assert check.passed and check.gate == "current"
    assert "0.8" in check.detail and "0.7" in check.detail and "production v2" in check.detail


def test_worse_than_current_fails_with_both_numbers() -> None:
    (check,) = run_gates(gate_input(value=0.65))
    assert not check.passed
    assert check.detail == "val_iou 0.65 is worse than production v2's 0.7 (higher is better)"


def test_lower_is_better_mode_flips_the_comparison() -> None:
    (check,) = run_gates(gate_input(metric="val_loss", mode="min", value=0.2, current_value=0.3))
    assert check.passed
    (check,) = run_gates(gate_input(metric="val_loss", mode="min", value=0.4, current_value=0.3))
    assert not check.passed and "lower is better" in check.detail


def test_a_tie_with_the_current_version_passes() -> None:
    assert all(c.passed for c in run_gates(gate_input(value=0.7)))


def test_min_and_max_bounds() -> None:
    checks = {c.gate: c for c in run_gates(gate_input(value=0.6, min_value=0.65, max_value=0.9, current_version=None))}
    assert set(checks) == {"min", "max"}
    assert not checks["min"].passed and checks["min"].detail == "val_iou 0.6 is below --min 0.65"
    assert checks["max"].passed


def test_current_without_the_metric_cannot_be_compared() -> None:
    (check,) = run_gates(gate_input(current_value=None))
    assert not check.passed and "cannot compare with production v2" in check.detail


def test_missing_candidate_metric_is_a_failed_gate() -> None:
    (check,) = run_gates(gate_input(value=None, min_value=0.5))
    assert (check.gate, check.passed) == ("logged", False)


def test_no_gate_applies_to_a_first_promotion_without_bounds() -> None:
    assert run_gates(gate_input(current_version=None)) == ()


def test_choose_metric_prefers_flag_then_version_then_run_then_model() -> None:
    version = {"kiln.metric": "val_dice"}
    run = {"kiln.metric": "val_loss", "kiln.mode": "min"}
    model = {"kiln.metric": "val_iou", "kiln.mode": "max"}
    hints = [("version tag", version), ("run tag", run), ("model tag", model)]
    assert choose_metric("val_acc", None, hints).metric == "val_acc"
    assert choose_metric(None, None, hints).source == "version tag kiln.metric"
    choice = choose_metric(None, None, hints[1:])
    assert choice is not None and (choice.metric, choice.mode, choice.source) == (
        "val_loss",
        "min",
        "run tag kiln.metric",
    )
    assert choose_metric(None, None, []) is None


def test_hint_mode_applies_only_to_the_metric_it_names() -> None:
    hints = [("model tag", {"kiln.metric": "val_iou", "kiln.mode": "min"})]
    assert choose_metric("val_iou", None, hints).mode == "min"
    assert choose_metric("val_loss", None, hints).mode == "min"  # inferred
    assert choose_metric("val_acc", None, hints).mode == "max"  # inferred, not the hint's
    assert choose_metric(None, "max", hints).mode == "max"  # the flag wins


def test_bad_modes_are_named() -> None:
    with pytest.raises(InvalidRequestError, match="'up'"):
        choose_metric("val_iou", "up", [])
    with pytest.raises(InvalidRequestError, match="run tag kiln.mode mode 'higher'"):
        choose_metric(None, None, [("run tag", {"kiln.metric": "val_iou", "kiln.mode": "higher"})])
