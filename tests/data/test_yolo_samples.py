"""Procedural YOLO sample sets: deterministic, exact boxes, every class present, valid for ultralytics.

.venv/bin/python -m pytest tests/data/test_yolo_samples.py -q
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from data.cli import data as data_cli
from data.samples import SampleRequest, make_sample
from data.yolo_samples import SCENES, box_of
from data.yolo_validate import validate


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", sorted(SCENES))
def test_sets_are_deterministic_valid_and_cover_every_class(kind: str, tmp_path: Path) -> None:
    one = make_sample(kind, SampleRequest(tmp_path / "one", count=24, size=96, seed=5))
    two = make_sample(kind, SampleRequest(tmp_path / "two", count=24, size=96, seed=5))
    assert digest(one.parent) == digest(two.parent)
    report = validate(one)
    assert report.ok, report.lines()
    assert report.split_sizes == {"train": 19, "val": 5}
    assert set(report.boxes) == set(range(len(SCENES[kind].names)))


def test_a_small_set_is_a_prefix_of_a_bigger_one(tmp_path: Path) -> None:
    small = make_sample("safety", SampleRequest(tmp_path / "s", count=10, size=64, val=0.1))
    big = make_sample("safety", SampleRequest(tmp_path / "b", count=20, size=64, val=0.05))
    for i in range(9):  # both put images 0..8 in train
        name = f"safety_{i:05d}"
        assert (small.parent / "labels/train" / f"{name}.txt").read_text() == (
            big.parent / "labels/train" / f"{name}.txt"
        ).read_text()
    other_seed = make_sample("safety", SampleRequest(tmp_path / "o", count=10, size=64, val=0.1, seed=1))
    assert digest(other_seed.parent) != digest(small.parent)


def test_boxes_are_measured_from_pixels() -> None:
    alpha = np.zeros((100, 200), np.float32)
    alpha[10:30, 50:150] = 1.0
    alpha[5, 0] = 0.2  # below the visibility threshold: not part of the box
    assert box_of(alpha, 2) == (2, 0.5, 0.2, 0.5, 0.2)


def test_drawn_objects_sit_inside_their_boxes(tmp_path: Path) -> None:
    """Shapes on a grey background: colourful pixels outside every box would mean a box is too small."""
    yaml_path = make_sample("shapes", SampleRequest(tmp_path / "s", count=8, size=128))
    for image_path in sorted((yaml_path.parent / "images" / "train").glob("*.jpg")):
        image = cv2.imread(str(image_path)).astype(np.int16)
        colourful = (image.max(axis=2) - image.min(axis=2)) > 80
        label = yaml_path.parent / "labels" / "train" / f"{image_path.stem}.txt"
        inside = np.zeros_like(colourful)
        for line in label.read_text().splitlines():
            _, x, y, w, h = (float(v) for v in line.split())
            x0, y0 = int((x - w / 2) * 128) - 3, int((y - h / 2) * 128) - 3  # 3px for JPEG colour bleed
            x1, y1 = int((x + w / 2) * 128) + 3, int((y + h / 2) * 128) + 3
            inside[max(0, y0) : y1, max(0, x0) : x1] = True
        assert int((colourful & ~inside).sum()) == 0, image_path.name


def test_make_sample_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"not empty and holds no sample.json"):
        make_sample("shapes", SampleRequest(tmp_path, count=4, size=64))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_sample_and_unknown_kind(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(data_cli, ["sample", "visitor", str(tmp_path / "v"), "--count", "6", "--size", "64"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "v" / "data.yaml").is_file() and (tmp_path / "v" / "sample.json").is_file()
    bad = runner.invoke(data_cli, ["sample", "nope", str(tmp_path / "n")])
    assert bad.exit_code == 1 and "unknown sample kind 'nope'; known:" in bad.output
    too_small = runner.invoke(data_cli, ["sample", "safety", str(tmp_path / "t"), "--count", "1"])
    assert too_small.exit_code == 1 and "--count >= 2" in too_small.output
