"""Read Label Studio's JSON export for `kiln data import`: the JSON list of tasks plus the image files.

    kiln data import project-1.json data/parts --format labelstudio
    kiln data import ls-export.zip data/parts        # the JSON and the images in one zip or folder

Rectangles (percent of the image, rotation turned into the rotated corners' extent), polygons and brush masks
(Label Studio's RLE) are read from each task's first annotation that was not cancelled. Images are found by
file name under the export folder; Label Studio's upload prefix (`1a2b3c4d-photo.jpg`) may be absent there.
There are no splits; class names are sorted.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import numpy as np

from data.importers.common import Annotations, ImportFormatError, Item, Shape, image_index
from data.importers.rle import brush_rle_decode

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
LABEL_KEYS = ("rectanglelabels", "polygonlabels", "brushlabels", "labels")


def is_labelstudio(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "data" in data[0]


def labelstudio_file(root: Path) -> Path | None:
    if root.is_file():
        return root
    return next((p for p in sorted(root.glob("*.json")) if is_labelstudio(p)), None)


def read_labelstudio(root: Path) -> Annotations:
    path = labelstudio_file(root)
    if path is None:
        raise ImportFormatError(f"{root}: no Label Studio JSON export (a list of tasks with 'data')")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise ImportFormatError(f"{path}: expected a list of tasks (Label Studio's JSON export)")
    index = image_index(path.parent)
    ann = Annotations(fmt="labelstudio", names=[], items=[])
    for number, task in enumerate(tasks):
        item = _item(ann, task, f"{path}: task {task.get('id', number)}", index)
        if item is not None:
            item.label_source = path
            ann.items.append(item)
    ann.names = sorted({s.label for item in ann.items for s in item.shapes})
    return ann


def _image_ref(task: dict[str, Any], where: str) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise ImportFormatError(f"{where}: no 'data' object")
    for value in ([data["image"]] if "image" in data else []) + list(data.values()):
        if isinstance(value, str) and PurePosixPath(value.split("?")[0]).suffix:
            return unquote(value.split("?")[0])
    raise ImportFormatError(f"{where}: 'data' names no image file")


def _find(ref: str, index: dict[str, list[Path]]) -> Path | None:
    base = PurePosixPath(ref).name
    for name in (base, UPLOAD_PREFIX.sub("", base)):
        if len(index.get(name, [])) == 1:
            return index[name][0]
    return None


def _item(ann: Annotations, task: dict[str, Any], where: str, index: dict[str, list[Path]]) -> Item | None:
    ref = _image_ref(task, where)
    image = _find(ref, index)
    if image is None:
        raise ImportFormatError(f"{where}: image {ref!r} not found under the export folder (by file name)")
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        ann.skipped["unlabelled task"] += 1
        return None
    item = Item(image=image, rel=image.name, split=None)
    for result in annotations[0].get("result") or []:
        shape = _shape(result, where)
        if shape is None:
            ann.skipped[str(result.get("type", "unknown"))] += 1
            continue
        item.shapes.append(shape)
        item.size = (int(result["original_width"]), int(result["original_height"]))
    return item


def _shape(result: dict[str, Any], where: str) -> Shape | None:
    value = result.get("value") or {}
    label = next((value[k][0] for k in LABEL_KEYS if value.get(k)), None)
    kind = result.get("type")
    if label is None or kind not in ("rectanglelabels", "polygonlabels", "brushlabels"):
        return None
    try:
        width, height = int(result["original_width"]), int(result["original_height"])
    except (KeyError, TypeError, ValueError):
        raise ImportFormatError(f"{where}: result {result.get('id')!r} has no original_width/height") from None
    here = f"{where} result {result.get('id')!r}"
    scale = np.array([width / 100.0, height / 100.0])
    if kind == "rectanglelabels":
        corners = _rectangle(value, scale)
        box = (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())
        return Shape(label=label, box=tuple(float(v) for v in box), where=here)  # type: ignore[arg-type]
    if kind == "polygonlabels":
        points = np.asarray(value.get("points") or [], dtype=np.float64).reshape(-1, 2) * scale
        return Shape(label=label, polygons=[points], where=here)
    if value.get("format") != "rle":
        raise ImportFormatError(f"{here}: brush format {value.get('format')!r}; only 'rle' is read")
    return Shape(label=label, mask=brush_rle_decode(value.get("rle") or [], width, height, here), where=here)


def _rectangle(value: dict[str, Any], scale: np.ndarray) -> np.ndarray:
    """The four corners in pixels; Label Studio rotates about the top-left corner, clockwise in degrees."""
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    angle = math.radians(float(value.get("rotation") or 0.0))
    offsets = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) * scale
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners: np.ndarray = offsets @ rotation.T + np.array([x, y]) * scale
    return corners
