"""Fixtures for the experiment commands: a 60-row CSV skinmodel trains on in about a second, and a sqlite store.

.venv/bin/python -m pytest tests/experiments -q
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """60 rows, 4 numeric features, a binary label that depends on two of them (30/30 is not forced)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=60) > 0).astype(int)
    path = tmp_path / "tiny.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d", "label"])
        writer.writerows([*np.round(row, 4), label] for row, label in zip(x, y, strict=True))
    return path


@pytest.fixture
def skin_sets(tiny_csv: Path) -> dict[str, str]:
    """Overrides that make skinmodel train on the tiny CSV in 30 shallow rounds."""
    # register=always: these tests are about which run registers; on 12 validation rows a model of this CSV is
    # not always significantly above AUC 0.5, which register=auto asks (tests/projects/common/test_registration*)
    return {"data": str(tiny_csv), "target": "label", "n_estimators": "30", "early_stopping_rounds": "0",
            "register": "always"}  # fmt: skip


@pytest.fixture
def kiln_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Optuna's default sqlite storage goes under KILN_HOME."""
    home = tmp_path / "kiln-home"
    monkeypatch.setenv("KILN_HOME", str(home))
    return home
