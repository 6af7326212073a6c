"""Pieces of a binary-segmentation data set that every segmentation family shares: the sample record, image
decoding, the random train/val hold-out and the (image, mask) torch Dataset.

    python -c "from projects.common.segdata import random_split; print(random_split(list(range(10)), 0.2, 0))"

A family's own `data.py` keeps what differs (colour or grey, where masks come from, its augmentation and
normalisation) and builds on these, so that EDGNet and microseg read and split folders the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
T = TypeVar("T")


@dataclass
class Sample:
    name: str
    image: np.ndarray  # uint8 (S, S) grey or (S, S, 3) RGB, as the family's data.py decodes it
    mask: np.ndarray  # uint8 (S, S) in {0, 1}
    split: str = ""  # train or val when the folder is split into images/<split>/ (kiln data import, versions)


def read_image(path: Path, flags: int) -> np.ndarray | None:
    """`cv2.imdecode` of a file (any path, unicode included); None when it is empty or cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8)
    return cv2.imdecode(data, flags) if data.size else None


def sorted_images(images_dir: Path) -> list[Path]:
    """The image files of `images_dir`, sorted; none is a DatasetError naming the folder."""
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def split_dirs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(split, images dir, masks dir): images/train and images/val (+ masks/<split>) when the folder is split
    that way, as `kiln data import` and dataset versions write it; else one ("", images/, masks/)."""
    if (folder / "images" / "train").is_dir() and (folder / "images" / "val").is_dir():
        return [(s, folder / "images" / s, folder / "masks" / s) for s in ("train", "val")]
    return [("", folder / "images", folder / "masks")]


def given_split(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]] | None:
    """The folder's own train/val split when every sample carries one, else None (split at random)."""
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    return (train, val) if train and val and len(train) + len(val) == len(samples) else None


def check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")


def random_split(samples: Sequence[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A seeded shuffle, then `val_fraction` of the items (at least one, never all) held out for validation."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(max(1, round(len(samples) * val_fraction)), len(samples) - 1)
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class MaskDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(normalised image tensor, float mask (1, S, S)) pairs; a training set augments each draw with its own rng.

    A family subclasses it and sets `augment_fn` and `to_tensor_fn` to its own functions (as staticmethods)."""

    augment_fn: Augment
    to_tensor_fn: Callable[[np.ndarray], torch.Tensor]

    def __init__(self, samples: list[Sample], train: bool, seed: int = 0) -> None:
        self.samples, self.train = samples, train
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image, mask = sample.image, sample.mask
        if self.train:
            image, mask = self.augment_fn(image, mask, self.rng)
        return self.to_tensor_fn(image), torch.from_numpy(mask.astype(np.float32)[None])
