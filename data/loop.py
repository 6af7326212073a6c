"""The data-loop folder: where collect, filter, autolabel, review and version keep images, labels and state.

python -c "from data.loop import class_names; print(class_names('data/door'))"

DST/images/...            collected images (kept by the filter); `kiln data split` may move them to images/train ...
DST/labels/...            human labels only (YOLO txt, ultralytics' images -> labels rule): written by a review
DST/prelabels/...         the model's pre-labels, YOLO txt with a sixth column, the confidence
DST/rejected/<reason>/... images the filter rejected
DST/classes.txt           class names, one a line (a data.yaml's `names` wins when there is one)
DST/.kiln/                tool state: collect manifest, filter log, review database; never versioned
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DatasetError
from data.yolo_layout import find_yaml, label_path, parse_names, read_yaml


@dataclass(frozen=True)
class Box:
    """A box in original image pixels (x1, y1) top-left, (x2, y2) bottom-right."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"class_id": self.class_id, "x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2}
        if self.confidence is not None:
            out["confidence"] = self.confidence
        return out

    def yolo_line(self, width: int, height: int, with_confidence: bool = False) -> str:
        cx = (self.x1 + self.x2) / 2 / width
        cy = (self.y1 + self.y2) / 2 / height
        w = (self.x2 - self.x1) / width
        h = (self.y2 - self.y1) / height
        line = f"{self.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
        if with_confidence and self.confidence is not None:
            line += f" {self.confidence:.4f}"
        return line


def parse_yolo_line(line: str, width: int, height: int) -> Box:
    parts = line.split()
    cls, cx, cy, w, h = int(parts[0]), *(float(p) for p in parts[1:5])
    conf = float(parts[5]) if len(parts) > 5 else None
    return Box(cls, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height, conf)


def read_boxes(path: Path, width: int, height: int) -> list[Box]:
    if not path.is_file():
        return []
    return [parse_yolo_line(line, width, height) for line in path.read_text().splitlines() if line.strip()]


def write_boxes(path: Path, boxes: list[Box], width: int, height: int, with_confidence: bool = False) -> None:
    """Atomic: write a sibling temp file, fsync, rename over the old one."""
    text = "".join(b.yolo_line(width, height, with_confidence) + "\n" for b in boxes)
    atomic_write(path, text.encode())


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def validate_box(raw: Any, index: int, width: int, height: int, n_classes: int) -> Box:
    """A box a person drew, checked and clipped to the image; KilnError naming `boxes[i].field` otherwise."""
    where = f"boxes[{index}]"
    if not isinstance(raw, dict):
        raise DatasetError(f"{where} must be an object with class_id, x1, y1, x2, y2", status_code=422, field=where)
    cls = raw.get("class_id")
    if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < n_classes:
        raise DatasetError(
            f"{where}.class_id {cls!r} is not a class id 0..{n_classes - 1}", status_code=422, field=f"{where}.class_id"
        )
    coords: list[float] = []
    for key in ("x1", "y1", "x2", "y2"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DatasetError(f"{where}.{key} {value!r} is not a number", status_code=422, field=f"{where}.{key}")
        coords.append(float(value))
    x1, x2 = sorted((min(max(coords[0], 0.0), width), min(max(coords[2], 0.0), width)))
    y1, y2 = sorted((min(max(coords[1], 0.0), height), min(max(coords[3], 0.0), height)))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise DatasetError(
            f"{where} ({coords[0]:.0f},{coords[1]:.0f})-({coords[2]:.0f},{coords[3]:.0f}) is under one pixel wide "
            f"or high inside the {width}x{height} image",
            status_code=422,
            field=where,
        )
    return Box(cls, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))


def label_file(dst: Path, rel: str) -> Path:
    """The human label file of image `rel` (relative to DST, starting with images/)."""
    return label_path(dst / rel)


def prelabel_file(dst: Path, rel: str) -> Path:
    return (dst / "prelabels" / Path(rel).relative_to("images")).with_suffix(".txt")


def class_names(dst: Path) -> list[str]:
    """`names` of DST's data.yaml, else DST/classes.txt, else []."""
    yaml_path = find_yaml(dst)
    if yaml_path is not None:
        data = read_yaml(yaml_path)
        if data.get("names") is not None or data.get("nc") is not None:
            return parse_names(data.get("names"), yaml_path, data.get("nc"))
    classes = dst / "classes.txt"
    if classes.is_file():
        return [n.strip() for n in classes.read_text(encoding="utf-8").splitlines() if n.strip()]
    return []


def ensure_class_names(dst: Path, names: list[str], model: str) -> None:
    """Write classes.txt from the model's names, or check that the folder's names agree with them."""
    current = class_names(dst)
    if not current:
        atomic_write(dst / "classes.txt", "".join(f"{n}\n" for n in names).encode())
        return
    if current != names:
        raise DatasetError(
            f"{dst}: class names {current} differ from model {model}'s {names}; "
            "label this folder with a model trained on the same classes"
        )
