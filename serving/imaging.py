"""Image decoding and the preprocessing that `kiln.preprocess` declares: colour, stretch or letterbox, scale,
mean/std, NCHW. Also the inverse geometry, to put masks and boxes back on the original image.

    python -m serving.imaging photo.jpg '{"color": "rgb", "size": [640, 640], "resize": "letterbox"}'

Letterboxing follows ultralytics' LetterBox (centred, same rounding, border of pad_value) so that detection
boxes map back to exactly the pixels training saw.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from serving.contract import Preprocess
from serving.errors import BadRequest

PNG_FAST = [int(cv2.IMWRITE_PNG_COMPRESSION), 1]
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192; larger uploads are refused before decoding


@dataclass(frozen=True)
class Geometry:
    """Where the original image sits inside the model input."""

    height: int  # original image
    width: int
    gain_y: float  # model pixels per original pixel
    gain_x: float
    pad_top: int  # letterbox border, in model pixels
    pad_left: int
    inner_h: int  # size of the image inside the border, in model pixels
    inner_w: int


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of a PNG/JPEG/BMP/TIFF/WebP file -> uint8 HxW or HxWx3 (BGR). Anything else is a 400."""
    if not data:
        raise BadRequest("the image is empty")
    _check_pixels(data)
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise BadRequest(f"the image could not be decoded ({len(data)} bytes; PNG, JPEG, BMP, TIFF or WebP expected)")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadRequest(f"unsupported image sample type {image.dtype}; 8- or 16-bit images expected")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return np.asarray(image)


def _check_pixels(data: bytes) -> None:
    """Refuse decompression bombs from the header alone: a 40 kB PNG can declare 30000x30000 pixels."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        raise BadRequest(f"the image declares more than {MAX_PIXELS:,} pixels; refused before decoding") from None
    except Exception:  # not something PIL reads (ultralytics patches Image.open and raises its own): OpenCV decides
        return
    if width * height > MAX_PIXELS:
        raise BadRequest(f"the image is {width}x{height}; at most {MAX_PIXELS:,} pixels are accepted")


def to_color(image: np.ndarray, color: str) -> np.ndarray:
    """gray -> HxW luma (ITU-R 601, as OpenCV and PIL's "L"); rgb -> HxWx3 in RGB order."""
    if color == "gray":
        return image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def resize(image: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Geometry]:
    height, width = image.shape[:2]
    target_h, target_w = pre.size
    if pre.resize == "stretch":
        out = image if (height, width) == (target_h, target_w) else _resize(image, target_w, target_h)
        return out, Geometry(height, width, target_h / height, target_w / width, 0, 0, target_h, target_w)
    return _letterbox(image, pre)


def _letterbox(image: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Geometry]:
    height, width = image.shape[:2]
    target_h, target_w = pre.size
    gain = min(target_h / height, target_w / width)
    inner_w, inner_h = max(int(round(width * gain)), 1), max(int(round(height * gain)), 1)
    dw, dh = (target_w - inner_w) / 2, (target_h - inner_h) / 2
    if (width, height) != (inner_w, inner_h):
        image = _resize(image, inner_w, inner_h)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    value: Any = pre.pad_value if image.ndim == 2 else (pre.pad_value,) * 3
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)
    # per-axis gains of the rounded inner size, as ultralytics' scale_boxes computes them
    return np.asarray(padded), Geometry(height, width, inner_h / height, inner_w / width, top, left, inner_h, inner_w)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))


def to_tensor(image: np.ndarray, pre: Preprocess, dtype: np.dtype[Any]) -> np.ndarray:
    """HxW(xC) uint8 -> 1xCxHxW: scale, then (x - mean) / std per channel."""
    x = image.astype(np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x *= np.float32(pre.scale)
    if any(m != 0 for m in pre.mean):
        x -= np.asarray(pre.mean, dtype=np.float32)
    if any(s != 1 for s in pre.std):
        x /= np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=dtype)


def preprocess(data: bytes, pre: Preprocess, dtype: np.dtype[Any]) -> tuple[np.ndarray, Geometry]:
    """Encoded image bytes -> model input tensor and the geometry to undo it."""
    image = to_color(decode_image(data), pre.color)
    resized, geometry = resize(image, pre)
    return to_tensor(resized, pre, dtype), geometry


def unletterbox_map(values: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A HxW map in model pixels -> the same map on the original image (linear interpolation)."""
    g = geometry
    inner = values[g.pad_top : g.pad_top + g.inner_h, g.pad_left : g.pad_left + g.inner_w]
    if inner.shape == (g.height, g.width):
        return inner
    return np.asarray(cv2.resize(inner, (g.width, g.height), interpolation=cv2.INTER_LINEAR))


def encode_png(mask: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", mask, PNG_FAST)
    if not ok:
        raise RuntimeError("OpenCV could not encode the mask as PNG")
    return bytes(encoded.tobytes())


def main(argv: list[str]) -> None:
    """Print the tensor shape and geometry an image becomes under a preprocess JSON."""
    import json
    from pathlib import Path

    from serving.contract import _parse_preprocess

    pre = _parse_preprocess(json.loads(argv[1]))
    try:
        tensor, geometry = preprocess(Path(argv[0]).read_bytes(), pre, np.dtype(np.float32))
    except BadRequest as err:
        sys.exit(f"{argv[0]}: {err.detail}")
    print(tensor.shape, geometry)


if __name__ == "__main__":
    main(sys.argv[1:])
