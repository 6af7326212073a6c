"""`kiln data convert --from coco|voc`: exact boxes, class order, skipped boxes, named errors.

.venv/bin/python -m pytest tests/data/test_yolo_convert.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from data.cli import data as data_cli
from data.yolo_convert import ConversionError, convert
from data.yolo_validate import validate


def write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((height, width, 3), np.uint8))


def labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    write_image(tmp_path / "src" / "images" / "a.jpg", 200, 100)
    write_image(tmp_path / "src" / "images" / "b.jpg", 100, 100)
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100},
        ],
        "categories": [{"id": 7, "name": "fire"}, {"id": 3, "name": "smoke"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [20, 10, 40, 50], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [180, 80, 40, 40], "iscrowd": 0},  # clipped
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},  # crowd
        ],
    }
    path = tmp_path / "src" / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_boxes_classes_and_yaml(coco: Path, tmp_path: Path) -> None:
    result = convert("coco", coco, tmp_path / "out")
    assert result.names == ["smoke", "fire"]  # category ids 3, 7 in id order
    assert (result.images, result.boxes, dict(result.skipped)) == (2, 2, {"crowd": 1})
    rows = labels(tmp_path / "out" / "labels" / "a.txt")
    assert rows[0] == pytest.approx([1, 0.2, 0.35, 0.2, 0.5])  # (20+40/2)/200, (10+50/2)/100
    assert rows[1] == pytest.approx([0, 0.95, 0.9, 0.1, 0.2])  # clipped to the 200x100 image
    assert (tmp_path / "out" / "labels" / "b.txt").read_text() == ""  # no boxes: background image
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == {0: "smoke", 1: "fire"} and data["train"] == "images"
    assert validate(tmp_path / "out" / "data.yaml").ok


def test_coco_missing_image_names_it(coco: Path, tmp_path: Path) -> None:
    (coco.parent / "images" / "b.jpg").unlink()
    with pytest.raises(ConversionError, match=r"image 'b.jpg' not found"):
        convert("coco", coco, tmp_path / "out")


def test_coco_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConversionError, match=r"bad.json: not valid JSON"):
        convert("coco", bad, tmp_path / "out")
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ConversionError, match=r"'annotations' is missing"):
        convert("coco", bad, tmp_path / "out")


def voc_xml(filename: str, objects: list[tuple[str, int, int, int, int, int]], size: tuple[int, int]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for n, x0, y0, x1, y1, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC"
    write_image(root / "JPEGImages" / "p.jpg", 100, 50)
    (root / "Annotations").mkdir(parents=True)
    objects = [("person", 1, 1, 50, 50, 0), ("car", 51, 11, 100, 30, 0), ("car", 1, 1, 10, 10, 1)]
    (root / "Annotations" / "p.xml").write_text(voc_xml("p.jpg", objects, (100, 50)))
    return root


def test_voc_boxes_sorted_names_and_difficult(voc: Path, tmp_path: Path) -> None:
    result = convert("voc", voc, tmp_path / "out")
    assert result.names == ["car", "person"]
    assert dict(result.skipped) == {"difficult": 1}
    rows = labels(tmp_path / "out" / "labels" / "p.txt")
    assert rows[0] == pytest.approx([1, 0.25, 0.5, 0.5, 1.0])  # 1-based inclusive pixels 1..50 of 100x50
    assert rows[1] == pytest.approx([0, 0.75, 0.4, 0.5, 0.4])  # pixels 51..100 x 11..30
    assert validate(tmp_path / "out").ok


def test_voc_keep_difficult_and_class_order(voc: Path, tmp_path: Path) -> None:
    result = convert("voc", voc, tmp_path / "out", classes=["person", "car"], keep_difficult=True)
    assert result.names == ["person", "car"] and result.boxes == 3
    assert labels(tmp_path / "out" / "labels" / "p.txt")[0][0] == 0


def test_voc_unknown_class_and_bad_xml(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"p.xml: object 'car' is not in --classes"):
        convert("voc", voc, tmp_path / "out", classes=["person"])
    (voc / "Annotations" / "broken.xml").write_text("<annotation>")
    with pytest.raises(ConversionError, match=r"broken.xml: not valid XML"):
        convert("voc", voc, tmp_path / "out2")


def test_cli_convert_and_errors(coco: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(data_cli, ["convert", "--from", "coco", str(coco), str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "2 images, 2 boxes, 2 classes; skipped boxes: 1 crowd" in ok.output
    bad = runner.invoke(data_cli, ["convert", "--from", "voc", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "nope" in bad.output
