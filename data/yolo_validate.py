"""Check a YOLO dataset before training: images decode, label lines are well formed and in range.

    kiln data validate data/samples/safety/data.yaml
    kiln data validate path/to/folder --names smoke,fire,person_down

Every problem is reported as `file:line: message`; empty label files and images without a label file are
allowed (background images). Warnings: a label file without an image, a box that extends past the border,
and an image with the same bytes as another (named with both splits when it sits in two). `validate()` returns
a report; the CLI prints it and exits 1 on any problem.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from core.errors import DatasetError
from data.yolo_layout import (
    IMG_SUFFIXES,
    YoloDataset,
    find_yaml,
    label_path,
    load_dataset,
    load_folder,
    relative,
    unreadable_images,
)

MIN_IMAGE_SIDE = 10  # ultralytics drops images smaller than this, so they count as broken here


@dataclass(frozen=True)
class Problem:
    path: Path  # the file at fault
    line: int  # 1-based line in a label file; 0 for the file as a whole
    message: str

    def format(self, root: Path) -> str:
        where = relative(self.path, root)
        return f"{where}:{self.line}: {self.message}" if self.line else f"{where}: {self.message}"


@dataclass
class Report:
    root: Path  # paths in messages are shown relative to this
    names: list[str]  # class names; empty when the folder names none
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)  # split -> image count
    label_files: int = 0  # images that have a label file
    background: int = 0  # images without a label file, or with an empty one
    boxes: Counter[int] = field(default_factory=Counter)  # class id -> boxes

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [p.format(self.root) for p in self.problems] + [f"warning: {w.format(self.root)}" for w in self.warnings]

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        per_class = ", ".join(f"{self._name(c)} {n}" for c, n in sorted(self.boxes.items()))
        files = len({p.path for p in self.problems})
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s) in {files} file(s)"
        return (
            f"{sum(self.split_sizes.values())} images ({splits}), {self.label_files} label files, "
            f"{self.background} background, {sum(self.boxes.values())} boxes ({per_class or 'none'}); "
            f"{len(self.warnings)} warning(s); {verdict}"
        )

    def _name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)


def check_image(path: Path) -> str | None:
    """None when the image decodes fully, else what is wrong with it."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()  # verify() does not decode pixels; a truncated file only fails here
            width, height = im.size
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        return f"image does not decode: {exc}"
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"image is {width}x{height}; each side must be at least {MIN_IMAGE_SIDE} pixels"
    return None


def check_label_line(text: str, nc: int) -> tuple[str | None, tuple[int, tuple[float, ...]] | None]:
    """(problem, None) for a bad line; (None, (class_id, xywh)) for a good one. nc=0 skips the range check."""
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (class x y w h), got {len(fields)}", None
    try:
        class_id = int(fields[0])
    except ValueError:
        return f"class id {fields[0]!r} is not an integer", None
    if class_id < 0 or (nc and class_id >= nc):
        allowed = f"0..{nc - 1}" if nc else "non-negative"
        return f"class id {class_id} out of range; names has {nc} classes ({allowed})", None
    coords: list[float] = []
    for axis, raw in zip("xywh", fields[1:], strict=True):
        try:
            value = float(raw)
        except ValueError:
            return f"{axis}={raw!r} is not a number", None
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            return f"{axis}={raw} outside (0, 1]", None
        coords.append(value)
    return None, (class_id, tuple(round(c, 6) for c in coords))


def check_label_file(path: Path, nc: int, report: Report) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(Problem(path, 0, f"label file unreadable: {exc}"))
        return
    seen: dict[tuple[int, tuple[float, ...]], int] = {}
    if not text.strip():
        report.background += 1  # an empty label file: an image with nothing in it, which is allowed
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        problem, box = check_label_line(line, nc)
        if problem:
            report.problems.append(Problem(path, number, problem))
        elif box in seen:
            report.problems.append(Problem(path, number, f"duplicate box (same as line {seen[box]})"))
        elif box is not None:
            seen[box] = number
            report.boxes[box[0]] += 1
            if sticks_out(box[1]):
                report.warnings.append(Problem(path, number, "box extends outside the image; training clips it"))


def sticks_out(xywh: tuple[float, ...]) -> bool:
    """A box whose centre is inside but whose edges pass the border by more than half a pixel of a 1000 px side."""
    x, y, w, h = xywh
    return min(x - w / 2, y - h / 2) < -5e-4 or max(x + w / 2, y + h / 2) > 1 + 5e-4


def duplicate_images(dataset: YoloDataset) -> list[Problem]:
    """Images with the same bytes as an earlier one; across splits the val score counts them twice."""
    split_of = {image: split for split, files in dataset.splits.items() for image in files}
    first: dict[str, Path] = {}
    found = []
    for image in dataset.images:
        try:
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
        except OSError:
            continue  # check_image reports an unreadable file
        if digest not in first:
            first[digest] = image
            continue
        other = first[digest]
        where = f" (in {split_of[other]} and {split_of[image]})" if split_of[other] != split_of[image] else ""
        found.append(Problem(image, 0, f"duplicate image: same bytes as {other.name}{where}"))
    return found


def check_images(dataset: YoloDataset, report: Report) -> None:
    nc = len(dataset.names)
    for image in dataset.images:
        problem = check_image(image)
        if problem:
            report.problems.append(Problem(image, 0, problem))
        labels = label_path(image)
        if labels.is_file():
            report.label_files += 1
            check_label_file(labels, nc, report)
        else:
            report.background += 1


def orphan_labels(dataset: YoloDataset) -> list[Path]:
    """Label files under the dataset's `labels` folders that no image points at (often a renamed image)."""
    expected = {label_path(i) for i in dataset.images}
    folders = {label_path(i).parent for i in dataset.images}
    found = {p for folder in folders if folder.is_dir() for p in folder.glob("*.txt")}
    return sorted(found - expected)


def validate(path: str | Path, names: list[str] | None = None) -> Report:
    """Check the dataset at `path`: a dataset YAML, a folder holding one, or a bare images+labels folder."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    errors: list[str] = []
    if path.is_file() or find_yaml(path):
        dataset = load_dataset(path, errors=errors)
        if names:
            dataset.names = names
    else:
        dataset = load_folder(path, names)
    root = dataset.yaml_path.parent if dataset.yaml_path else dataset.root
    report = Report(root=root, names=dataset.names)
    report.problems += [Problem(dataset.yaml_path or dataset.root, 0, _without_file(e)) for e in errors]
    report.split_sizes = {k: len(v) for k, v in dataset.splits.items()}
    if not dataset.images and not errors:
        looked_for = ", ".join(sorted(IMG_SUFFIXES))
        report.problems.append(Problem(dataset.root, 0, f"no images found (looked for {looked_for})"))
    check_images(dataset, report)
    folders = {s for sources in dataset.sources.values() for s in sources if s.is_dir()}
    report.problems += [Problem(p, 0, why) for folder in sorted(folders) for p, why in unreadable_images(folder)]
    report.warnings += [Problem(p, 0, "label file without an image") for p in orphan_labels(dataset)]
    report.warnings += duplicate_images(dataset)
    return report


def _without_file(error: str) -> str:
    """DatasetError messages start with the YAML path, which Problem.format already prints."""
    return error.partition(": ")[2] or error
