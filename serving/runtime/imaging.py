"""Image bytes in and out of the server: decode uploads (refusing decompression bombs from the header) and
encode masks as PNG. What happens to a decoded image next (colour, stretch or letterbox, scale, mean/std,
NCHW, and the way back) is `core.preprocess`, shared with training-side checks and the predictor.

    python -m serving.runtime.imaging photo.jpg '{"color": "rgb", "size": [640, 640], "resize": "letterbox"}'
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from core import vocab
from serving.errors import BadRequest

PNG_FAST = [int(cv2.IMWRITE_PNG_COMPRESSION), 1]
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192; larger uploads are refused before decoding


# The formats the task endpoints document, by their first bytes. Only these are decoded: OpenCV reads more
# (Radiance HDR, PFM, PXM, JPEG 2000, OpenEXR, ...), some of which PIL cannot size from the header, so a 5 MB HDR
# could declare 9000x9000 pixels and be decoded before any check.
FORMATS: dict[str, tuple[bytes, ...]] = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "WEBP": (b"RIFF",),  # then 4 size bytes and b"WEBP", checked in image_format
}


def image_format(data: bytes) -> str | None:
    """PNG, JPEG, BMP, TIFF or WEBP from the magic bytes; None for anything else."""
    for name, magics in FORMATS.items():
        if data.startswith(magics):
            if name == "WEBP" and data[8:12] != b"WEBP":
                return None
            return name
    return None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of a PNG/JPEG/BMP/TIFF/WebP file -> uint8 HxW or HxWx3 (BGR). Anything else is a 400, and so is
    an image whose header declares more than `max_pixels` pixels (refused before decoding)."""
    if not data:
        raise BadRequest("the image is empty")
    kind = image_format(data)
    if kind is None:
        raise BadRequest(
            f"the image could not be decoded: it is not PNG, JPEG, BMP, TIFF or WebP (first bytes {data[:8]!r})"
        )
    _check_pixels(data, kind, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise BadRequest(f"the {kind} image could not be decoded ({len(data)} bytes)")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadRequest(f"unsupported image sample type {image.dtype}; 8- or 16-bit images expected")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] != 3:
        raise BadRequest(f"the {kind} image has {image.shape[2]} channels; gray, RGB or RGBA expected")
    return np.asarray(image)


def _check_pixels(data: bytes, kind: str, max_pixels: int) -> None:
    """Refuse decompression bombs from the header alone: a 40 kB PNG can declare 30000x30000 pixels. Every
    accepted format has its size in the header, and PIL reads it without decoding the pixels."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            frames = int(getattr(header, "n_frames", 1) or 1)
    except Image.DecompressionBombError:
        raise BadRequest(f"the image declares more than {max_pixels:,} pixels; refused before decoding") from None
    except Exception as err:  # a truncated or corrupt header (ultralytics patches Image.open and raises its own)
        raise BadRequest(f"the {kind} image header could not be read: {str(err)[:120]}") from None
    if width * height > max_pixels:
        raise BadRequest(f"the image is {width}x{height}; at most {max_pixels:,} pixels are accepted")
    if frames > 1 and kind == "TIFF":  # OpenCV reads the first page only; a many-page TIFF is a different request
        raise BadRequest(f"the TIFF has {frames} pages; send one image")


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
        contract = ModelContract.parse({vocab.PREPROCESS: argv[1]})
        assert contract.preprocess is not None
        tensor, geometry = prepare(decode_image(Path(argv[0]).read_bytes()), contract.preprocess)
    except KilnError as err:
        sys.exit(f"{argv[0]}: {err.message}")
    print(tensor.shape, geometry)


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m serving.runtime.imaging IMAGE PREPROCESS_JSON", __doc__, range(2, 3)))
