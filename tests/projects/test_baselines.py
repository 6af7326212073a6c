"""The trivial baselines families tag their runs with (`kiln.baseline`), which a first promotion is judged against.

.venv/bin/python -m pytest tests/projects/test_baselines.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from projects.skinmodel.data import Split
from projects.skinmodel.train import trivial_baseline


def _split(y_train: list[float], y_val: list[float]) -> Split:
    return Split(np.zeros((len(y_train), 1)), np.array(y_train), np.zeros((len(y_val), 1)), np.array(y_val))


def test_skinmodel_baselines_ignore_the_features() -> None:
    assert trivial_baseline("binary", _split([0, 1], [1]))[0] == 0.5
    loss, kind = trivial_baseline("multiclass", _split([0, 0, 1, 2], [0, 1]))
    assert loss == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2) and "frequencies" in kind
    rmse, _ = trivial_baseline("regression", _split([1.0, 3.0], [2.0, 4.0]))
    assert rmse == pytest.approx(math.sqrt((0 + 4) / 2))
