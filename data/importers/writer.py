"""Write an export read by `data.importers` in kiln's layout: images/<split>/, labels/<split>/ (YOLO boxes),
masks/<split>/ (0/255 PNG, when the export has polygons or masks) and a data.yaml that needs no `path:` fix.
A mask is the union of an image's shapes, whatever their class; a plain box among masks fills its rectangle.

    python -c "from data.importers.writer import hash_fraction; print(hash_fraction('00' * 32))"

A missing validation split is taken by image hash (the first 32 bits of its sha256 as a fraction below
`val`), the rule `kiln data version` uses, so an image keeps its split across re-imports of a newer export.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import yaml

from core.errors import DatasetError, UserError
from data.importers.common import Annotations, ImportFormatError, Item, image_size, shape_box, shape_mask
from data.yolo_layout import SPLITS

MARKER = Path(".kiln") / "import.json"  # written by an import; lets a re-import replace the folder's files
OUTPUT_DIRS = ("images", "labels", "masks")
CLIP_TOLERANCE = 0.5  # pixels a box may stick out before it is reported (exports round to whole pixels)


@dataclass
class Written:
    yaml_path: Path
    splits: dict[str, int]  # split -> images
    boxes: int = 0
    masks: int = 0  # mask files written (0 for a box-only export)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    made_val: bool = False  # True when the val split was taken by hash


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_fraction(sha: str) -> float:
    return int(sha[:8], 16) / 0x100000000


def assign_splits(items: list[Item], hashes: list[str], val: float) -> bool:
    """Keep given splits; when no image is in val, move train (or unsplit) images whose hash falls below `val`
    there, and at least the smallest-hash one. Returns True when val was made here."""
    if any(item.split == "val" for item in items):
        for item in items:
            item.split = item.split or "train"
        return False
    pool = [i for i, item in enumerate(items) if item.split in (None, "train")]
    for i in pool:
        items[i].split = "val" if hash_fraction(hashes[i]) < val else "train"
    if val > 0 and len(pool) > 1 and not any(items[i].split == "val" for i in pool):
        items[min(pool, key=lambda i: hashes[i])].split = "val"
    return bool(pool) and val > 0


def prepare_destination(dst: Path) -> None:
    """An empty or new folder, or an earlier import's (its files are replaced); anything else is refused."""
    if dst.exists() and not dst.is_dir():
        raise UserError(f"{dst}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()):
        if not (dst / MARKER).is_file():
            raise UserError(f"{dst}: folder is not empty and holds no earlier import; choose an empty or new folder")
        for name in OUTPUT_DIRS:
            shutil.rmtree(dst / name, ignore_errors=True)
        (dst / "data.yaml").unlink(missing_ok=True)
    dst.mkdir(parents=True, exist_ok=True)


def write_dataset(ann: Annotations, dst: Path, val: float, source: dict[str, Any]) -> Written:
    if not ann.items:
        raise ImportFormatError(f"{source.get('path')}: the export holds no images")
    prepare_destination(dst)
    hashes = [sha256_of(item.image) for item in ann.items]
    made_val = assign_splits(ann.items, hashes, val)
    with_masks = any(s.mask is not None or s.polygons for item in ann.items for s in item.shapes)
    written = Written(yaml_path=dst / "data.yaml", splits={}, made_val=made_val)
    targets: dict[Path, Path] = {}
    for item in ann.items:
        _write_item(ann, item, dst, with_masks, targets, written)
    present = [s for s in SPLITS if written.splits.get(s)]
    written.splits = {s: written.splits[s] for s in present}
    _write_yaml(ann, dst, present, source)
    (dst / MARKER).parent.mkdir(exist_ok=True)
    (dst / MARKER).write_text(json.dumps({"format": ann.fmt, **source, "splits": written.splits}, indent=1))
    return written


def _write_item(
    ann: Annotations, item: Item, dst: Path, with_masks: bool, targets: dict[Path, Path], written: Written
) -> None:
    split = item.split or "train"
    image = dst / "images" / split / item.rel
    if image in targets and targets[image] != item.image:
        raise ImportFormatError(f"two images would be written to {image}: {targets[image]} and {item.image}")
    targets[image] = item.image
    image.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(item.image, image)
    written.splits[split] = written.splits.get(split, 0) + 1
    width, height = image_size(item.image)
    if item.size and tuple(item.size) != (width, height):
        where = item.label_source or item.image
        written.warnings.append((where, f"{item.rel}: annotation says {item.size[0]}x{item.size[1]}, the image is "
                                        f"{width}x{height}; coordinates are used as given"))  # fmt: skip
    stem = PurePosixPath(item.rel).with_suffix("")
    label = dst / "labels" / split / f"{stem}.txt"
    label.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((height, width), dtype=bool) if with_masks else None
    lines = _label_lines(ann, item, width, height, mask, written)
    label.write_text("".join(line + "\n" for line in lines))
    if not lines:
        written.warnings.append((label, "empty label file: a background image with nothing labelled"))
    if mask is not None:
        target = dst / "masks" / split / f"{stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), mask.astype(np.uint8) * 255):
            raise DatasetError(f"{target}: could not write the mask")
        written.masks += 1


def _label_lines(
    ann: Annotations, item: Item, width: int, height: int, mask: np.ndarray | None, written: Written
) -> list[str]:
    if item.yolo_lines is not None:
        lines = list(item.yolo_lines)  # verbatim: `kiln data validate` reports a bad line at its line number
        written.boxes += sum(1 for line in lines if line.strip())
    else:
        lines = []
    for shape in item.shapes:
        pixels = shape_mask(shape, width, height)
        if mask is not None and pixels is not None:
            mask |= pixels
        if item.yolo_lines is not None:
            continue  # YOLO polygons: their box line is already among the verbatim lines
        box = shape_box(shape, pixels)
        if box is None:
            ann.skipped["empty shape"] += 1
            continue
        if mask is not None and pixels is None:  # a plain box in an export with masks: its rectangle is its mask
            x0, y0, x1, y1 = (round(v) for v in box)
            mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        line = _yolo_line(ann.class_id(shape.label, shape.where), box, (width, height), item, written)
        if line is None:
            ann.skipped["empty after clipping"] += 1
            continue
        lines.append(line)
        written.boxes += 1
    return lines


def _yolo_line(
    class_id: int, box: tuple[float, float, float, float], size: tuple[int, int], item: Item, written: Written
) -> str | None:
    (x0, y0, x1, y1), (width, height) = box, size
    if min(x0, y0) < -CLIP_TOLERANCE or x1 > width + CLIP_TOLERANCE or y1 > height + CLIP_TOLERANCE:
        message = f"{item.rel}: box ({x0:g},{y0:g})-({x1:g},{y1:g}) is outside the {width}x{height} image; clipped"
        written.warnings.append((item.label_source or item.image, message))
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    xc, yc, w, h = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height
    return f"{class_id} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}"


def _write_yaml(ann: Annotations, dst: Path, splits: list[str], source: dict[str, Any]) -> None:
    # No `path:` key: ultralytics then resolves the splits against this file's folder, wherever it is moved.
    data: dict[str, Any] = {split: f"images/{split}" for split in splits}
    if "val" not in data and "train" in data:
        data["val"] = data["train"]
    data["nc"] = len(ann.names)
    data["names"] = dict(enumerate(ann.names))
    data.update(ann.provenance)  # e.g. the roboflow: block of a Roboflow export, kept as provenance
    data["kiln_import"] = {"format": ann.fmt, **source}
    header = "# Written by `kiln data import`; paths are relative to this file.\n"
    (dst / "data.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
