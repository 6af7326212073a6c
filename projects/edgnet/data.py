"""EDGNet data: a folder of `images/` with optional `masks/` (same stems, binary PNG), split and augmented.

    python -c "from projects.edgnet.data import load_folder; print(len(load_folder('data/samples/x', 256)))"

Without masks the target is the image's Canny edge map, as in the seed. Every file is decoded once, up
front, so a bad file is reported by name before training starts. Augmentations (rotation ±15°,
brightness/contrast 0.7-1.3, Gaussian blur, noise, horizontal flip) move image and mask together.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from core.errors import DatasetError
from projects.common.folds import active_fold, fold_indices
from projects.common.segdata import (
    MaskDataset,
    Sample,
    check_val_fraction,
    given_split,
    random_split,
    read_image,
    sorted_images,
    split_dirs,
)

# Input normalisation: x = (pixel / 255 - MEAN) / STD. Written into the ONNX metadata for the server.
MEAN, STD = 0.5, 0.5
CANNY_THRESHOLDS = (50, 150)


def _read_grey(path: Path) -> np.ndarray | None:
    return read_image(path, cv2.IMREAD_GRAYSCALE)


def list_images(folder: Path) -> list[Path]:
    images_dir = folder / "images"
    if not folder.is_dir():
        raise DatasetError(f"data folder not found: {folder}")
    if not images_dir.is_dir():
        raise DatasetError(f"{folder}: expected an images/ folder (and optionally masks/)")
    return [path for _, split_images, _ in split_dirs(folder) for path in sorted_images(split_images)]


def _mask_for(image_path: Path, masks_dir: Path) -> Path | None:
    for suffix in (".png", image_path.suffix):
        candidate = masks_dir / (image_path.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def load_sample(image_path: Path, masks_dir: Path | None, size: int) -> Sample:
    image = _read_grey(image_path)
    if image is None:
        raise DatasetError(f"{image_path}: cannot decode image")
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if masks_dir is None:
        edges = cv2.Canny(resized, *CANNY_THRESHOLDS)
        return Sample(image_path.stem, resized, (edges > 0).astype(np.uint8))
    mask_path = _mask_for(image_path, masks_dir)
    if mask_path is None:
        raise DatasetError(f"{image_path}: no mask with the same stem in {masks_dir}")
    mask = _read_grey(mask_path)
    if mask is None:
        raise DatasetError(f"{mask_path}: cannot decode mask")
    if mask.shape != image.shape:
        raise DatasetError(f"{mask_path}: mask size {mask.shape[::-1]} differs from image size {image.shape[::-1]}")
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return Sample(image_path.stem, resized, (mask > 127).astype(np.uint8))


def load_folder(folder: str | Path, size: int, skip_bad: bool = False) -> list[Sample]:
    """Decode every image (and mask) in `folder`, or in its images/train and images/val (the split is kept).
    A corrupt file is an error unless `skip_bad`."""
    folder = Path(folder)
    list_images(folder)  # a missing folder or images/ is reported by name
    samples: list[Sample] = []
    for split, images_dir, masks in split_dirs(folder):
        samples += _load_split(images_dir, masks if masks.is_dir() else None, size, split, skip_bad)
    if len(samples) < 2:
        raise DatasetError(f"{folder}: need at least 2 usable images for a train/val split, found {len(samples)}")
    return samples


def _load_split(images_dir: Path, masks_dir: Path | None, size: int, split: str, skip_bad: bool) -> list[Sample]:
    samples: list[Sample] = []
    for path in sorted_images(images_dir):
        try:
            samples.append(load_sample(path, masks_dir, size))
            samples[-1].split = split
        except DatasetError as exc:
            if not skip_bad or "cannot decode" not in str(exc):
                raise
            warnings.warn(f"skipping {exc}", stacklevel=3)
            print(f"warning: skipping {exc}", flush=True)
    return samples


def split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    check_val_fraction(val_fraction)
    if (fold := active_fold()) is not None:  # kiln cv: this fold of the images is the validation part
        tr, va = fold_indices(len(samples), fold)
        return [samples[i] for i in tr], [samples[i] for i in va]
    return given_split(samples) or random_split(samples, val_fraction, seed)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Joint geometric augmentation, then photometric changes to the image alone. Returns float image, mask."""
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(-15, 15)), 1.0)
    border = int(np.median(image))
    image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=border)
    mask = cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    out = image.astype(np.float32)
    contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    out = (out - out.mean()) * contrast + out.mean() * brightness
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        out = out + rng.normal(0, float(rng.uniform(2, 12)), out.shape).astype(np.float32)
    return np.clip(out, 0, 255), np.ascontiguousarray(mask)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 or float (S, S) pixels -> normalised float tensor (1, S, S)."""
    return torch.from_numpy(((image.astype(np.float32) / 255.0 - MEAN) / STD)[None])


class DrawingDataset(MaskDataset):
    augment_fn = staticmethod(augment)
    to_tensor_fn = staticmethod(to_tensor)
