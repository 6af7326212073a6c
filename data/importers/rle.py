"""Run-length mask encodings found in annotation exports, decoded to boolean numpy masks (and encoded back).

    python -c "from data.importers.rle import coco_rle_decode as d; print(d({'size': [2, 2], 'counts': [1, 2, 1]}))"

- COCO RLE: `{"size": [h, w], "counts": [...]}` with run lengths over the image in column-major order, starting
  with a run of zeros; `counts` is a list (uncompressed) or pycocotools' compact string (6-bit characters,
  each run after the second stored as the difference to the run two before).
- CVAT 1.1 `<mask rle="...">`: run lengths in row-major order over the box `left, top, width, height`,
  starting with zeros.
- Label Studio brush: the bit-packed RLE of thi.ng/rle-pack over the RGBA pixels of the whole image; the mask
  is the alpha channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import DatasetError


def runs_to_flat(counts: Sequence[int], total: int, where: str) -> np.ndarray:
    """Alternating runs (zeros first) -> a flat boolean array of `total` values."""
    flat = np.zeros(total, dtype=bool)
    position = 0
    for index, run in enumerate(counts):
        if run < 0 or position + run > total:
            raise DatasetError(f"{where}: run lengths add up to more than the {total} pixels of the mask")
        if index % 2:
            flat[position : position + run] = True
        position += run
    return flat


def coco_string_to_counts(text: str) -> list[int]:
    """pycocotools' rleFrString: 5 bits per character (offset 48), bit 0x20 = more, 0x10 of the last = sign."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            p, shift = p + 1, shift + 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def coco_counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools' rleToString, the inverse of `coco_string_to_counts`."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def coco_rle_decode(rle: dict[str, Any], where: str = "segmentation") -> np.ndarray:
    """A COCO RLE dict -> bool mask (h, w)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{where}: RLE needs 'size': [h, w] and 'counts', got {sorted(rle)}") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = coco_string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    return runs_to_flat(runs, height * width, where).reshape(width, height).T


def coco_rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """A bool mask (h, w) -> COCO RLE with compact string counts."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    return {"size": list(mask.shape), "counts": coco_counts_to_string(flat_to_runs(flat))}


def flat_to_runs(flat: np.ndarray) -> list[int]:
    """A flat boolean array -> alternating run lengths, zeros first (a leading 0 when it starts with True)."""
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def cvat_rle_decode(text: str, width: int, height: int, where: str) -> np.ndarray:
    """CVAT's `rle` attribute (comma-separated runs, zeros first, row-major over the box) -> bool (height, width)."""
    try:
        counts = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise DatasetError(f"{where}: rle {text[:40]!r} is not a comma-separated list of integers") from None
    return runs_to_flat(counts, width * height, where).reshape(height, width)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.i = 0

    def read(self, size: int) -> int:
        if self.i + size > self.bits.size:
            raise ValueError("the RLE ends early")
        value = 0
        for bit in self.bits[self.i : self.i + size]:
            value = (value << 1) | int(bit)
        self.i += size
        return value


def brush_rle_decode(rle: Sequence[int], width: int, height: int, where: str) -> np.ndarray:
    """Label Studio's brush RLE (a list of byte values) -> bool (height, width) from the alpha channel."""
    try:
        stream = _Bits(bytes(rle))
        num = stream.read(32)
        word_size = stream.read(5) + 1
        rle_sizes = [stream.read(4) + 1 for _ in range(4)]
        out = np.zeros(num, dtype=np.uint32)
        i = 0
        while i < num:
            repeated = stream.read(1)
            j = i + 1 + stream.read(rle_sizes[stream.read(2)])
            if repeated:
                out[i:j] = stream.read(word_size)
                i = j
            else:
                while i < j:
                    out[i] = stream.read(word_size)
                    i += 1
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{where}: brush RLE does not decode: {exc}") from None
    if num != width * height * 4:
        raise DatasetError(f"{where}: brush RLE holds {num} values, expected {width}x{height}x4 = {width * height * 4}")
    return out.reshape(height, width, 4)[:, :, 3] > 0


def brush_rle_encode(mask: np.ndarray) -> list[int]:
    """A bool mask (h, w) -> Label Studio's brush RLE of the RGBA image (alpha 255 where the mask is set)."""
    values = np.repeat(np.asarray(mask, dtype=bool).reshape(-1).astype(np.uint32) * 255, 4)
    bits: list[str] = [f"{values.size:032b}", f"{8 - 1:05b}"] + [f"{16 - 1:04b}"] * 4
    flat_runs = flat_to_runs(values > 0)
    value = 0
    for run in flat_runs:
        while run > 0:
            chunk = min(run, 1 << 16)
            bits.append("1" + "00" + f"{chunk - 1:016b}" + f"{value:08b}")
            run -= chunk
        value = 255 - value
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return [int(text[i : i + 8], 2) for i in range(0, len(text), 8)]
