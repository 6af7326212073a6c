"""Image bytes in and out of the server: decode uploads (refusing decompression bombs from the header) and
encode masks as PNG. What happens to a decoded image next (colour, stretch or letterbox, scale, mean/std,
NCHW, and the way back) is `core.preprocess`, shared with training-side checks and the predictor.

    python -m serving.imaging photo.jpg '{"color": "rgb", "size": [640, 640], "resize": "letterbox"}'
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from serving.errors import BadRequest

PNG_FAST = [int(cv2.IMWRITE_PNG_COMPRESSION), 1]
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192; larger uploads are refused before decoding


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


def encode_png(mask: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", mask, PNG_FAST)
    if not ok:
        raise RuntimeError("OpenCV could not encode the mask as PNG")
    return bytes(encoded.tobytes())


def main(argv: list[str]) -> None:
    """Print the tensor shape and geometry an image file becomes under a preprocess JSON."""
    from pathlib import Path

    from core.contract import ModelContract
    from core.errors import KilnError
    from core.preprocess import prepare

    try:
        contract = ModelContract.parse({"kiln.preprocess": argv[1]})
        assert contract.preprocess is not None
        tensor, geometry = prepare(decode_image(Path(argv[0]).read_bytes()), contract.preprocess)
    except KilnError as err:
        sys.exit(f"{argv[0]}: {err.message}")
    print(tensor.shape, geometry)


if __name__ == "__main__":
    main(sys.argv[1:])
