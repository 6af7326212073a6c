"""The shadow's share of the off-path worker grows into production's idle time and shrinks under load.

.venv/bin/python -m pytest tests/serving/test_offpath_share.py -q
"""

from __future__ import annotations

import pytest

from serving.rollout.offpath import IDLE_USE, IdleShare, OffPath, adaptive_budget


def test_idle_share_weights_recent_time() -> None:
    now = [0.0]
    idle = IdleShare(half_life_s=10.0, clock=lambda: now[0])
    now[0] = 3.0
    idle.mark(False)  # idle for 3 s, then busy
    now[0] = 4.0
    assert idle.share() == pytest.approx(0.75, abs=0.02)
    now[0] = 100.0  # busy for a long time: the old idle time is forgotten
    assert idle.share() < 0.01


def test_adaptive_budget_and_offpath_use_it_only_for_adaptive_kinds() -> None:
    assert adaptive_budget(0.03, 0.0) == 0.03 and adaptive_budget(0.03, 1.0) == IDLE_USE
    offpath = OffPath(budgets={"shadow": 0.03, "drift": 0.02}, adaptive=frozenset({"shadow"}))
    assert offpath.budget("shadow") == pytest.approx(IDLE_USE)  # nothing in flight yet: all idle
    assert offpath.budget("drift") == 0.02 and offpath.budget("other") == 1.0
    offpath.close()
