"""`kiln data filter DST`: reject images that fail to decode, are too small, blurred, badly exposed or
near-duplicates of images already in the set; move them to DST/rejected/<reason>/ and write a CSV report.

    kiln data filter data/door --min-side 64 --min-blur 40 --dry-run
    python -c "from data.filter import filter_images, FilterOptions; print(filter_images('data/door').summary())"

Only images not checked before are checked (DST/.kiln/filter.jsonl remembers path, size and mtime of each);
the near-duplicate test compares each new image with every kept image, old and new, by a 64-bit perceptual
hash (DCT of a 32x32 grey thumbnail, the pHash of Zauner 2010) within a Hamming distance. Checks run in this
order and the first failure names the reason: decode, too_small, too_dark, too_bright, clipped, blurry,
duplicate.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import UserError
from data.collect import open_log, state_dir
from data.yolo_layout import list_images

FILTER_STATE = "filter.jsonl"
REASONS = ("decode", "too_small", "too_dark", "too_bright", "clipped", "blurry", "duplicate")
ANALYSIS_SIDE = 512  # blur and exposure are measured on the image shrunk to this long side, so scores compare
# across resolutions (the variance of the Laplacian grows with the pixel count of fine detail)
CSV_FIELDS = [
    "path", "verdict", "reason", "width", "height", "blur", "brightness", "clipped", "phash",
    "duplicate_of", "distance", "detail",
]  # fmt: skip


@dataclass(frozen=True)
class FilterOptions:
    """Thresholds; each is a `kiln data filter` option of the same name (kebab-case)."""

    min_side: int = 32  # pixels: an image whose shorter side is smaller is rejected as too_small
    min_blur: float = 30.0  # variance of the Laplacian (grey, long side 512 px) below this is blurry
    min_brightness: float = 25.0  # mean grey level 0..255 below this is too_dark
    max_brightness: float = 230.0  # mean grey level above this is too_bright
    max_clipped: float = 0.35  # share of pixels at 0-2 or 253-255 above this is clipped
    max_distance: int = 6  # perceptual hashes (64 bits) within this Hamming distance are duplicates
    dry_run: bool = False  # report only; move nothing and remember nothing
    workers: int = 2  # decoding threads (OpenCV releases the GIL)

    def check(self) -> FilterOptions:
        if self.min_side < 1:
            raise UserError(f"--min-side must be at least 1, got {self.min_side}")
        if not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise UserError(
                f"need 0 <= --min-brightness < --max-brightness <= 255, got {self.min_brightness}, "
                f"{self.max_brightness}"
            )
        if not 0 < self.max_clipped <= 1:
            raise UserError(f"--max-clipped is a share in (0, 1], got {self.max_clipped}")
        if not 0 <= self.max_distance <= 64:
            raise UserError(f"--max-distance is a Hamming distance of 64-bit hashes, 0..64; got {self.max_distance}")
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        return self


@dataclass
class Scores:
    path: str  # relative to DST
    width: int = 0
    height: int = 0
    blur: float = 0.0
    brightness: float = 0.0
    clipped: float = 0.0
    phash: int | None = None
    detail: str = ""  # why decoding failed
    reason: str = ""  # empty = kept
    duplicate_of: str = ""
    distance: int | None = None

    @property
    def verdict(self) -> str:
        return "rejected" if self.reason else "kept"

    def row(self) -> dict[str, Any]:
        return {
            "path": self.path, "verdict": self.verdict, "reason": self.reason, "width": self.width,
            "height": self.height, "blur": round(self.blur, 2), "brightness": round(self.brightness, 2),
            "clipped": round(self.clipped, 4), "phash": f"{self.phash:016x}" if self.phash is not None else "",
            "duplicate_of": self.duplicate_of, "distance": "" if self.distance is None else self.distance,
            "detail": self.detail,
        }  # fmt: skip


@dataclass
class FilterResult:
    dst: Path
    report: Path
    rows: list[Scores] = field(default_factory=list)
    already_checked: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.reason or "kept"] = out.get(row.reason or "kept", 0) + 1
        return out

    def summary(self) -> str:
        counts = self.counts()
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "kept") or "none"
        verb = "would move" if self.dry_run else "moved"
        rate = len(self.rows) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"checked {len(self.rows)} new image(s) ({rate:.0f}/s), {self.already_checked} checked before; "
            f"kept {counts.get('kept', 0)}; rejected: {rejected} ({verb} to {self.dst / 'rejected'}); "
            f"report {self.report}"
        )


# -------------------------------------------------------------------------------------------------- scoring


def phash(grey: np.ndarray) -> int:
    """64-bit perceptual hash: the top-left 8x8 DCT coefficients of a 32x32 thumbnail against their median."""
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(np.packbits(bits).view(">u8")[0])


def score(path: Path, rel: str) -> Scores:
    """Decode once and measure everything but duplicates (those need the other images)."""
    scores = Scores(path=rel)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None or image.size == 0:
        scores.detail = "empty file" if not data.size else "OpenCV cannot decode it (truncated or not an image)"
        scores.reason = "decode"
        return scores
    scores.height, scores.width = image.shape[:2]
    scale = ANALYSIS_SIDE / max(image.shape[:2])
    grey = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    scores.blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    scores.brightness = float(grey.mean())
    scores.clipped = float(np.count_nonzero((grey <= 2) | (grey >= 253)) / grey.size)
    scores.phash = phash(grey)
    return scores


def judge(scores: Scores, options: FilterOptions) -> str:
    """The first failed check's reason, or '' (duplicates are judged afterwards, in order)."""
    if scores.reason:
        return scores.reason
    if min(scores.width, scores.height) < options.min_side:
        return "too_small"
    if scores.brightness < options.min_brightness:
        return "too_dark"
    if scores.brightness > options.max_brightness:
        return "too_bright"
    if scores.clipped > options.max_clipped:
        return "clipped"
    if scores.blur < options.min_blur:
        return "blurry"
    return ""


class HashIndex:
    """Kept images' hashes; `nearest` is one vectorised XOR + popcount over all of them."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._pending: list[int] = []

    def add(self, path: str, value: int) -> None:
        self.paths.append(path)
        self._pending.append(value)

    def nearest(self, value: int) -> tuple[str, int] | None:
        if self._pending:
            self.hashes = np.concatenate([self.hashes, np.array(self._pending, dtype=np.uint64)])
            self._pending = []
        if not self.paths:
            return None
        distances = np.bitwise_count(self.hashes ^ np.uint64(value))
        best = int(np.argmin(distances))
        return self.paths[best], int(distances[best])


# ------------------------------------------------------------------------------------------------ the run


def read_state(dst: Path) -> dict[str, dict[str, Any]]:
    path = state_dir(dst) / FILTER_STATE
    state: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted run
            state[entry["path"]] = entry
    return state


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def filter_images(dst: str | Path, options: FilterOptions | None = None, report: Path | None = None) -> FilterResult:
    """Check every image under DST/images not checked before; move the rejected ones unless dry-run."""
    options = (options or FilterOptions()).check()
    dst = Path(dst).expanduser()
    images_dir = dst / "images"
    if not images_dir.is_dir():
        raise UserError(f"{dst}: no images/ folder; run `kiln data collect SRC {dst}` first")
    report = report or dst / "filter_report.csv"
    result = FilterResult(dst=dst, report=report, dry_run=options.dry_run)
    start = time.perf_counter()
    state = read_state(dst)
    index = HashIndex()
    new: list[tuple[Path, str]] = []
    for path in list_images(images_dir):
        rel = path.relative_to(dst).as_posix()
        seen = state.get(rel)
        if seen and seen.get("stamp") == _stamp(path) and seen.get("verdict") == "kept":
            result.already_checked += 1
            if seen.get("phash"):
                index.add(rel, int(seen["phash"], 16))
        else:
            new.append((path, rel))
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        result.rows = list(pool.map(lambda item: score(*item), new))
    for row in result.rows:
        row.reason = judge(row, options)
        if not row.reason and row.phash is not None:
            _check_duplicate(row, index, options)
    result.seconds = time.perf_counter() - start
    write_report(report, result.rows)
    if not options.dry_run:
        _apply(dst, result.rows)
    return result


def _check_duplicate(row: Scores, index: HashIndex, options: FilterOptions) -> None:
    assert row.phash is not None
    nearest = index.nearest(row.phash)
    if nearest is not None and nearest[1] <= options.max_distance:
        row.reason, row.duplicate_of, row.distance = "duplicate", nearest[0], nearest[1]
    else:
        row.distance = nearest[1] if nearest else None
        index.add(row.path, row.phash)


def write_report(path: Path, rows: list[Scores]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(row.row() for row in rows)
    os.replace(tmp, path)


def _apply(dst: Path, rows: list[Scores]) -> None:
    """Move the rejected images and remember every verdict (the next run checks only what is new)."""
    state_dir(dst).mkdir(parents=True, exist_ok=True)
    with open_log(state_dir(dst) / FILTER_STATE) as log:
        for row in rows:
            source = dst / row.path
            entry: dict[str, Any] = {"path": row.path, "verdict": row.verdict, "reason": row.reason}
            if row.reason:
                target = dst / "rejected" / row.reason / Path(row.path).relative_to("images")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, target)
                entry["moved_to"] = target.relative_to(dst).as_posix()
            else:
                entry["stamp"] = _stamp(source)
                entry["phash"] = f"{row.phash:016x}" if row.phash is not None else ""
            log.write(json.dumps(entry) + "\n")
