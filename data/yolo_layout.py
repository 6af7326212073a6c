"""The YOLO dataset layout: read a dataset YAML, find the images of a split, map images to label files.

    python -c "from data.yolo_layout import load_dataset; print(load_dataset('data/samples/safety/data.yaml'))"

Follows ultralytics' rules (an `images` folder has a sibling `labels` folder; a split is a folder, an image
file, a `.txt` list or a list of those) but resolves every path up front, relative to the YAML file, and
fails with a message naming the YAML and the key instead of a traceback from deep in a training run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import DatasetError

# The image suffixes ultralytics trains on (ultralytics.data.utils.IMG_FORMATS minus the video-ish ones).
IMG_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})
SPLITS = ("train", "val", "test")
YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")


@dataclass
class YoloDataset:
    """A dataset YAML with every split resolved to absolute image files."""

    yaml_path: Path | None  # the YAML it came from; None for a bare folder
    root: Path  # the dataset root (`path:` in the YAML)
    names: list[str]  # class names, index = class id; empty when a bare folder names no classes
    splits: dict[str, list[Path]] = field(default_factory=dict)  # split -> sorted image files
    sources: dict[str, list[Path]] = field(default_factory=dict)  # split -> the folders/lists it was read from

    @property
    def images(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for files in self.splits.values():
            seen.update(dict.fromkeys(files))
        return list(seen)

    def label_files(self) -> list[Path]:
        return [p for p in (label_path(i) for i in self.images) if p.is_file()]


def label_path(image: Path) -> Path:
    """ultralytics' rule: replace the last `images` folder of the path by `labels`, and the suffix by `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMG_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def unreadable_images(folder: Path) -> list[tuple[Path, str]]:
    """Entries under `folder` named like images that are no image file (list_images skips them): a folder
    named `x.jpg`, a symlink whose target is gone."""
    found: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        if not is_image(path) or path.is_file():
            continue
        if path.is_symlink() and not path.exists():
            found.append((path, f"a symlink to {path.readlink()}, which does not exist"))
        elif path.is_dir():
            found.append((path, "a folder named like an image; its contents are read, the folder is not an image"))
        else:
            found.append((path, "not a regular file"))
    return found


def find_yaml(folder: Path) -> Path | None:
    for name in YAML_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: dataset YAML not found")
    try:
        loaded = yaml.safe_load(text_of(path))
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise DatasetError(f"{path}: expected a mapping with train, val and names, got {type(loaded).__name__}")
    return loaded


def text_of(path: Path, encoding: str = "utf-8") -> str:
    """A text file's content; one that is not UTF-8 is a DatasetError naming the file and the byte."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start} is {bad!r}); save it as UTF-8") from None


def parse_names(raw: Any, source: Path, nc: Any = None) -> list[str]:
    """`names` as a list or an {id: name} dict with ids 0..n-1; `nc` alone gives class_0..class_{n-1}."""
    if raw is None and nc is None:
        raise DatasetError(f"{source}: 'names' is missing (a list of class names, index = class id)")
    if raw is None:
        return [f"class_{i}" for i in range(_as_int(nc, source, "nc"))]
    if isinstance(raw, dict):
        ids = sorted(_as_int(k, source, "names") for k in raw)
        if ids != list(range(len(ids))):
            raise DatasetError(f"{source}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        names = [str(raw[k]) for k in sorted(raw, key=lambda k: int(k))]
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise DatasetError(f"{source}: 'names' must be a list or a mapping of id: name, got {type(raw).__name__}")
    if not names:
        raise DatasetError(f"{source}: 'names' is empty")
    if nc is not None and _as_int(nc, source, "nc") != len(names):
        raise DatasetError(f"{source}: 'nc: {nc}' does not match the {len(names)} entries of 'names'")
    return names


def _as_int(value: Any, source: Path, key: str) -> int:
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: {key!r} must be an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise DatasetError(f"{source}: {key!r} must be an integer, got {value!r}")
    return int(as_float)


def dataset_root(data: dict[str, Any], yaml_path: Path) -> Path:
    """`path:` relative to the YAML file (then to the working directory, as ultralytics does); absent = YAML dir."""
    raw = data.get("path")
    if raw in (None, ""):
        return yaml_path.parent.resolve()
    if not isinstance(raw, str):
        raise DatasetError(f"{yaml_path}: 'path' must be a string, got {raw!r}")
    given = Path(raw).expanduser()
    candidates = [given] if given.is_absolute() else [yaml_path.parent / given, given]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DatasetError(f"{yaml_path}: 'path: {raw}' is not a folder (looked at {candidates[0].resolve()})")


def split_sources(data: dict[str, Any], key: str, root: Path, yaml_path: Path) -> list[Path]:
    raw = data.get(key)
    entries: list[Any] = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(e, str) and e for e in entries):
        raise DatasetError(f"{yaml_path}: '{key}' must be a path or a list of paths, got {raw!r}")
    paths: list[str] = entries
    return [(root / e).resolve() if not Path(e).is_absolute() else Path(e) for e in paths]


def images_from(source: Path, yaml_path: Path | None, key: str) -> list[Path]:
    """The images a split entry names: a folder (recursively), one image, or a `.txt` list of images."""
    where = f"{yaml_path}: '{key}'" if yaml_path else key
    if source.is_dir():
        return list_images(source)
    if source.is_file() and is_image(source):
        return [source]
    if source.is_file() and source.suffix == ".txt":
        return _images_from_list(source)
    raise DatasetError(f"{where} points at {source}, which does not exist")


def _images_from_list(listing: Path) -> list[Path]:
    files: list[Path] = []
    for line in text_of(listing, "utf-8-sig").splitlines():
        line = line.strip()
        if not line:
            continue
        # ultralytics resolves `./x` against the list's folder and other relative lines against the cwd.
        path = listing.parent / line[2:] if line.startswith("./") else Path(line)
        if is_image(path):
            files.append(path.resolve())
    return sorted(files)


def load_dataset(
    path: str | Path, require: Iterable[str] = ("train", "val"), errors: list[str] | None = None
) -> YoloDataset:
    """Read a dataset YAML (or a folder holding one) and resolve its splits to image files.

    Every split in `require` must be present and hold at least one image; `test` is read when given.
    A problem with one split raises, unless `errors` is given: then it is appended there and the other
    splits are still read (how `kiln data validate` reports everything at once).
    """
    path = Path(path)
    yaml_path = find_yaml(path) if path.is_dir() else path
    if yaml_path is None:
        raise DatasetError(f"{path}: no dataset YAML in this folder (looked for {', '.join(YAML_NAMES)})")
    data = read_yaml(yaml_path)
    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]
    for key in require:
        if not data.get(key):
            raise DatasetError(f"{yaml_path}: '{key}' is missing; a dataset YAML needs train, val and names")
    names = parse_names(data.get("names"), yaml_path, data.get("nc"))
    root = dataset_root(data, yaml_path)
    dataset = YoloDataset(yaml_path=yaml_path.resolve(), root=root, names=names)
    for key in SPLITS:
        if not data.get(key):
            continue
        try:
            dataset.splits[key], dataset.sources[key] = _read_split(data, key, root, yaml_path)
        except DatasetError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return dataset


def _read_split(data: dict[str, Any], key: str, root: Path, yaml_path: Path) -> tuple[list[Path], list[Path]]:
    sources = split_sources(data, key, root, yaml_path)
    files = sorted({f for s in sources for f in images_from(s, yaml_path, key)})
    if not files:
        raise DatasetError(f"{yaml_path}: '{key}' ({', '.join(map(str, sources))}) holds no images")
    return files, sources


def load_folder(folder: Path, names: list[str] | None = None) -> YoloDataset:
    """A bare folder of images and labels, with class names from `classes.txt` when there is one."""
    if names is None:
        classes = folder / "classes.txt"
        names = [n.strip() for n in text_of(classes).splitlines() if n.strip()] if classes.is_file() else []
    files = list_images(folder)
    return YoloDataset(None, folder.resolve(), names, splits={"all": files}, sources={"all": [folder]})


def resolved_yaml(dataset: YoloDataset) -> dict[str, Any]:
    """The dataset as a YAML mapping with absolute paths, so ultralytics never guesses a root."""
    out: dict[str, Any] = {"path": str(dataset.root), "names": dict(enumerate(dataset.names))}
    for key, sources in dataset.sources.items():
        out[key] = [str(s) for s in sources] if len(sources) > 1 else str(sources[0])
    return out


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it, else absolute, for messages people read."""
    try:
        return os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
    except ValueError:
        return str(path)
