"""microseg data: a folder of colour `images/` and binary `masks/` (same stems), split and augmented together.

    python -c "from projects.microseg.data import load_folder; print(len(load_folder('data/samples/x', 64)))"

Images are read as BGR, kept as RGB (the contract's colour order) at the training size; masks are thresholded
at 127. Every file is decoded once, up front, so a bad file is named before training starts. Augmentation is
the seed's kind: flips, rotation of +-15 degrees, brightness/contrast 0.7-1.3, hue-free colour jitter and noise.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from core.errors import DatasetError
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

# x = (pixel / 255 - MEAN) / STD on each RGB channel; written into the contract for the server.
MEAN, STD = 0.5, 0.5


def list_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of `folder` (of images/train and images/val when split so); a missing folder, mask or
    image is a DatasetError naming it."""
    return [pair for _, pairs in split_pairs(folder) for pair in pairs]


def split_pairs(folder: Path) -> list[tuple[str, list[tuple[Path, Path]]]]:
    """(split, its (image, mask) pairs): one ("", ...) for an unsplit folder."""
    if not folder.is_dir():
        raise DatasetError(f"data folder not found: {folder}")
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise DatasetError(f"{folder}: expected images/ and masks/ folders (masks: same stem, .png)")
    return [(split, _pairs(images_dir, masks_dir)) for split, images_dir, masks_dir in split_dirs(folder)]


def _pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    images = sorted_images(images_dir)
    pairs = []
    for image in images:
        mask = next((m for m in (masks_dir / f"{image.stem}.png", masks_dir / image.name) if m.is_file()), None)
        if mask is None:
            raise DatasetError(f"{image}: no mask with the same stem in {masks_dir}")
        pairs.append((image, mask))
    return pairs


def load_sample(image_path: Path, mask_path: Path, size: int) -> Sample:
    image = read_image(image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{image_path}: cannot decode image")
    mask = read_image(mask_path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"{mask_path}: cannot decode mask")
    if mask.shape != image.shape[:2]:
        raise DatasetError(f"{mask_path}: mask size {mask.shape[::-1]} differs from image size {image.shape[1::-1]}")
    rgb = cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return Sample(image_path.stem, rgb, (mask > 127).astype(np.uint8))


def load_folder(folder: str | Path, size: int) -> list[Sample]:
    """Decode every image and mask in `folder` at `size` x `size`; a split folder's samples keep their split."""
    samples = []
    for split, pairs in split_pairs(Path(folder)):
        for image, mask in pairs:
            samples.append(load_sample(image, mask, size))
            samples[-1].split = split
    return samples


def split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    check_val_fraction(val_fraction)
    if len(samples) < 2:
        raise DatasetError(f"need at least 2 images for a train/val split, found {len(samples)}")
    return given_split(samples) or random_split(samples, val_fraction, seed)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Joint flips and rotation, then photometric changes to the image alone. Returns float image, mask."""
    size = image.shape[0]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(-15, 15)), 1.0)
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(np.ascontiguousarray(mask), matrix, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    out = image.astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
    out = out * rng.uniform(0.9, 1.1, 3).astype(np.float32)  # per-channel gain: a colour cast, not a hue swap
    if rng.random() < 0.5:
        out = out + rng.normal(0, float(rng.uniform(2, 10)), out.shape).astype(np.float32)
    return np.clip(out, 0, 255), np.ascontiguousarray(mask)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 or float (S, S, 3) RGB pixels -> normalised float tensor (3, S, S)."""
    return torch.from_numpy(((image.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1).copy())


def to_pixels(batch: torch.Tensor) -> list[np.ndarray]:
    """The inverse of `to_tensor` for a batch: uint8 (S, S, 3) BGR images, as a predictor takes them."""
    pixels = ((batch.detach().cpu().float().numpy() * STD + MEAN) * 255.0).round().clip(0, 255).astype(np.uint8)
    return [np.ascontiguousarray(cv2.cvtColor(p.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)) for p in pixels]


class SegDataset(MaskDataset):
    augment_fn = staticmethod(augment)
    to_tensor_fn = staticmethod(to_tensor)
