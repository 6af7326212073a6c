"""Read a Roboflow YOLOv5/v8/v11 export (or any YOLO folder with a data.yaml) for `kiln data import`.

    kiln data import roboflow-export.zip data/hardhat --format roboflow-yolo

Roboflow writes `data.yaml` + `train/ valid/ test/` (each `images/` + `labels/`) with split paths such as
`../train/images` that only resolve from a folder the zip was never unpacked into. Those paths are ignored:
the split folders are found by name. The `roboflow:` block (workspace, project, version, license, url) is kept
as provenance. Segmentation exports (`class x1 y1 x2 y2 ...` polygon lines) become a box line plus the polygon.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.importers.common import Annotations, ImportFormatError, Item, Shape, split_of_folder
from data.yolo_layout import YAML_NAMES, list_images, parse_names, read_yaml


def find_data_yaml(root: Path) -> Path | None:
    return next((root / n for n in YAML_NAMES if (root / n).is_file()), None)


def split_folders(root: Path) -> list[tuple[str | None, Path, Path]]:
    """(split, images folder, labels folder): Roboflow's `<split>/images`, ultralytics' `images/<split>`, or a
    flat `images/` + `labels/` with no split."""
    found: list[tuple[str | None, Path, Path]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        split = split_of_folder(folder.name)
        if split and (folder / "images").is_dir():
            found.append((split, folder / "images", folder / "labels"))
    if not found and (root / "images").is_dir():
        for folder in sorted(p for p in (root / "images").iterdir() if p.is_dir()):
            if split := split_of_folder(folder.name):
                found.append((split, folder, root / "labels" / folder.name))
        if not found:
            found.append((None, root / "images", root / "labels"))
    return found


def read_yolo(root: Path) -> Annotations:
    yaml_path = find_data_yaml(root)
    if yaml_path is None:
        raise ImportFormatError(f"{root}: no data.yaml; a YOLO export has data.yaml beside train/ valid/ test/")
    data = read_yaml(yaml_path)
    names = parse_names(data.get("names"), yaml_path, data.get("nc"))
    provenance = {k: data[k] for k in ("roboflow",) if isinstance(data.get(k), dict)}
    ann = Annotations(fmt="roboflow-yolo", names=names, items=[], provenance=provenance)
    folders = split_folders(root)
    if not folders:
        raise ImportFormatError(f"{root}: no train/ valid/ test/ folders with images/ inside, and no images/ folder")
    for split, images, labels in folders:
        for image in list_images(images):
            rel = image.relative_to(images).as_posix()
            label = (labels / rel).with_suffix(".txt")
            ann.items.append(_item(image, rel, split, label))
    return ann


def _item(image: Path, rel: str, split: str | None, label: Path) -> Item:
    item = Item(image=image, rel=rel, split=split, yolo_lines=[], label_source=label)
    if not label.is_file():
        return item
    assert item.yolo_lines is not None
    for number, line in enumerate(label.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        polygon = _polygon(fields)
        if polygon is None:
            item.yolo_lines.append(line.strip())  # a box, or a bad line `kiln data validate` will point at
            continue
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0)
        item.yolo_lines.append(f"{fields[0]} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
        where = f"{label}:{number}"
        item.shapes.append(Shape(label=fields[0], polygons=[polygon], normalised=True, where=where))
    return item


def _polygon(fields: list[str]) -> np.ndarray | None:
    """A segmentation line's points (K, 2) normalised, or None for a box line or a line that does not parse."""
    if len(fields) < 7 or len(fields) % 2 == 0:
        return None
    try:
        points = np.array([float(v) for v in fields[1:]], dtype=np.float64).reshape(-1, 2)
    except ValueError:
        return None
    if not np.isfinite(points).all() or points.min() < 0 or points.max() > 1:
        return None
    return np.clip(points, 0.0, 1.0)
