"""Sequential guard-rail tests: valid under the null however often they are checked, quick on a real breakage.

.venv/bin/python -m pytest tests/registry/test_sequential.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from registry.sequential import ArmTest, MeanTest, RailMonitor, threshold


def test_arm_test_counts_events_against_the_share() -> None:
    test = ArmTest()
    for _ in range(6):
        test.add(True, 0.1)  # six events, all on a side that answers 10% of requests
    assert test.rejects(0.0025) and test.candidate_events == 6
    fair = ArmTest()
    for i in range(400):
        fair.add(i % 10 == 0, 0.1)  # events exactly in proportion: evidence for the null
    assert fair.e_value < 1 and not fair.rejects(0.0025)
    fair.add(True, 0.0)  # no traffic on one side: nothing learned
    assert fair.events == 400


def test_arm_test_rarely_crosses_under_the_null_however_long_it_runs() -> None:
    rng = np.random.default_rng(0)
    crossed = 0
    for _ in range(300):
        test = ArmTest()
        for on_candidate in rng.random(300) < 0.2:  # 300 events, each on the candidate with probability 0.2
            test.add(bool(on_candidate), 0.2)
            if test.rejects(0.05):
                crossed += 1
                break
    assert crossed / 300 <= 0.05  # checked after every event, still within alpha (Ville)


def test_mean_test_directions_and_bounds() -> None:
    low = MeanTest(0.8, "below")
    for _ in range(80):
        low.add(0.3)
    assert low.rejects(0.0025) and low.mean == pytest.approx(0.3)
    high = MeanTest(0.05, "above")
    for _ in range(30):
        high.add(1.0)
    assert high.rejects(0.0025)
    fine = MeanTest(0.8, "below")
    for x in np.random.default_rng(1).beta(18, 2, 2000):
        fine.add(float(x))
    assert not fine.rejects(0.0025)
    with pytest.raises(ValueError, match="direction"):
        MeanTest(0.5, "sideways")
    with pytest.raises(ValueError, match="alpha"):
        threshold(0)


def test_monitor_keeps_a_noisy_identical_candidate_and_names_a_broken_one() -> None:
    rng = np.random.default_rng(2)
    same, broken = RailMonitor(), RailMonitor()
    for i in range(5000):
        latency = float(rng.lognormal(np.log(0.02), 0.4))
        error = bool(rng.random() < 0.002)
        same.record(i % 10 == 0, error, latency)
        broken.record(i % 10 == 0, error or (i % 10 == 0 and rng.random() < 0.2), latency)
        same.compared(1.0)
    assert same.failure() is None and same.to_json()["production_p99_ms"] is not None
    failure = broken.failure()
    assert failure is not None and failure.failed == "error_rate" and "came from the candidate" in failure.detail


def test_monitor_defaults_are_the_guard_rails_defaults() -> None:
    from registry.canary import GuardRails

    guards, monitor = GuardRails(), RailMonitor()
    assert (monitor.max_error_rate, monitor.max_p99_ratio, monitor.min_agreement, monitor.min_requests) == (
        guards.max_error_rate, guards.max_p99_ratio, guards.min_agreement, guards.min_requests,
    )  # fmt: skip
