"""Task results as pictures: the mask, the mask laid over the image, or the image with the boxes drawn.

    curl -F image=@drawing.png -H 'Accept: image/png' 127.0.0.1:8080/v1/models/edgnet_large/predict -o mask.png
    curl -F image=@drawing.png '127.0.0.1:8080/v1/models/edgnet_large/predict?format=overlay' -o overlay.png
    curl -F image=@site.jpg '127.0.0.1:8080/v1/models/safety_detection/predict?format=png' -o boxes.png

A task endpoint answers JSON unless `?format=png` / `?format=overlay` is given or the request's `Accept` header
prefers `image/png` to JSON. Segmentation: `png` is the 0/255 mask at the uploaded image's size, `overlay` the
image with the foreground tinted. Detection: both draw the boxes with class name and confidence. Other tasks
have no picture (their answer is numbers): asking for one is a 406 naming what they answer instead.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from serving.errors import BadRequest, ServingError
from serving.runtime.imaging import decode_image, encode_png
from serving.runtime.postprocess import DetectionResult, SegmentationResult

FORMATS = ("json", "png", "overlay")
TINT = np.array([40, 80, 240], dtype=np.float32)  # BGR: the foreground colour of an overlay (red-orange)
# One colour per class id (BGR), distinct on light and dark images; cycled for more classes.
PALETTE = [(56, 56, 255), (255, 157, 151), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (211, 188, 0), (255, 115, 100), (236, 24, 0), (255, 56, 132)]  # fmt: skip


class NotAcceptable(ServingError):
    status_code = 406
    code = "not_acceptable"


def wanted_format(query_format: str | None, accept: str) -> str:
    """`json`, `png` or `overlay`: the `format` query parameter, else `png` when Accept prefers image/png."""
    if query_format is not None:
        if query_format not in FORMATS:
            raise BadRequest(f"query parameter format={query_format!r} is not one of {list(FORMATS)}")
        return query_format
    # only `image/png` or `image/*` can win over JSON: most clients' Accept (none, */*, JSON) names neither
    return "png" if "image/" in accept.lower() and _prefers_png(accept) else "json"


def _prefers_png(accept: str) -> bool:
    """True when `image/png` (or `image/*`) has a higher q than JSON in the Accept header."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *options = (p.strip() for p in part.split(";"))
        q = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    q = float(option[2:])
                except ValueError:
                    q = 0.0
        weights[media.lower()] = max(q, weights.get(media.lower(), 0.0))
    png = max(weights.get("image/png", 0.0), weights.get("image/*", 0.0))
    json_q = max(weights.get("application/json", 0.0), weights.get("*/*", 0.0) * 0.99)
    return png > 0 and png >= json_q


def picture(result: Any, image_bytes: bytes, fmt: str, task: str) -> bytes:
    """The PNG for `result`; 406 for a task that has no picture."""
    if isinstance(result, SegmentationResult):
        if fmt == "png":
            return encode_png(result.mask * np.uint8(255))
        return encode_png(overlay(decode_image(image_bytes), result.mask))
    if isinstance(result, DetectionResult):
        return encode_png(draw_boxes(decode_image(image_bytes), result))
    raise NotAcceptable(
        f"a {task} model answers numbers, not a picture; ask for JSON (no format parameter, Accept: application/json)"
    )


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image (gray or BGR) with the foreground tinted; background pixels are unchanged."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3]
    out = bgr.astype(np.float32)
    fg = mask.astype(bool)
    out[fg] = (1 - alpha) * out[fg] + alpha * TINT
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, result: DetectionResult) -> np.ndarray:
    """Each box in its class colour with a filled label `name 0.87` above it (inside the image at the top edge)."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    side = max(out.shape[:2])
    thickness = max(1, round(side / 320))
    scale = max(0.35, side / 1000)
    for box in result.boxes:
        colour = PALETTE[box.class_id % len(PALETTE)]
        x1, y1, x2, y2 = (round(v) for v in box.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        label = f"{box.class_name} {box.confidence:.2f}"
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness - 1))
        top = y1 - h - base - 2 if y1 - h - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + w + 4, top + h + base + 2), colour, -1)
        cv2.putText(out, label, (x1 + 2, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, thickness - 1), cv2.LINE_AA)  # fmt: skip
    return out
