"""The one intersection-over-union for masks and the one for boxes, used by training plots, the detection mAP,
the shadow's agreement and the synthetic data generator alike.

    python -c "import numpy as np; from core.metrics import box_iou, mask_iou; \
print(box_iou([0, 0, 2, 2], [[1, 1, 3, 3], [0, 0, 2, 2]]), mask_iou(np.eye(3), np.ones((3, 3))))"

Pure numpy: no kiln import, usable from any layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def mask_iou(a: ArrayLike, b: ArrayLike) -> float:
    """IoU of two masks of one shape, a pixel counting where it is > 0 (bool, 0/1 or 0-255 masks alike).

    Two empty masks agree completely: 1.0. Masks of different shapes raise ValueError naming both shapes.
    """
    left, right = np.asarray(a) > 0, np.asarray(b) > 0
    if left.shape != right.shape:
        raise ValueError(f"mask_iou needs masks of one shape, got {left.shape} and {right.shape}")
    return pooled_iou(*overlap_sums(left, right))


def overlap_sums(pred: Any, truth: Any) -> tuple[float, float]:
    """(intersection, union) pixel counts of two boolean masks: numpy arrays or torch tensors of one shape.
    Summed over many masks they give the pooled IoU (`pooled_iou`), as training and evaluation report it."""
    return float((pred & truth).sum()), float((pred | truth).sum())


def pooled_iou(intersection: float, union: float) -> float:
    """IoU from summed intersections and unions (not a mean of per-image ratios); nothing on either side: 1.0."""
    return intersection / union if union else 1.0


def box_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """IoU of every box in `a` with every box in `b`, boxes as (x0, y0, x1, y1): [N, 4] x [M, 4] -> [N, M].

    A single box may be given as 4 numbers (it counts as N = 1). Boxes with no area and disjoint boxes give 0.
    """
    left, right = _boxes(a), _boxes(b)
    if left.shape[-1] != 4 or right.shape[-1] != 4 or left.ndim != 2 or right.ndim != 2:
        raise ValueError(f"box_iou needs [N, 4] and [M, 4] boxes (x0, y0, x1, y1), got {left.shape} and {right.shape}")
    if left.shape[0] == 0 or right.shape[0] == 0:
        return np.zeros((left.shape[0], right.shape[0]))
    top_left = np.maximum(left[:, None, :2], right[None, :, :2])
    bottom_right = np.minimum(left[:, None, 2:], right[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(left[:, 2:] - left[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(right[:, 2:] - right[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0))


def _boxes(value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    return array.reshape(0, 4) if array.size == 0 else np.atleast_2d(array)
