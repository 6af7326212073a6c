"""Split a YOLO folder into train/val(/test) reproducibly: the same files and seed always give the same split.

    kiln data split out/ --val 0.2 --seed 0
    kiln data split out/ --val 0.1 --test 0.1 --seed 3

Every image under `DIR/images` (flat, or already split) is pooled, ordered by file name, shuffled with the seed,
and moved with its label file to `images/<split>/` and `labels/<split>/`. `data.yaml` is rewritten to point at
the splits, keeping its other keys. Running it again with another fraction or seed re-splits the same pool.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import DatasetError
from data.yolo_layout import SPLITS, find_yaml, label_path, list_images, parse_names, read_yaml


@dataclass(frozen=True)
class SplitResult:
    yaml_path: Path  # the rewritten dataset YAML
    sizes: dict[str, int]  # split -> images

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.sizes.items()) + f"; wrote {self.yaml_path}"


def assign(names: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """File name -> split. Depends only on the set of names, the fractions and the seed."""
    if not (0.0 < val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise DatasetError(f"--val {val} must be in (0, 1) and --test {test} in [0, 1), summing to less than 1")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_val, n_test = _count(len(order), val), _count(len(order), test)
    if n_val + n_test >= len(order):
        raise DatasetError(f"{len(order)} images are too few for --val {val} --test {test}; nothing left to train on")
    split_of = {name: "val" for name in order[:n_val]}
    split_of.update({name: "test" for name in order[n_val : n_val + n_test]})
    split_of.update({name: "train" for name in order[n_val + n_test :]})
    return split_of


def _count(total: int, fraction: float) -> int:
    return max(1, round(total * fraction)) if fraction > 0 else 0


def pool(folder: Path) -> dict[str, Path]:
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{folder}: no images/ folder; expected the YOLO layout images/ + labels/")
    found: dict[str, Path] = {}
    for image in list_images(images_dir):
        if image.name in found:
            raise DatasetError(f"{folder}: two images are named {image.name!r}: {found[image.name]} and {image}")
        found[image.name] = image
    if not found:
        raise DatasetError(f"{images_dir}: no images")
    return found


def move(image: Path, folder: Path, split: str) -> None:
    labels = label_path(image)
    target = folder / "images" / split / image.name
    if target != image:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(image, target)
    if labels.is_file():
        label_target = folder / "labels" / split / labels.name
        if label_target != labels:
            label_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(labels, label_target)


def tidy(folder: Path) -> None:
    """Drop ultralytics' label caches (they describe the old split) and folders the move left empty."""
    for cache in (folder / "labels").glob("**/*.cache"):
        cache.unlink()
    for cache in folder.glob("labels*.cache"):
        cache.unlink()
    for sub in ("images", "labels"):
        for d in sorted((folder / sub).glob("**/"), key=lambda p: len(p.parts), reverse=True):
            if d.is_dir() and d != folder / sub and not any(d.iterdir()):
                d.rmdir()


def dataset_yaml(folder: Path, names: list[str] | None) -> tuple[Path, dict[str, Any]]:
    existing = find_yaml(folder)
    data = read_yaml(existing) if existing else {}
    path = existing or folder / "data.yaml"
    if names:
        data["names"] = dict(enumerate(names))
    elif "names" not in data and (folder / "classes.txt").is_file():
        lines = (folder / "classes.txt").read_text().splitlines()
        data["names"] = dict(enumerate(n.strip() for n in lines if n.strip()))
    if "names" not in data:
        raise DatasetError(f"{folder}: no data.yaml or classes.txt names the classes; pass --names a,b,c")
    parse_names(data["names"], path, data.get("nc"))
    return path, data


def split(
    folder: str | Path, val: float = 0.2, test: float = 0.0, seed: int = 0, names: list[str] | None = None
) -> SplitResult:
    """Pool every image under `folder/images`, re-split it, move the files and rewrite the dataset YAML."""
    folder = Path(folder)
    yaml_path, data = dataset_yaml(folder, names)
    images = pool(folder)
    split_of = assign(list(images), val, test, seed)
    for name, image in images.items():
        move(image, folder, split_of[name])
    tidy(folder)
    sizes = {s: sum(1 for v in split_of.values() if v == s) for s in SPLITS if s in split_of.values()}
    for key in SPLITS:
        data.pop(key, None)
    data.update({key: f"images/{key}" for key in sizes})
    data.pop("path", None)  # the splits now live next to the YAML, which is where a missing `path` points
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return SplitResult(yaml_path, sizes)
