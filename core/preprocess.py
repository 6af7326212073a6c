"""The numpy pre-processing that `kiln.preprocess` declares, one function per resize mode, and its inverse.

    python -c "import numpy as np; from core.preprocess import prepare; from core.contract import Preprocess; \
x, g = prepare(np.zeros((480, 640, 3), np.uint8), Preprocess('rgb', (640, 640), 'letterbox')); print(x.shape, g)"

Training-side checks (ONNX against PyTorch on real images), the server, the predictor, data tools and benches
all call these, so a model sees in production exactly the pixels it was checked on. Letterboxing follows
ultralytics' LetterBox (centred, same rounding, border of pad_value) so that boxes map back to the pixels
training saw. Images are uint8 HxW (gray) or HxWx3 in OpenCV's BGR order, as `cv2.imread` gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from core.contract import Preprocess


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


def to_color(image: np.ndarray, color: str) -> np.ndarray:
    """BGR or gray uint8 -> gray: HxW luma (ITU-R 601, as OpenCV and PIL's "L"); rgb: HxWx3 in RGB order."""
    if color == "gray":
        return image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def stretch(image: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Geometry]:
    """Resize to the model size whatever the aspect ratio."""
    height, width = image.shape[:2]
    target_h, target_w = pre.size
    out = image if (height, width) == (target_h, target_w) else _resize(image, target_w, target_h)
    return out, Geometry(height, width, target_h / height, target_w / width, 0, 0, target_h, target_w)


def letterbox(image: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Geometry]:
    """Resize keeping the aspect ratio and pad to the model size, centred, with `pad_value`."""
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


RESIZERS: dict[str, Callable[[np.ndarray, Preprocess], tuple[np.ndarray, Geometry]]] = {
    "stretch": stretch,
    "letterbox": letterbox,
}


def resize(image: np.ndarray, pre: Preprocess) -> tuple[np.ndarray, Geometry]:
    """Apply the contract's resize mode."""
    return RESIZERS[pre.resize](image, pre)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))


def to_tensor(image: np.ndarray, pre: Preprocess, dtype: Any = np.float32) -> np.ndarray:
    """HxW(xC) uint8 already in the model's colour and size -> 1xCxHxW: scale, then (x - mean) / std."""
    x = image.astype(np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x *= np.float32(pre.scale)
    if any(m != 0 for m in pre.mean):
        x -= np.asarray(pre.mean, dtype=np.float32)
    if any(s != 1 for s in pre.std):
        x /= np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=dtype)


def prepare(image: np.ndarray, pre: Preprocess, dtype: Any = np.float32) -> tuple[np.ndarray, Geometry]:
    """A decoded image (BGR or gray uint8) -> the 1xCxHxW model input and the geometry to undo it."""
    resized, geometry = resize(to_color(image, pre.color), pre)
    return to_tensor(resized, pre, dtype), geometry


def prepare_batch(
    images: Sequence[np.ndarray], pre: Preprocess, dtype: Any = np.float32
) -> tuple[np.ndarray, list[Geometry]]:
    """Several decoded images -> one NxCxHxW batch and each image's geometry."""
    if not images:
        raise ValueError("prepare_batch needs at least one image")
    tensors, geometries = zip(*(prepare(im, pre, dtype) for im in images), strict=True)
    return np.concatenate(tensors, axis=0), list(geometries)


def unletterbox_map(values: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A HxW map in model pixels -> the same map on the original image (linear interpolation)."""
    g = geometry
    inner = values[g.pad_top : g.pad_top + g.inner_h, g.pad_left : g.pad_left + g.inner_w]
    if inner.shape == (g.height, g.width):
        return inner
    return np.asarray(cv2.resize(inner, (g.width, g.height), interpolation=cv2.INTER_LINEAR))


def unletterbox_boxes(boxes_xyxy: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Nx4 boxes in model pixels -> original image pixels, clipped to the image (ultralytics' scale_boxes)."""
    g = geometry
    out = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - g.pad_left) / g.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - g.pad_top) / g.gain_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, g.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, g.height)
    return out
