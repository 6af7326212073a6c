"""Dataset checks before training, the dataset digest, and letterboxing identical to ultralytics'.

.venv/bin/python -m pytest tests/projects/yolo/test_data.py -q
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from core.errors import DatasetError
from projects.yolo import data as yolo_data
from projects.yolo.offline import load_ultralytics

load_ultralytics()

from ultralytics.data.augment import LetterBox  # noqa: E402


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (100, 37), (640, 480)])
def test_letterbox_matches_ultralytics(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    expected = LetterBox(new_shape=(64, 64), auto=False, scale_fill=False, scaleup=True, center=True)(image=image)
    assert np.array_equal(yolo_data.letterbox(image, 64), expected)


def test_to_input_is_rgb_nchw_unit_range() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    batch = yolo_data.to_input([image, image], 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert batch[0, 2].max() == 1.0 and batch[0, 0].max() == 0.0  # blue ends up in channel 2 (RGB)


def test_missing_split_folder_names_the_yaml(tiny_safety: Path) -> None:
    data = yaml.safe_load(tiny_safety.read_text())
    data["val"] = "images/validation"
    tiny_safety.write_text(yaml.safe_dump(data))
    with pytest.raises(DatasetError, match=r"data.yaml: 'val' points at .*images/validation, which does not exist"):
        yolo_data.resolve_dataset(str(tiny_safety), "safety")


def test_custom_preset_requires_data() -> None:
    with pytest.raises(DatasetError, match=r"--data is required"):
        yolo_data.resolve_dataset("", None)


def test_class_id_out_of_range_names_file_and_line(tiny_safety: Path) -> None:
    label = sorted((tiny_safety.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n")
    dataset = yolo_data.resolve_dataset(str(tiny_safety), "safety")
    lines = len(label.read_text().splitlines())
    pattern = rf"labels/train/{label.name}:{lines}: class id 9 out of range; names has 3 classes"
    with pytest.raises(DatasetError, match=pattern):
        yolo_data.check_labels(dataset)


def test_digest_follows_content(tiny_safety: Path) -> None:
    dataset = yolo_data.resolve_dataset(str(tiny_safety), "safety")
    before = yolo_data.dataset_digest(dataset)
    assert before == yolo_data.dataset_digest(yolo_data.resolve_dataset(str(tiny_safety), "safety"))
    label = sorted((tiny_safety.parent / "labels" / "val").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5 0.1 0.1\n")
    assert yolo_data.dataset_digest(dataset) != before


def test_resolved_yaml_has_absolute_paths(tiny_safety: Path, tmp_path: Path) -> None:
    dataset = yolo_data.resolve_dataset(str(tiny_safety), "safety")
    written = yaml.safe_load(yolo_data.write_resolved_yaml(dataset, tmp_path / "w").read_text())
    assert Path(written["train"]).is_absolute() and Path(written["val"]).is_dir()
    assert written["names"] == {0: "smoke", 1: "fire", 2: "person_down"}
