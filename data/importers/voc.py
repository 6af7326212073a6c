"""Read Pascal VOC XML for `kiln data import`: a VOC root (Annotations/, JPEGImages/, ImageSets/Main/) or
Roboflow's VOC export (each split folder holds the images and their .xml side by side).

    kiln data import VOCdevkit/VOC2012 data/voc --format voc

Splits come from ImageSets/Main/{train,val,test}.txt or the split folder; class names are sorted (VOC files
do not list the classes). Objects marked difficult are skipped, as ultralytics does.
"""

from __future__ import annotations

from pathlib import Path

from data.importers.common import Annotations, ImportFormatError, Item, Shape, split_of_folder
from data.yolo_convert import ConversionError, read_voc


def voc_files(root: Path) -> list[Path]:
    folder = root / "Annotations" if (root / "Annotations").is_dir() else root
    return sorted(p for p in folder.rglob("*.xml") if _is_voc(p))


def _is_voc(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False
    return "<annotation" in head and "<annotations" not in head


def _image_sets(root: Path) -> dict[str, str]:
    """Image stem -> split from ImageSets/Main/<split>.txt (trainval.txt is ignored: it repeats the others)."""
    main = root / "ImageSets" / "Main"
    stems: dict[str, str] = {}
    for name in ("train", "val", "test"):
        listing = main / f"{name}.txt"
        if listing.is_file():
            stems.update({line.split()[0]: name for line in listing.read_text().splitlines() if line.strip()})
    return stems


def read_voc_export(root: Path) -> Annotations:
    xmls = voc_files(root)
    if not xmls:
        raise ImportFormatError(f"{root}: no Pascal VOC .xml files (Annotations/ or beside the images)")
    sets = _image_sets(root)
    ann = Annotations(fmt="voc", names=[], items=[])
    for xml in xmls:
        try:
            voc = read_voc(xml, root)
        except ConversionError as exc:
            raise ImportFormatError(str(exc)) from None
        first = xml.relative_to(root).parts[0]
        split = sets.get(voc.image.stem) or split_of_folder(first)
        item = Item(image=voc.image, rel=voc.image.name, split=split, size=(voc.width, voc.height), label_source=xml)
        for obj in voc.objects:
            if obj.difficult:
                ann.skipped["difficult"] += 1
                continue
            x0, y0, x1, y1 = obj.box
            item.shapes.append(Shape(label=obj.name, box=(x0 - 1, y0 - 1, x1, y1), where=str(xml)))  # 1-based pixels
        ann.items.append(item)
    ann.names = sorted({s.label for item in ann.items for s in item.shapes})
    return ann
