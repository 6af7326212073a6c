"""The k-fold hook: while `kiln cv` trains fold i of k, a family's train/val split returns that fold instead.

    python -c "from projects.common.folds import FoldSpec, fold_indices; print(fold_indices(10, FoldSpec(5, 0)))"

`kiln cv` (experiments/cv.py) wraps each fold's training in `using_fold(FoldSpec(k, i, seed))`; a family's split
function asks `active_fold()` and, when one is set, splits with `fold_indices` (stratified by class when it
passes labels) instead of its random hold-out. Outside `kiln cv` nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import UserError


@dataclass(frozen=True)
class FoldSpec:
    k: int  # number of folds
    index: int  # this fold, 0-based: the validation part
    seed: int = 0  # shuffles items before they are dealt into folds


_ACTIVE: list[FoldSpec] = []


@contextlib.contextmanager
def using_fold(spec: FoldSpec) -> Iterator[None]:
    if not (spec.k >= 2 and 0 <= spec.index < spec.k):
        raise UserError(f"fold {spec.index} of {spec.k} is not a valid fold (need k >= 2 and 0 <= index < k)")
    _ACTIVE.append(spec)
    try:
        yield
    finally:
        _ACTIVE.remove(spec)


def active_fold() -> FoldSpec | None:
    return _ACTIVE[-1] if _ACTIVE else None


def fold_indices(
    n: int, spec: FoldSpec, labels: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of fold `spec.index`: StratifiedKFold when `labels` are given, else KFold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n < spec.k:
        raise UserError(f"cannot make {spec.k} folds of {n} items; use fewer folds")
    if labels is not None:
        counts = np.bincount(np.asarray(labels, dtype=np.int64))
        if counts[counts > 0].min() < spec.k:
            raise UserError(f"a class has only {int(counts[counts > 0].min())} rows, fewer than {spec.k} folds")
        splits = StratifiedKFold(spec.k, shuffle=True, random_state=spec.seed).split(np.zeros(n), labels)
    else:
        splits = KFold(spec.k, shuffle=True, random_state=spec.seed).split(np.zeros(n))
    train, val = list(splits)[spec.index]
    return train, val
