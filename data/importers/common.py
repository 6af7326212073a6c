"""The record every `kiln data import` reader returns, and the steps all formats share: unpacking a zip,
finding an image an annotation names, and turning polygons and boxes into pixels.

    python -c "from data.importers.common import split_of_folder; print(split_of_folder('valid'))"

A reader turns an export into `Annotations`: class names in order, and one `Item` per image with its split (or
None) and its shapes in source pixels. `data.importers.writer` writes kiln's layout from that.
"""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from core.errors import DatasetError
from data.yolo_layout import is_image

# Folder and subset names exports use for their splits -> kiln's split names.
SPLIT_NAMES = {
    "train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


class ImportFormatError(DatasetError):
    """An export kiln cannot read: the message names the file and what is wrong with it."""


@dataclass
class Shape:
    label: str  # class name as the export spells it
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in image pixels
    polygons: list[np.ndarray] = field(default_factory=list)  # each (K, 2) float pixels; filled into the mask
    mask: np.ndarray | None = None  # bool (h, w) over the whole image: RLE or brush masks
    normalised: bool = False  # polygons are in (0, 1] of the image side (YOLO segmentation labels)
    where: str = ""  # the annotation it came from, for messages: "annotations.xml: image 3"


@dataclass
class Item:
    image: Path  # the source image file
    rel: str  # path below images/<split>/ in the destination (posix, no '..')
    split: str | None  # train, val, test, or None when the export has no splits
    shapes: list[Shape] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) as the annotation states it; None = read the image
    yolo_lines: list[str] | None = None  # YOLO sources: label lines as found (class ids), written verbatim
    label_source: Path | None = None  # the annotation file, named in messages


@dataclass
class Annotations:
    fmt: str  # the format read: roboflow-yolo, coco, voc, cvat, labelstudio
    names: list[str]  # class names, index = class id
    items: list[Item]
    provenance: dict[str, Any] = field(default_factory=dict)  # what the export says about itself (roboflow: ...)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> shapes left out
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # (file, message) found while reading

    def class_id(self, label: str, where: str) -> int:
        if label not in self.names:
            raise ImportFormatError(f"{where}: label {label!r} is not one of the classes {self.names}")
        return self.names.index(label)


def split_of_folder(name: str) -> str | None:
    return SPLIT_NAMES.get(name.lower())


def safe_rel(name: str, where: str) -> str:
    """An image name from an annotation as a relative posix path; absolute paths and '..' are refused."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ImportFormatError(f"{where}: image name {name!r} must be a relative path without '..'")
    return path.as_posix()


def unpack(src: Path, work: Path) -> Path:
    """SRC as a folder: a zip is extracted into `work` (members outside it refused); a lone top folder is entered."""
    if src.is_dir():
        return src
    if not src.is_file():
        raise DatasetError(f"{src}: no such file or folder")
    if not zipfile.is_zipfile(src):
        raise DatasetError(f"{src}: not a zip file or a folder")
    with zipfile.ZipFile(src) as archive:
        for member in archive.infolist():
            target = (work / member.filename).resolve()
            if not target.is_relative_to(work.resolve()):
                raise DatasetError(f"{src}: member {member.filename!r} would be written outside the folder")
        archive.extractall(work)
    shutil.rmtree(work / "__MACOSX", ignore_errors=True)
    entries = [p for p in work.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else work


def find_image(name: str, roots: list[Path], index: dict[str, list[Path]] | None = None) -> Path | None:
    """`name` below one of `roots` (also below their images/), else a unique file of that base name in `index`."""
    for root in roots:
        for candidate in (root / name, root / "images" / name):
            if candidate.is_file():
                return candidate
    found = (index or {}).get(PurePosixPath(name).name, [])
    return found[0] if len(found) == 1 else None


def image_index(root: Path) -> dict[str, list[Path]]:
    """Base name -> image files under `root`, for exports that name images by a path from another machine."""
    index: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_image(path):
            index.setdefault(path.name, []).append(path)
    return index


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # PIL raises many types for a bad file
        raise DatasetError(f"{path}: image does not open: {exc}") from None


def shape_mask(shape: Shape, width: int, height: int) -> np.ndarray | None:
    """The shape's pixels as bool (height, width): its mask, its filled polygons; None for a plain box."""
    if shape.mask is None and not shape.polygons:
        return None
    mask = np.zeros((height, width), dtype=np.uint8)
    if shape.mask is not None:
        if shape.mask.shape != (height, width):
            raise ImportFormatError(
                f"{shape.where}: mask is {shape.mask.shape[1]}x{shape.mask.shape[0]}, the image {width}x{height}"
            )
        mask[shape.mask] = 1
    scale = np.array([width, height], dtype=np.float64) if shape.normalised else 1.0
    polys = [np.round(p * scale).astype(np.int32).reshape(-1, 1, 2) for p in shape.polygons if len(p) >= 3]
    if polys:
        cv2.fillPoly(mask, polys, 1)
    return mask.astype(bool)


def shape_box(shape: Shape, mask: np.ndarray | None) -> tuple[float, float, float, float] | None:
    """The shape's box in pixels: given, else the extent of its polygons or mask."""
    if shape.box is not None:
        return shape.box
    points = [p for p in shape.polygons if len(p)]
    if points and shape.mask is None:
        stacked = np.concatenate(points)
        return (float(stacked[:, 0].min()), float(stacked[:, 1].min()),
                float(stacked[:, 0].max()), float(stacked[:, 1].max()))  # fmt: skip
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return None
