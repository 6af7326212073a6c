"""`kiln data validate`: every problem as file:line: message, a summary, exit 1 on problems.

.venv/bin/python -m pytest tests/data/test_yolo_validate.py -q
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from core.errors import DatasetError
from data.cli import data as data_cli
from data.yolo_validate import check_label_line, validate


def write_image(path: Path, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), 127, np.uint8))


def make_dataset(root: Path, labels: dict[str, str], names: tuple[str, ...] = ("a", "b")) -> Path:
    """images/train/<stem>.png + labels/train/<stem>.txt for each entry; val holds one clean image."""
    for stem, text in labels.items():
        write_image(root / "images" / "train" / f"{stem}.png")
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    write_image(root / "images" / "val" / "v.png")
    (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = {"train": "images/train", "val": "images/val", "names": list(names)}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_clean_dataset_passes_with_summary(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n", "empty": ""})
    report = validate(data_yaml)
    assert report.ok, report.lines()
    assert report.split_sizes == {"train": 2, "val": 1}
    assert dict(report.boxes) == {0: 2, 1: 1}
    assert report.background == 1  # the empty label file: allowed, counted
    assert "3 boxes (a 2, b 1)" in report.summary()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "expected 5 fields"),
        ("x 0.5 0.5 0.2 0.2", "class id 'x' is not an integer"),
        ("2 0.5 0.5 0.2 0.2", "class id 2 out of range; names has 2 classes (0..1)"),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 out of range"),
        ("0 0.5 nan 0.2 0.2", "y=nan outside (0, 1]"),
        ("0 0.5 0.5 1.5 0.2", "w=1.5 outside (0, 1]"),
        ("0 0.5 0.5 0.2 0", "h=0 outside (0, 1]"),
        ("0 0.5 0.5 abc 0.2", "w='abc' is not a number"),
    ],
)
def test_bad_label_lines_are_named(line: str, message: str) -> None:
    problem, box = check_label_line(line, nc=2)
    assert box is None
    assert problem is not None and message in problem


def test_every_problem_reported_as_file_line(tmp_path: Path) -> None:
    labels = {
        "bad_class": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",
        "dupe": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        "fields": "0 0.5 0.5\n",
    }
    data_yaml = make_dataset(tmp_path, labels)
    (tmp_path / "images" / "train" / "broken.png").write_bytes(b"not an image at all")
    report = validate(data_yaml)
    lines = report.lines()
    assert "labels/train/bad_class.txt:2: class id 7 out of range; names has 2 classes (0..1)" in lines
    assert "labels/train/dupe.txt:2: duplicate box (same as line 1)" in lines
    assert "labels/train/fields.txt:1: expected 5 fields (class x y w h), got 3" in lines
    assert any(line.startswith("images/train/broken.png: image does not decode") for line in lines)
    assert not report.ok
    assert "4 problem(s) in 4 file(s)" in report.summary()


def test_truncated_jpeg_does_not_pass(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path, {"ok": "0 0.5 0.5 0.2 0.2\n"})
    image = tmp_path / "images" / "train" / "cut.jpg"
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    image.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    problems = [line for line in validate(data_yaml).lines() if "cut.jpg" in line]
    assert problems and "image does not decode" in problems[0]


def test_yaml_pointing_at_missing_folder_is_a_problem_naming_the_yaml(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"})
    data = yaml.safe_load(data_yaml.read_text())
    data["val"] = "images/nowhere"
    data_yaml.write_text(yaml.safe_dump(data))
    report = validate(data_yaml)
    assert not report.ok
    assert any(line.startswith("data.yaml: 'val' points at") and "images/nowhere" in line for line in report.lines())
    assert report.split_sizes == {"train": 1}  # the good split is still checked


def test_yaml_without_names_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("train: images\nval: images\n")
    with pytest.raises(DatasetError, match=r"data.yaml: 'names' is missing"):
        validate(tmp_path / "data.yaml")


def test_bare_folder_with_classes_txt_and_orphan_label(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "classes.txt").write_text("smoke\nfire\nperson_down\n")
    report = validate(tmp_path)
    assert report.ok
    assert report.names == ["smoke", "fire", "person_down"]
    assert "warning: labels/gone.txt: label file without an image" in report.lines()


def test_cli_exits_non_zero_and_ends_with_summary(tmp_path: Path) -> None:
    data_yaml = make_dataset(tmp_path, {"x": "5 0.5 0.5 0.2 0.2\n"})
    result = CliRunner().invoke(data_cli, ["validate", str(data_yaml)])
    assert result.exit_code == 1
    out = result.output.strip().splitlines()
    assert out[0] == "labels/train/x.txt:1: class id 5 out of range; names has 2 classes (0..1)"
    assert "1 problem(s) in 1 file(s)" in out[-1]


def test_cli_clean_dataset_exits_zero(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_cli, ["validate", str(make_dataset(tmp_path, {"x": "0 0.5 0.5 0.2 0.2\n"}))])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("OK")


def test_cli_missing_path_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_cli, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "nope.yaml" in result.output
    assert "Traceback" not in result.output
