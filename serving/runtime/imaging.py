"""Image bytes in and out of the server: decode uploads (refusing decompression bombs from the header) and
encode masks as PNG. What happens to a decoded image next (colour, stretch or letterbox, scale, mean/std,
NCHW, and the way back) is `core.preprocess`, shared with training-side checks and the predictor.

Decoding costs no more than the model can use. A model's upload limit comes from its contract (`decode_limit`:
64 x its H x W, at least 2048x2048, at most 8192x8192; `KILN_MAX_DECODED_PIXELS` replaces it) and is checked from
the header before any pixel is decoded: a 335-byte JPEG that declares 8000x8000 is a 413 for a 256x256 model. A
JPEG larger than the model needs is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (OpenCV's IMREAD_REDUCED_*), the
smallest that still covers the model's input. Decodes and answer maps hold a share of one process-wide budget of
pixels (`DecodeBudget`, `KILN_DECODE_BUDGET_PIXELS`): past it a request waits up to `BUDGET_WAIT_SECONDS`, then gets
503 with Retry-After, so concurrent large uploads cannot add up to an unbounded peak; after a large one the C heap
is trimmed (glibc `malloc_trim`) so the process gives the memory back.

    python -m serving.runtime.imaging photo.jpg '{"color": "rgb", "size": [640, 640], "resize": "letterbox"}'
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import sys
import threading
from collections.abc import Iterator

import cv2
import numpy as np

from core import vocab
from serving.errors import BadRequest, PayloadTooLarge, ServingError

PNG_FAST = [int(cv2.IMWRITE_PNG_COMPRESSION), 1]
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192; larger uploads are refused before decoding
MIN_DECODE_LIMIT = 2048 * 2048  # a model's upload limit is never below this (a phone photo scaled for the web)
DECODE_FACTOR = 64  # a model's upload limit: this many times its own H x W (8x per side: the JPEG decoder's reach)
BUDGET_WAIT_SECONDS = 5.0  # a request waits this long for decode budget, then gets 503
TRIM_AFTER_PIXELS = 4 * 1024 * 1024  # after holding this many pixels, give the freed heap back to the system
REDUCED = {2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
           4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
           8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8)}  # fmt: skip


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
    kind, _ = read_header(data, max_pixels)
    return _decode(data, kind, cv2.IMREAD_UNCHANGED)


def read_header(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    """(format, (height, width)) from the magic bytes and the header, without decoding; 400 for anything else."""
    if not data:
        raise BadRequest("the image is empty")
    kind = image_format(data)
    if kind is None:
        raise BadRequest(
            f"the image could not be decoded: it is not PNG, JPEG, BMP, TIFF or WebP (first bytes {data[:8]!r})"
        )
    return kind, _check_pixels(data, kind, max_pixels)


def reduction(kind: str, size: tuple[int, int], cover: tuple[int, int] | None) -> int:
    """The largest JPEG scale-down (1, 2, 4 or 8) whose result still covers `cover` (H, W); 1 for other formats."""
    if kind != "JPEG" or cover is None:
        return 1
    height, width = size
    fits = [r for r in (8, 4, 2) if math.ceil(height / r) >= cover[0] and math.ceil(width / r) >= cover[1]]
    return fits[0] if fits else 1


def decode_for_model(data: bytes, limit: int, cover: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an upload for a model whose limit is `limit` pixels and whose input is `cover` (H, W).

    Returns the image (perhaps reduced) and the upload's own (H, W). 413 from the header when the image is over
    `limit`; the decode holds its pixels in the process's budget.
    """
    kind, (height, width) = read_header(data, MAX_PIXELS)
    if height * width > limit:
        raise PayloadTooLarge(
            f"the image is {width}x{height} ({height * width:,} pixels); this model takes at most {limit:,} "
            f"pixels (it sees {cover[1]}x{cover[0]} when given any size); scale it down before sending"
            if cover
            else f"the image is {width}x{height}; this model takes at most {limit:,} pixels"
        )
    factor = reduction(kind, (height, width), cover)
    with DECODE_BUDGET.hold(math.ceil(height / factor) * math.ceil(width / factor)):
        if factor == 1:
            return _decode(data, kind, cv2.IMREAD_UNCHANGED), (height, width)
        gray = _is_gray_jpeg(data)
        return _decode(data, kind, REDUCED[factor][1 if gray else 0]), (height, width)


def _is_gray_jpeg(data: bytes) -> bool:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as header:
        return bool(header.mode == "L")


def _decode(data: bytes, kind: str, flags: int) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, flags)
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


@functools.cache
def decode_settings() -> tuple[int, int]:
    """(max_decoded_pixels, decode_budget_pixels) from the server's settings (0 = per model)."""
    from serving.settings import ServeSettings

    settings = ServeSettings.from_env()
    return settings.max_decoded_pixels, settings.decode_budget_pixels


def decode_limit(size: tuple[int, int] | None) -> int:
    """A model's upload limit in pixels: KILN_MAX_DECODED_PIXELS, else 64 x its H x W within [2048^2, 8192^2]."""
    configured = decode_settings()[0]
    if configured:
        return configured
    own = size[0] * size[1] if size else 512 * 512
    return min(MAX_PIXELS, max(MIN_DECODE_LIMIT, DECODE_FACTOR * own))


class Busy(ServingError):
    status_code = 503
    code = "busy"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class DecodeBudget:
    """Pixels decoded (or answered) in flight in this process; a hold past the budget waits, then is refused."""

    def __init__(self, budget: int | None = None, wait_seconds: float = BUDGET_WAIT_SECONDS) -> None:
        self._budget = budget
        self.wait_seconds = wait_seconds
        self.in_flight = 0
        self._since_trim = 0
        self._cond = threading.Condition()

    @property
    def budget(self) -> int:
        return self._budget if self._budget is not None else decode_settings()[1]

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        share = min(pixels, self.budget)  # one request alone always fits (its own limit already bounds it)
        with self._cond:
            if not self._cond.wait_for(lambda: self.in_flight + share <= self.budget, timeout=self.wait_seconds):
                raise Busy(f"the server is decoding {self.in_flight:,} pixels for other requests; retry shortly")
            self.in_flight += share
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= share
                self._since_trim += pixels
                trim = self.in_flight == 0 and self._since_trim >= TRIM_AFTER_PIXELS
                if trim:
                    self._since_trim = 0
                self._cond.notify_all()
            if trim:
                _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed arenas mapped; malloc_trim hands them back, so RSS falls after a large request."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


DECODE_BUDGET = DecodeBudget()


def _check_pixels(data: bytes, kind: str, max_pixels: int) -> tuple[int, int]:
    """Refuse decompression bombs from the header alone: a 40 kB PNG can declare 30000x30000 pixels. Every
    accepted format has its size in the header, and PIL reads it without decoding the pixels."""
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
    return int(height), int(width)


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
