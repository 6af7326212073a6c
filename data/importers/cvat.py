"""Read CVAT for images 1.1 XML for `kiln data import`: annotations.xml, with the images beside it or in images/.

    kiln data import cvat-task.zip data/parts --format cvat

Class names come from the labels in `<meta>` in their order. `<box>` becomes a box; `<polygon>` and `<mask>`
(CVAT's row-major RLE over its own box) become masks as well. Polylines, points, skeletons and tags carry no
area and are counted as skipped. An image's `subset` (Train, Validation, Test) is its split.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

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
from data.importers.rle import cvat_rle_decode

SKIPPED_TAGS = ("polyline", "points", "skeleton", "tag", "cuboid", "ellipse")


def cvat_file(root: Path) -> Path | None:
    for path in [root / "annotations.xml", *sorted(root.glob("*.xml"))]:
        if path.is_file() and "<annotations" in path.read_text(encoding="utf-8", errors="replace")[:400]:
            return path
    return None


def read_cvat(root: Path) -> Annotations:
    xml = cvat_file(root)
    if xml is None:
        raise ImportFormatError(f"{root}: no annotations.xml (CVAT for images 1.1)")
    try:
        doc = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise ImportFormatError(f"{xml}: not valid XML: {exc}") from None
    if doc.find("track") is not None:
        raise ImportFormatError(f"{xml}: holds <track> elements (CVAT for video); export as 'CVAT for images 1.1'")
    names = [n.text.strip() for n in doc.iterfind("meta//labels/label/name") if n.text]
    ann = Annotations(fmt="cvat", names=list(dict.fromkeys(names)), items=[])
    index = image_index(root)
    for node in doc.iter("image"):
        ann.items.append(_item(ann, node, xml, root, index))
    if not ann.names:
        ann.names = sorted({s.label for item in ann.items for s in item.shapes})
    return ann


def _item(ann: Annotations, node: ET.Element, xml: Path, root: Path, index: dict[str, list[Path]]) -> Item:
    name = node.get("name", "")
    where = f"{xml}: image {name!r}"
    subset = node.get("subset", "")
    roots = [root / "images" / subset, root / "images", root] if subset else [root / "images", root]
    image = find_image(name, roots, index)
    if image is None:
        raise ImportFormatError(f"{where} not found in {root / 'images'} or {root}")
    width, height = _int(node, "width", where), _int(node, "height", where)
    item = Item(image=image, rel=safe_rel(name, where), split=split_of_folder(subset), size=(width, height),
                label_source=xml)  # fmt: skip
    for child in node:
        shape = _shape(child, where, width, height)
        if shape is None:
            ann.skipped[child.tag] += 1
        else:
            item.shapes.append(shape)
    return item


def _shape(child: ET.Element, where: str, width: int, height: int) -> Shape | None:
    label = child.get("label", "")
    here = f"{where} <{child.tag} label={label!r}>"
    if child.tag == "box":
        box = tuple(_float(child, k, here) for k in ("xtl", "ytl", "xbr", "ybr"))
        return Shape(label=label, box=box, where=here)  # type: ignore[arg-type]
    if child.tag == "polygon":
        return Shape(label=label, polygons=[_points(child.get("points", ""), here)], where=here)
    if child.tag == "mask":
        left, top = _int(child, "left", here), _int(child, "top", here)
        w, h = _int(child, "width", here), _int(child, "height", here)
        local = cvat_rle_decode(child.get("rle", ""), w, h, here)
        full = np.zeros((height, width), dtype=bool)
        full[top : top + h, left : left + w] = local[: max(0, height - top), : max(0, width - left)]
        return Shape(label=label, mask=full, where=here)
    return None


def _points(text: str, where: str) -> np.ndarray:
    try:
        return np.array([[float(v) for v in pair.split(",")] for pair in text.split(";") if pair], dtype=np.float64)
    except ValueError:
        raise ImportFormatError(f"{where}: points {text[:40]!r} are not 'x,y;x,y;...'") from None


def _float(node: ET.Element, key: str, where: str) -> float:
    try:
        return float(node.get(key, ""))
    except ValueError:
        raise ImportFormatError(f"{where}: {key}={node.get(key)!r} is not a number") from None


def _int(node: ET.Element, key: str, where: str) -> int:
    return round(_float(node, key, where))
