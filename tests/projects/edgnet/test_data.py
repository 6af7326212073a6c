import cv2
import numpy as np
import pytest

from core.errors import DatasetError
from projects.edgnet.data import augment, load_folder, split


def write(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), array)


def drawing(seed: int, size: int = 64):
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(4):
        p, q = rng.integers(4, size - 4, 2), rng.integers(4, size - 4, 2)
        cv2.line(mask, tuple(map(int, p)), tuple(map(int, q)), 255, 2)
    return (235 - (mask > 0) * 180).astype(np.uint8), mask


def test_augment_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    for seed in range(20):
        image, mask = drawing(seed)
        aug_image, aug_mask = augment(image, (mask > 0).astype(np.uint8), rng)
        assert aug_image.shape == aug_mask.shape == image.shape
        dark = aug_image < (aug_image.max() + aug_image.min()) / 2
        on_mask = aug_mask > 0
        iou = (dark & on_mask).sum() / max((dark | on_mask).sum(), 1)
        assert iou > 0.6, f"seed {seed}: dark pixels and mask drifted apart (IoU {iou:.2f})"


def test_masks_are_loaded_and_resized(tmp_path):
    for i in range(3):
        image, mask = drawing(i, 96)
        write(tmp_path / "images", f"{i}.png", image)
        write(tmp_path / "masks", f"{i}.png", mask)
    samples = load_folder(tmp_path, 64)
    assert [s.image.shape for s in samples] == [(64, 64)] * 3
    assert set(np.unique(samples[0].mask)) == {0, 1}


def test_without_masks_the_target_is_canny_edges(tmp_path):
    image = np.full((64, 64), 255, np.uint8)
    cv2.rectangle(image, (16, 16), (48, 48), 0, -1)
    for i in range(2):
        write(tmp_path / "images", f"{i}.png", image)
    sample = load_folder(tmp_path, 64)[0]
    assert sample.mask[16:49, 16].any() and not sample.mask[30, 30]


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found"):
        load_folder(tmp_path / "nope", 64)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"images: no images"):
        load_folder(tmp_path, 64)


def test_corrupt_image_is_named_and_skippable(tmp_path):
    for i in range(3):
        write(tmp_path / "images", f"{i}.png", drawing(i)[0])
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png: cannot decode image"):
        load_folder(tmp_path, 64)
    with pytest.warns(UserWarning, match="broken.png"):
        assert len(load_folder(tmp_path, 64, skip_bad=True)) == 3


def test_mask_size_mismatch_is_named(tmp_path):
    write(tmp_path / "images", "a.png", drawing(0, 64)[0])
    write(tmp_path / "masks", "a.png", drawing(0, 32)[1])
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask size \(32, 32\) differs from image size \(64, 64\)"):
        load_folder(tmp_path, 64)


def test_split_is_reproducible_and_disjoint(tmp_path):
    for i in range(10):
        write(tmp_path / "images", f"{i}.png", drawing(i)[0])
    samples = load_folder(tmp_path, 32)
    train, val = split(samples, 0.2, seed=3)
    again = split(samples, 0.2, seed=3)[1]
    assert [s.name for s in val] == [s.name for s in again]
    assert len(val) == 2 and not {s.name for s in train} & {s.name for s in val}
