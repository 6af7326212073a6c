"""Read COCO JSON for `kiln data import`: one instances file, or Roboflow's `_annotations.coco.json` per split.

    kiln data import instances_val2017.json data/coco-val --format coco
    kiln data import roboflow-coco.zip data/hardhat

Boxes become YOLO lines; polygons and RLE (list or pycocotools' compact string) become masks as well.
Crowd annotations are skipped, as ultralytics does. Roboflow adds a category named after the project that
every real class names as its supercategory and no annotation uses; it is dropped. Class order is by
category id. A split comes from the split folder (Roboflow) or the file name (`instances_val2017.json`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from data.importers.common import (
    Annotations,
    ImportFormatError,
    Item,
    Shape,
    find_image,
    image_index,
    safe_rel,
    split_of_folder,
)
from data.importers.rle import coco_rle_decode

ROBOFLOW_FILE = "_annotations.coco.json"


def is_coco(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("images", "annotations"))


def coco_files(root: Path) -> list[tuple[str | None, Path]]:
    """(split, json) pairs: Roboflow's split folders, else COCO JSON files at the top or under annotations/."""
    if root.is_file():
        return [(_split_of_name(root.stem), root)] if is_coco(root) else []
    found = [(split_of_folder(p.parent.name), p) for p in sorted(root.glob(f"*/{ROBOFLOW_FILE}"))]
    if found:
        return found
    candidates = sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json"))
    return [(_split_of_name(p.stem), p) for p in candidates if is_coco(p)]


def _split_of_name(stem: str) -> str | None:
    for token in re.split(r"[^a-z]+", stem.lower()):
        if split := split_of_folder(token):
            return split
    return None


def read_coco(root: Path) -> Annotations:
    files = coco_files(root)
    if not files:
        raise ImportFormatError(f"{root}: no COCO JSON ({ROBOFLOW_FILE} per split, or a file with images and "
                                "annotations lists)")  # fmt: skip
    loaded = [(split, path, _load(path)) for split, path in files]
    names = _class_names([(path, data) for _, path, data in loaded])
    ann = Annotations(fmt="coco", names=names, items=[])
    # A JSON given alone: its images are beside it, or (COCO's layout) in the folder above annotations/.
    top = root if root.is_dir() else root.parent.parent if root.parent.name == "annotations" else root.parent
    index = image_index(top)
    for split, path, data in loaded:
        _read_file(ann, split, path, data, top, index)
    return ann


def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImportFormatError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ImportFormatError(f"{path}: '{key}' is missing or not a list; is this a COCO file?")
    return data


def _class_names(files: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """Category names by id, across all files (they must agree); Roboflow's project-named parent dropped."""
    by_id: dict[int, str] = {}
    used: set[int] = set()
    parents: set[str] = set()
    for path, data in files:
        for cat in data["categories"]:
            try:
                cat_id, name = int(cat["id"]), str(cat["name"])
            except (KeyError, TypeError, ValueError):
                raise ImportFormatError(f"{path}: category {cat!r} needs an integer 'id' and a 'name'") from None
            if by_id.setdefault(cat_id, name) != name:
                raise ImportFormatError(f"{path}: category id {cat_id} is {name!r} here, {by_id[cat_id]!r} elsewhere")
            if cat.get("supercategory") not in (None, "", "none", name):
                parents.add(str(cat["supercategory"]))
        used.update(int(a.get("category_id", -1)) for a in data["annotations"])
    return [by_id[i] for i in sorted(by_id) if not (by_id[i] in parents and i not in used)]


def _read_file(
    ann: Annotations, split: str | None, path: Path, data: dict[str, Any], top: Path, index: dict[str, list[Path]]
) -> None:
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    items: dict[int, Item] = {}
    for entry in data["images"]:
        where = f"{path}: image id {entry.get('id')}"
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            raise ImportFormatError(f"{where} has no file_name")
        image = find_image(name, [path.parent, top], index)
        if image is None:
            raise ImportFormatError(f"{where}: image {name!r} not found next to the JSON, in images/ or under {top}")
        size = (int(entry["width"]), int(entry["height"])) if entry.get("width") and entry.get("height") else None
        rel = safe_rel(name, where) if (path.parent / name).is_file() or (top / name).is_file() else image.name
        items[int(entry["id"])] = Item(image=image, rel=rel, split=split, size=size, label_source=path)
    for a in data["annotations"]:
        _add_annotation(ann, path, a, items, categories)
    ann.items.extend(items.values())


def _add_annotation(
    ann: Annotations, path: Path, a: dict[str, Any], items: dict[int, Item], categories: dict[int, str]
) -> None:
    where = f"{path}: annotation id {a.get('id')}"
    item = items.get(int(a.get("image_id", -1)))
    if item is None:
        raise ImportFormatError(f"{where} names unknown image_id {a.get('image_id')}")
    label = categories.get(int(a.get("category_id", -1)))
    if label is None:
        raise ImportFormatError(f"{where} has unknown category_id {a.get('category_id')}")
    if a.get("iscrowd"):
        ann.skipped["crowd"] += 1
        return
    shape = Shape(label=label, where=where)
    bbox = a.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        x, y, w, h = (float(v) for v in bbox)
        shape.box = (x, y, x + w, y + h)
    seg = a.get("segmentation")
    if isinstance(seg, list):
        shape.polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg if len(p) >= 6]
    elif isinstance(seg, dict):
        shape.mask = coco_rle_decode(seg, where)
    if shape.box is None and not shape.polygons and shape.mask is None:
        raise ImportFormatError(f"{where} has neither a bbox [x, y, w, h] nor a segmentation")
    item.shapes.append(shape)
