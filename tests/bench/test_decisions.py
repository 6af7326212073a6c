"""The decision bench's seeded small run: every serving/registry decision meets its target on labelled cases.

    .venv/bin/python -m pytest tests/bench/test_decisions.py -q

Each test runs one simulation of bench/decisions.py in its --quick size (a few seconds) and asserts that every
row with a target meets it, so a change that makes a decision worse fails here.
"""

from __future__ import annotations

import json

import pytest

from bench import decisions
from bench.decision_rows import Row, measured

REQUIRED = {"decision", "measure", "cases", "misses", "false_alarms", "rate", "ci_low", "ci_high", "target", "met"}


def assert_targets_met(rows: list[Row]) -> None:
    assert rows
    missed = [f"{r.measure}: {r.rate:.4f} (target {r.target})" for r in rows if r.met is False]
    assert not missed, missed


def test_row_shape_and_interval() -> None:
    row = measured("gate", "false promotion", 200, 3, "false_alarm", 0.05)
    assert set(row.to_json()) >= REQUIRED and row.false_alarms == 3 and row.misses == 0
    assert row.ci_low < row.rate == 0.015 < row.ci_high and row.met
    assert not measured("gate", "false promotion", 200, 30, "false_alarm", 0.05).met  # 0.15, interval above 0.05
    assert measured("rails", "rolled back", 10, 10, "power", 1.0).met
    assert not measured("rails", "rolled back", 40, 39, "power", 1.0).met
    with pytest.raises(ValueError, match="unknown row kind"):
        measured("gate", "x", 1, 0, "typo", None)


def test_significance_gate_keeps_false_promotion_under_alpha() -> None:
    rows = decisions.significance(quick=True, seed=0)
    assert_targets_met(rows)
    fresh = [r for r in rows if "fresh data, no difference" in r.measure]
    assert len(fresh) == 3 and all(r.rate <= 0.05 for r in fresh)
    assert any(r.measure.startswith("power") and r.rate > 0.1 for r in rows)  # a real 0.1 gain is found sometimes


def test_json_output_is_only_rows(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def tiny(quick: bool, seed: int) -> list[Row]:
        return [measured("tiny", f"seed {seed}, quick {quick}", 10, 0, "false_alarm", 0.1)]

    monkeypatch.setitem(decisions.SIMULATIONS, "tiny", tiny)
    assert decisions.main(["--quick", "--json", "--only", "tiny", "--seed", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [measured("tiny", "seed 3, quick True", 10, 0, "false_alarm", 0.1).to_json()]
    with pytest.raises(SystemExit, match="unknown decision"):
        decisions.main(["--quick", "--only", "nonsense"])


def test_canary_guard_rails_keep_good_candidates_and_roll_back_bad_ones() -> None:
    rows = decisions.canary(quick=True, seed=0)
    assert_targets_met(rows)
    bad = [r for r in rows if r.measure.startswith("not rolled back")]
    assert len(bad) == 4 and all(r.misses == 0 and r.detail["candidate_requests_max"] > 0 for r in bad)
    assert all(r.false_alarms == 0 for r in rows if r.measure.startswith("false rollback"))


def test_drift_alarms_rarely_in_distribution_and_finds_real_shifts() -> None:
    rows = decisions.drift(quick=True, seed=0)
    assert_targets_met(rows)
    by_measure = {r.measure: r for r in rows}
    assert by_measure["power, rows, window 500, one feature shifted 0.5 sd"].rate >= 0.9
    assert by_measure["power, rows, window 50, a feature stopped arriving"].rate == 1.0


def test_shadow_share_grows_into_idle_time_and_falls_back_under_load() -> None:
    rows = decisions.shadow(quick=True, seed=0)
    assert_targets_met(rows)
    rate = {r.measure: r.rate for r in rows}
    assert rate["compared share, load 30%, adaptive share"] > 3 * rate["compared share, load 30%, fixed 3% budget"]
    assert rate["compared share, load 98%, adaptive share"] < 0.2  # no idle time: back to about the budget


def test_registration_never_registers_a_trivial_model_and_noise_registers_at_about_alpha() -> None:
    rows = decisions.registration(quick=True, seed=0)
    assert_targets_met(rows)
    rate = {r.measure: r.rate for r in rows}
    before = {r.measure: r.detail.get("rate before (beats the baseline value)") for r in rows}
    assert rate["registered, segmentation IoU, all background model, 20 val images"] == 0.0
    assert rate["not registered, tabular binary AUC, learned, 200 val rows"] == 0.0
    noise = "registered, tabular binary AUC, did not learn (noise), 200 val rows"
    assert rate[noise] <= 0.1 and 0.2 < before[noise] < 0.8  # was: AUC > 0.5 by chance, about half the time
    seg_noise = "registered, segmentation IoU, noise (10%) model, 50 val images"
    assert rate[seg_noise] == 0.0 and before[seg_noise] == 1.0  # was: any noise beats IoU 0 of all background
