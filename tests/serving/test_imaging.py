"""Image decoding and preprocessing: colour, stretch, letterbox identical to ultralytics', normalisation,
and the inverse geometry that puts masks and boxes back on the original image."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from serving_helpers import png_bytes

from core.contract import Preprocess
from core.preprocess import prepare, resize, to_color, to_tensor, unletterbox_boxes, unletterbox_map
from serving.errors import BadRequest
from serving.runtime.imaging import decode_image


def _pre(**kw: object) -> Preprocess:
    base = {
        "color": "rgb",
        "size": (64, 64),
        "resize": "letterbox",
        "scale": 1 / 255,
        "layout": "NCHW",
        "pad_value": 114,
    }
    return Preprocess(**{**base, **kw})  # type: ignore[arg-type]  # mean and std default to 0 and 1 per channel


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_undecodable_bytes_are_a_400(data: bytes) -> None:
    with pytest.raises(BadRequest, match="image"):
        decode_image(data)


def test_decompression_bombs_are_refused_from_the_header() -> None:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 30000x30000 gray, nothing decoded yet
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(BadRequest, match="pixels"):
        decode_image(bomb)
    ihdr = (9000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # under PIL's own limit, over ours
    big = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(BadRequest, match="9000x9000"):
        decode_image(big)


def test_decode_handles_alpha_and_16_bit() -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGR(A) order
    assert decode_image(png_bytes(rgba)).shape == (4, 5, 3)
    deep = np.full((3, 3), 65535, np.uint16)
    decoded = decode_image(png_bytes(deep))
    assert decoded.dtype == np.uint8 and decoded.max() == 255


def test_colour_conversion_gives_rgb_order_and_luma() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    assert to_color(bgr, "rgb")[0, 0].tolist() == [255, 0, 0]
    assert to_color(bgr, "gray")[0, 0] == 76  # 0.299 * 255
    assert to_color(np.zeros((2, 2), np.uint8), "rgb").shape == (2, 2, 3)


def test_stretch_geometry() -> None:
    image = np.zeros((50, 100), np.uint8)
    out, g = resize(image, _pre(color="gray", resize="stretch", size=(25, 25)))
    assert out.shape == (25, 25)
    assert (g.gain_y, g.gain_x, g.pad_top, g.pad_left) == (0.5, 0.25, 0, 0)


@pytest.mark.parametrize("shape", [(50, 128), (64, 64), (30, 47), (100, 20)])
def test_letterbox_matches_ultralytics_pixel_for_pixel(shape: tuple[int, int]) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.ops import scale_boxes

    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, geometry = resize(image, _pre())
    theirs = LetterBox((64, 64), auto=False, scaleup=True, center=True, padding_value=114)(image=image)
    assert np.array_equal(ours, theirs)
    box = np.array([[10.0, 20.0, 40.0, 50.0]])
    expected = scale_boxes((64, 64), box.copy(), shape)
    assert np.allclose(unletterbox_boxes(box, geometry), expected, atol=1e-4)


def test_to_tensor_scales_then_normalises_per_channel() -> None:
    image = np.full((2, 2, 3), 255, np.uint8)
    tensor = to_tensor(image, _pre(mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0)), np.dtype(np.float32))
    assert tensor.shape == (1, 3, 2, 2) and tensor.flags.c_contiguous
    assert tensor[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]


def test_preprocess_end_to_end_and_mask_back_to_original() -> None:
    image = np.zeros((32, 64), np.uint8)
    image[:, 32:] = 255
    pre = _pre(color="gray", mean=(0.0,), std=(1.0,))
    tensor, geometry = prepare(decode_image(png_bytes(image)), pre, np.dtype(np.float16))
    assert tensor.shape == (1, 1, 64, 64) and tensor.dtype == np.float16
    assert geometry.pad_top == 16 and geometry.inner_h == 32
    restored = unletterbox_map(tensor[0, 0].astype(np.float32), geometry)
    assert restored.shape == (32, 64)
    assert restored[:, :30].max() == 0 and restored[:, 34:].min() == 1
    assert cv2.countNonZero((restored > 0.5).astype(np.uint8)) == 32 * 32
