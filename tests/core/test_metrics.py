"""core.metrics: the one mask IoU and the one box IoU."""

from __future__ import annotations

import numpy as np
import pytest

from core.metrics import box_iou, mask_iou, overlap_sums, pooled_iou


def test_mask_iou_counts_positive_pixels_and_two_empty_masks_agree() -> None:
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 255
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3), bool)) == 1.0
    assert mask_iou(a, a) == 1.0


def test_mask_iou_refuses_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(2, 2\)"):
        mask_iou(np.ones((4, 4)), np.ones((2, 2)))


def test_box_iou_pairwise_and_single_boxes() -> None:
    a = [[0, 0, 2, 2], [10, 10, 11, 11]]
    b = [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 5, 5]]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1 / 7, 1.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])
    assert box_iou([0, 0, 4, 4], [2, 0, 6, 4])[0, 0] == pytest.approx(8 / 24)
    assert box_iou([], b).shape == (0, 3)


def test_box_iou_names_a_bad_shape() -> None:
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


def test_pooled_iou_sums_intersections_and_unions_over_masks() -> None:
    small = (np.array([True, False]), np.array([True, True]))  # 1/2
    large = (np.ones(8, bool), np.ones(8, bool))  # 8/8
    sums = [overlap_sums(*small), overlap_sums(*large)]
    assert pooled_iou(sum(s[0] for s in sums), sum(s[1] for s in sums)) == pytest.approx(9 / 10)  # not (0.5+1)/2
    assert pooled_iou(0.0, 0.0) == 1.0 and mask_iou(*small) == pooled_iou(*overlap_sums(*small)) == 0.5
