"""One numpy pre-processing per resize mode, and its inverse for masks and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from core.contract import Preprocess
from core.preprocess import prepare, prepare_batch, unletterbox_boxes, unletterbox_map


def test_letterbox_pads_centred_with_pad_value() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)  # wide white image
    pre = Preprocess("rgb", (64, 64), "letterbox", scale=1.0, pad_value=114)
    x, g = prepare(image, pre)
    assert x.shape == (1, 3, 64, 64)
    assert (g.pad_top, g.pad_left, g.inner_h, g.inner_w) == (16, 0, 32, 64)
    assert x[0, 0, 0, 0] == 114 and x[0, 0, 32, 32] == 255  # border grey, image white


def test_stretch_normalises_per_channel() -> None:
    image = np.full((10, 20), 51, np.uint8)  # gray 0.2 after 1/255
    x, g = prepare(image, Preprocess("gray", (8, 8), mean=(0.2,), std=(0.5,)))
    assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
    assert np.allclose(x, 0.0, atol=1e-6)
    assert (g.gain_y, g.gain_x) == (0.8, 0.4)


def test_inverse_maps_back_to_original_pixels() -> None:
    pre = Preprocess("rgb", (64, 64), "letterbox")
    _, g = prepare(np.zeros((100, 200, 3), np.uint8), pre)
    boxes = unletterbox_boxes(np.array([[0.0, 16.0, 64.0, 48.0]]), g)
    assert np.allclose(boxes, [[0, 0, 200, 100]], atol=1e-4)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, :32] = 1.0
    back = unletterbox_map(mask, g)
    assert back.shape == (100, 200) and back[50, 50] == 1.0 and back[50, 150] == 0.0


def test_batch_keeps_each_geometry() -> None:
    pre = Preprocess("gray", (16, 16))
    x, gs = prepare_batch([np.zeros((8, 8), np.uint8), np.zeros((32, 16), np.uint8)], pre)
    assert x.shape == (2, 1, 16, 16) and [g.height for g in gs] == [8, 32]
    with pytest.raises(ValueError, match="at least one image"):
        prepare_batch([], pre)
