"""Convert COCO JSON or Pascal VOC XML annotations to the YOLO layout with a dataset YAML.

    kiln data convert --from coco annotations/instances_val.json out/
    kiln data convert --from voc VOCdevkit/VOC2012 out/ --classes person,car

Writes `DST/images/*`, `DST/labels/*.txt` (one `class x y w h` line per box, normalised to (0, 1]) and
`DST/data.yaml`. Both splits point at all images until `kiln data split DST` holds some out for validation.
Boxes are clipped to the image; crowd (COCO) and difficult (VOC) boxes are skipped as ultralytics does.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from core.errors import UserError

Box = tuple[int, float, float, float, float]  # class id, x centre, y centre, width, height (normalised)
CONVERTERS: dict[str, Callable[..., ConversionResult]] = {}


class ConversionError(UserError):
    """An annotation file that cannot be converted; the message names the file and the bad value."""


@dataclass
class ConversionResult:
    yaml_path: Path  # the dataset YAML written under DST
    names: list[str]  # class names, index = YOLO class id
    images: int = 0  # images written
    boxes: int = 0  # label lines written
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> boxes left out

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return (
            f"{self.images} images, {self.boxes} boxes, {len(self.names)} classes; "
            f"skipped boxes: {skipped}; wrote {self.yaml_path}"
        )


def register_converter(name: str) -> Callable[[Callable[..., ConversionResult]], Callable[..., ConversionResult]]:
    def add(fn: Callable[..., ConversionResult]) -> Callable[..., ConversionResult]:
        CONVERTERS[name] = fn
        return fn

    return add


def convert(kind: str, src: Path, dst: Path, **options: Any) -> ConversionResult:
    if kind not in CONVERTERS:
        raise ConversionError(f"unknown annotation format {kind!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[kind](Path(src), Path(dst), **options)


def normalise(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...] | None:
    """Corner box in pixels -> (x, y, w, h) in (0, 1] after clipping to the image; None if nothing is left."""
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[2]), min(float(height), box[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)


def write_label(dst: Path, stem: str, boxes: list[Box]) -> None:
    lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes]
    (dst / "labels" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))


def copy_image(image: Path, dst: Path, written: dict[str, Path]) -> str:
    """Copy into DST/images, refusing two sources with one file name (their labels would collide)."""
    if image.name in written and written[image.name] != image:
        raise ConversionError(f"two images are named {image.name!r}: {written[image.name]} and {image}")
    written[image.name] = image
    shutil.copy2(image, dst / "images" / image.name)
    return image.stem


def write_yaml(dst: Path, names: list[str]) -> Path:
    path = dst / "data.yaml"
    data = {"train": "images", "val": "images", "names": dict(enumerate(names))}
    header = "# Written by `kiln data convert`; run `kiln data split` on this folder to hold out a validation set.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def prepare(dst: Path) -> None:
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True, exist_ok=True)


# --- COCO -------------------------------------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConversionError(f"{path}: '{key}' is missing or not a list; is this a COCO detection file?")
    coco: dict[str, Any] = data
    return coco


def _coco_image_file(entry: dict[str, Any], json_path: Path, images_dir: Path | None) -> Path:
    name: str | None = entry.get("file_name")
    if not name:
        raise ConversionError(f"{json_path}: image id {entry.get('id')} has no file_name")
    roots = [images_dir] if images_dir else [json_path.parent, json_path.parent / "images", json_path.parent.parent]
    for root in roots:
        for candidate in (root / name, root / "images" / name):
            if candidate.is_file():
                return candidate
    looked = ", ".join(str(r) for r in roots)
    raise ConversionError(f"{json_path}: image {name!r} not found (looked in {looked}); pass --images DIR")


def _coco_box(ann: dict[str, Any], image: dict[str, Any], json_path: Path) -> tuple[float, ...] | None:
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ConversionError(f"{json_path}: annotation id {ann.get('id')} has bbox {bbox!r}; expected [x, y, w, h]")
    if not (image.get("width") and image.get("height")):
        raise ConversionError(f"{json_path}: image id {image.get('id')} has no width/height")
    x, y, w, h = (float(v) for v in bbox)
    return normalise((x, y, x + w, y + h), int(image["width"]), int(image["height"]))


@register_converter("coco")
def convert_coco(src: Path, dst: Path, images_dir: Path | None = None) -> ConversionResult:
    """COCO detection JSON -> YOLO. Category ids are renumbered 0..n-1 in id order; names keep that order."""
    data = _load_json(src)
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    class_of = {int(c["id"]): i for i, c in enumerate(categories)}
    result = ConversionResult(yaml_path=dst / "data.yaml", names=[str(c["name"]) for c in categories])
    per_image: dict[int, list[Box]] = {int(im["id"]): [] for im in data["images"]}
    images = {int(im["id"]): im for im in data["images"]}
    for ann in data["annotations"]:
        image = images.get(int(ann["image_id"]))
        if image is None:
            raise ConversionError(f"{src}: annotation id {ann.get('id')} names unknown image_id {ann['image_id']}")
        if int(ann["category_id"]) not in class_of:
            raise ConversionError(f"{src}: annotation id {ann.get('id')} has unknown category_id {ann['category_id']}")
        if ann.get("iscrowd"):
            result.skipped["crowd"] += 1
            continue
        box = _coco_box(ann, image, src)
        if box is None:
            result.skipped["empty after clipping"] += 1
            continue
        per_image[int(ann["image_id"])].append((class_of[int(ann["category_id"])], *box))  # type: ignore[arg-type]
    prepare(dst)
    written: dict[str, Path] = {}
    for image_id, boxes in per_image.items():
        stem = copy_image(_coco_image_file(images[image_id], src, images_dir), dst, written)
        write_label(dst, stem, boxes)
        result.images, result.boxes = result.images + 1, result.boxes + len(boxes)
    write_yaml(dst, result.names)
    return result


# --- Pascal VOC ---------------------------------------------------------------------------------------------------


@dataclass
class VocObject:
    name: str  # class name as written in the XML
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in VOC's 1-based pixels
    difficult: bool  # VOC marks hard cases; skipped unless keep_difficult


@dataclass
class VocFile:
    xml: Path  # the annotation file
    image: Path  # the image it describes
    width: int
    height: int
    objects: list[VocObject]


def _text(node: ET.Element, tag: str, xml: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ConversionError(f"{xml}: <{tag}> missing in <{node.tag}>")
    return found.text.strip()


def _number(node: ET.Element, tag: str, xml: Path) -> float:
    raw = _text(node, tag, xml)
    try:
        return float(raw)
    except ValueError:
        raise ConversionError(f"{xml}: <{tag}> is {raw!r}, not a number") from None


def _voc_image(root: ET.Element, xml: Path, src: Path) -> Path:
    name = _text(root, "filename", xml)
    for candidate in (src / "JPEGImages" / name, xml.parent / name, src / "images" / name):
        if candidate.is_file():
            return candidate
    raise ConversionError(f"{xml}: image {name!r} not found in {src / 'JPEGImages'} or {xml.parent}")


def _voc_size(root: ET.Element, xml: Path, image: Path) -> tuple[int, int]:
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width, height = int(_number(size, "width", xml)), int(_number(size, "height", xml))
        if width > 0 and height > 0:
            return width, height
    with Image.open(image) as im:  # some tools write <size> as 0x0; the image knows better
        return im.size


def read_voc(xml: Path, src: Path) -> VocFile:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise ConversionError(f"{xml}: not valid XML: {exc}") from None
    image = _voc_image(root, xml, src)
    width, height = _voc_size(root, xml, image)
    objects = []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ConversionError(f"{xml}: an <object> has no <bndbox>")
        box = tuple(_number(bnd, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(VocObject(_text(obj, "name", xml), box, difficult))  # type: ignore[arg-type]
    return VocFile(xml, image, width, height, objects)


def _voc_xmls(src: Path) -> list[Path]:
    if not src.is_dir():
        raise ConversionError(f"{src}: not a folder; pass a VOC root (Annotations/, JPEGImages/) or a folder of XML")
    folder = src / "Annotations" if (src / "Annotations").is_dir() else src
    xmls = sorted(folder.rglob("*.xml"))
    if not xmls:
        raise ConversionError(f"{folder}: no .xml annotation files")
    return xmls


@register_converter("voc")
def convert_voc(
    src: Path, dst: Path, classes: list[str] | None = None, keep_difficult: bool = False
) -> ConversionResult:
    """Pascal VOC XML -> YOLO. Class order is `classes` when given, else the sorted names found."""
    files = [read_voc(x, src) for x in _voc_xmls(src)]
    names = classes or sorted({o.name for f in files for o in f.objects})
    class_of = {n: i for i, n in enumerate(names)}
    result = ConversionResult(yaml_path=dst / "data.yaml", names=names)
    prepare(dst)
    written: dict[str, Path] = {}
    for voc in files:
        boxes = _voc_boxes(voc, class_of, keep_difficult, result)
        write_label(dst, copy_image(voc.image, dst, written), boxes)
        result.images, result.boxes = result.images + 1, result.boxes + len(boxes)
    write_yaml(dst, names)
    return result


def _voc_boxes(voc: VocFile, class_of: dict[str, int], keep_difficult: bool, result: ConversionResult) -> list[Box]:
    boxes: list[Box] = []
    for obj in voc.objects:
        if obj.name not in class_of:
            raise ConversionError(f"{voc.xml}: object {obj.name!r} is not in --classes {sorted(class_of)}")
        if obj.difficult and not keep_difficult:
            result.skipped["difficult"] += 1
            continue
        x0, y0, x1, y1 = obj.box
        box = normalise((x0 - 1, y0 - 1, x1, y1), voc.width, voc.height)  # VOC pixels are 1-based, inclusive
        if box is None:
            result.skipped["empty after clipping"] += 1
            continue
        boxes.append((class_of[obj.name], *box))  # type: ignore[arg-type]
    return boxes
