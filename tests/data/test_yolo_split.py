"""`kiln data split`: the same files and seed always give the same split; labels move with their images.

.venv/bin/python -m pytest tests/data/test_yolo_split.py -q
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
from data.yolo_split import split
from data.yolo_validate import validate


def flat_dataset(root: Path, n: int = 20) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"im{i:02d}.png"), np.full((16, 16, 3), i, np.uint8))
        (root / "labels" / f"im{i:02d}.txt").write_text(f"{i % 2} 0.5 0.5 0.{i % 9 + 1} 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images", "names": ["a", "b"]}))
    return root


def assignment(root: Path) -> dict[str, str]:
    return {p.name: p.parent.name for p in (root / "images").rglob("*.png")}


def test_split_is_reproducible_and_moves_labels(tmp_path: Path) -> None:
    one, two = flat_dataset(tmp_path / "one"), flat_dataset(tmp_path / "two")
    result = split(one, val=0.2, seed=3)
    split(two, val=0.2, seed=3)
    assert result.sizes == {"train": 16, "val": 4}
    assert assignment(one) == assignment(two)
    for image in (one / "images").rglob("*.png"):
        label = one / "labels" / image.parent.name / f"{image.stem}.txt"
        assert label.is_file(), label
    data = yaml.safe_load((one / "data.yaml").read_text())
    assert (data["train"], data["val"], data["names"]) == ("images/train", "images/val", ["a", "b"])
    assert validate(one / "data.yaml").ok


def test_resplitting_pools_everything_again(tmp_path: Path) -> None:
    root = flat_dataset(tmp_path / "d")
    split(root, val=0.2, seed=0)
    first = assignment(root)
    split(root, val=0.5, seed=1)
    split(root, val=0.2, seed=0)  # back to the first request: the same split, whatever happened in between
    assert assignment(root) == first
    split(root, val=0.2, seed=1)
    assert assignment(root) != first
    assert not (root / "images" / "test").exists()


def test_test_split_and_bad_fractions(tmp_path: Path) -> None:
    root = flat_dataset(tmp_path / "d")
    assert split(root, val=0.2, test=0.1, seed=0).sizes == {"train": 14, "val": 4, "test": 2}
    assert yaml.safe_load((root / "data.yaml").read_text())["test"] == "images/test"
    with pytest.raises(DatasetError, match=r"--val 1.5"):
        split(root, val=1.5)
    with pytest.raises(DatasetError, match=r"--val 0.6 must be in \(0, 1\) and --test 0.5"):
        split(root, val=0.6, test=0.5)


def test_cli_split_and_missing_names(tmp_path: Path) -> None:
    root = flat_dataset(tmp_path / "d")
    ok = CliRunner().invoke(data_cli, ["split", str(root), "--val", "0.25", "--seed", "0"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("train 15, val 5")
    bare = tmp_path / "bare"
    (bare / "images").mkdir(parents=True)
    cv2.imwrite(str(bare / "images" / "x.png"), np.zeros((16, 16, 3), np.uint8))
    bad = CliRunner().invoke(data_cli, ["split", str(bare)])
    assert bad.exit_code == 1 and "pass --names" in bad.output
