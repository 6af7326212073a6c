"""Small annotation exports laid out as the real tools write them, for the `kiln data import` tests.

    python -c "import pathlib, tests.data.exports as e; print(e.roboflow_yolo(pathlib.Path('/tmp/x')))"

Each builder writes a folder (and `zip_folder` packs it as the tool's download does). Images are 64x48 JPEGs
of a bright rectangle on a dark, noisy background; every builder draws the object where its label says.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from data.importers.rle import brush_rle_encode, coco_rle_encode

W, H = 64, 48
NAMES = ["head", "helmet"]


def picture(path: Path, seed: int, box: tuple[int, int, int, int]) -> None:
    """A JPEG with a bright rectangle at `box` (x0, y0, x1, y1); the seed makes each file's bytes differ."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 200 + seed % 50
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def box_of(seed: int) -> tuple[int, int, int, int]:
    x0, y0 = 4 + seed % 20, 4 + (seed * 7) % 14
    return x0, y0, x0 + 20, y0 + 16


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def roboflow_yolo(root: Path, extra: int = 0) -> Path:
    """Roboflow's YOLOv8 export: data.yaml with ../train/images paths, train/ valid/ test/, rf-hashed names.
    `extra` adds that many train images (seeds from 100), as a newer version of the same project would."""
    seeds = {"train": [*range(6), *range(100, 100 + extra)], "valid": [6, 7], "test": [8]}
    for split, split_seeds in seeds.items():
        for seed in split_seeds:
            name = f"img{seed:03d}_jpg.rf.{seed:08x}"
            x0, y0, x1, y1 = box_of(seed)
            picture(root / split / "images" / f"{name}.jpg", seed, (x0, y0, x1, y1))
            line = f"{seed % 2} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}"
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{name}.txt").write_text(line + "\n")
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['head', 'helmet']\n\n"
        "roboflow:\n  workspace: acme\n  project: hardhat\n  version: 1\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/acme/hardhat/dataset/1\n"
    )
    (root / "README.roboflow.txt").write_text("hardhat - v1\nThis dataset was exported via roboflow.com\n")
    return root


def _coco(files: list[tuple[str, int]], with_masks: bool, roboflow: bool) -> dict[str, object]:
    categories = [{"id": i + 1, "name": n, "supercategory": "hardhat" if roboflow else "none"}
                  for i, n in enumerate(NAMES)]  # fmt: skip
    if roboflow:  # Roboflow's extra parent category named after the project, used by no annotation
        categories.insert(0, {"id": 0, "name": "hardhat", "supercategory": "none"})
    images, annotations = [], []
    for image_id, (name, seed) in enumerate(files):
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
        x0, y0, x1, y1 = box_of(seed)
        ann: dict[str, object] = {"id": image_id, "image_id": image_id, "category_id": 1 + seed % 2, "iscrowd": 0,
                                  "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}  # fmt: skip
        if with_masks and seed % 2:
            mask = np.zeros((H, W), dtype=bool)
            mask[y0:y1, x0:x1] = True
            ann["segmentation"] = coco_rle_encode(mask)
        elif with_masks:
            ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        else:
            ann["segmentation"] = []
        annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": categories}


def roboflow_coco(root: Path) -> Path:
    """Roboflow's COCO export: train/ valid/ test/, each with its images and _annotations.coco.json."""
    seed = 0
    for split, count in {"train": 5, "valid": 2, "test": 1}.items():
        files = []
        for _ in range(count):
            name = f"img{seed:03d}_jpg.rf.{seed:08x}.jpg"
            picture(root / split / name, seed, box_of(seed))
            files.append((name, seed))
            seed += 1
        (root / split / "_annotations.coco.json").write_text(json.dumps(_coco(files, False, roboflow=True)))
    return root


def coco_masks(root: Path, count: int = 8) -> Path:
    """A COCO 1.0 export as CVAT writes it: annotations/instances_default.json + images/; polygons and RLE."""
    files = []
    for seed in range(count):
        picture(root / "images" / f"frame_{seed:06d}.jpg", seed, box_of(seed))
        files.append((f"frame_{seed:06d}.jpg", seed))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(_coco(files, True, roboflow=False)))
    return root


def voc(root: Path, count: int = 6) -> Path:
    """A VOC root: Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt."""
    stems = []
    for seed in range(count):
        stem = f"2024_{seed:06d}"
        x0, y0, x1, y1 = box_of(seed)
        picture(root / "JPEGImages" / f"{stem}.jpg", seed, (x0, y0, x1, y1))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>JPEGImages</folder><filename>{stem}.jpg</filename>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>"
            f"<object><name>{NAMES[seed % 2]}</name><difficult>0</difficult>"
            f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
            "</object></annotation>"
        )
        stems.append(stem)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (main / "train.txt").write_text("".join(s + "\n" for s in stems[:-2]))
    (main / "val.txt").write_text("".join(s + "\n" for s in stems[-2:]))
    return root


def cvat(root: Path, count: int = 6) -> Path:
    """CVAT for images 1.1: annotations.xml + images/<subset>/; a box, a polygon or a mask per image."""
    labels = "".join(f"<label><name>{n}</name><color>#ff0000</color><attributes/></label>" for n in NAMES)
    body = []
    for seed in range(count):
        subset = "Train" if seed < count - 2 else "Validation"
        name = f"frame_{seed:06d}.jpg"
        x0, y0, x1, y1 = box_of(seed)
        picture(root / "images" / subset / name, seed, (x0, y0, x1, y1))
        label = NAMES[seed % 2]
        if seed % 3 == 0:
            shape = f'<box label="{label}" occluded="0" xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" z_order="0"/>'
        elif seed % 3 == 1:
            points = f"{x0},{y0};{x1},{y0};{x1},{y1};{x0},{y1}"
            shape = f'<polygon label="{label}" occluded="0" points="{points}" z_order="0"/>'
        else:
            runs = [0, (x1 - x0) * (y1 - y0)]  # CVAT's RLE over its own box: all set
            shape = (f'<mask label="{label}" rle="{", ".join(map(str, runs))}" left="{x0}" top="{y0}" '
                     f'width="{x1 - x0}" height="{y1 - y0}" z_order="0"/>')  # fmt: skip
        body.append(f'<image id="{seed}" name="{name}" subset="{subset}" width="{W}" height="{H}">{shape}'
                    '<polyline label="head" points="1,1;5,5"/></image>')  # fmt: skip
    (root / "annotations.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><project><labels>{labels}'
        f"</labels></project></meta>{''.join(body)}</annotations>"
    )
    return root


def labelstudio(root: Path, count: int = 6) -> Path:
    """Label Studio's JSON export (upload-prefixed names in data.image) with the images in images/."""
    tasks = []
    for seed in range(count):
        name = f"photo{seed}.jpg"
        x0, y0, x1, y1 = box_of(seed)
        picture(root / "images" / name, seed, (x0, y0, x1, y1))
        common = {"original_width": W, "original_height": H, "from_name": "label", "to_name": "image"}
        if seed % 3 == 0:
            value = {"x": x0 / W * 100, "y": y0 / H * 100, "width": (x1 - x0) / W * 100, "height": (y1 - y0) / H * 100,
                     "rotation": 0, "rectanglelabels": [NAMES[seed % 2]]}  # fmt: skip
            result = {"id": f"r{seed}", "type": "rectanglelabels", "value": value, **common}
        elif seed % 3 == 1:
            points = [[x / W * 100, y / H * 100] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
            value = {"points": points, "polygonlabels": [NAMES[seed % 2]]}
            result = {"id": f"r{seed}", "type": "polygonlabels", "value": value, **common}
        else:
            mask = np.zeros((H, W), dtype=bool)
            mask[y0:y1, x0:x1] = True
            value = {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": [NAMES[seed % 2]]}
            result = {"id": f"r{seed}", "type": "brushlabels", "value": value, **common}
        tasks.append({"id": seed + 1, "data": {"image": f"/data/upload/1/{seed:08x}-{name}"},
                      "annotations": [{"id": seed, "was_cancelled": False, "result": [result]}]})  # fmt: skip
    (root / "project-1-at-2026-12-06.json").write_text(json.dumps(tasks))
    return root
