"""The dataset side of YOLO training: resolve `--data` (or a bundled sample), check labels, digest, letterbox.

    python -c "from projects.yolo.data import resolve_dataset; print(resolve_dataset('', 'safety').names)"

Everything here runs before a training run starts, so a dataset YAML that points at a missing folder or a
label with a class id out of range stops with an error naming the file, never inside ultralytics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from core import preprocess
from core.contract import Preprocess
from core.errors import DatasetError
from data.samples import SAMPLES_DIR, SampleRequest, ensure_sample
from data.yolo_layout import YoloDataset, label_path, load_dataset, resolved_yaml
from data.yolo_validate import Report, check_label_file
from projects.common.tracking import files_digest

PAD_VALUE = 114  # ultralytics' letterbox grey
MAX_LISTED_PROBLEMS = 10  # label problems quoted in the error before "... and N more"


def resolve_dataset(data: str, sample_kind: str | None) -> YoloDataset:
    """`data` (a dataset YAML or a folder with one), or the bundled sample set of `sample_kind` when empty.

    The bundled set is always the kind's default request (seed 0), generated once under data/samples/,
    so every run of an entry point without --data trains on the same images.
    """
    if data.startswith("dataset:"):  # a frozen version (`kiln data version`), fetched to the local cache
        from data.versions import resolve_dataset_uri

        return load_dataset(resolve_dataset_uri(data))
    if data:
        return load_dataset(Path(data).expanduser())
    if sample_kind is None:
        raise DatasetError("--data is required: pass a dataset YAML (path, train, val, names)")
    return load_dataset(ensure_sample(sample_kind, SampleRequest(SAMPLES_DIR / sample_kind)))


def check_labels(dataset: YoloDataset) -> Report:
    """Every label line well formed and in range; raises DatasetError quoting the first problems."""
    root = dataset.yaml_path.parent if dataset.yaml_path else dataset.root
    report = Report(root=root, names=dataset.names)
    for image in dataset.images:
        labels = label_path(image)
        if labels.is_file():
            report.label_files += 1
            check_label_file(labels, len(dataset.names), report)
        else:
            report.background += 1
    if report.problems:
        lines = [p.format(root) for p in report.problems[:MAX_LISTED_PROBLEMS]]
        more = len(report.problems) - len(lines)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(
            f"{dataset.yaml_path}: {len(report.problems)} bad label line(s):\n  " + "\n  ".join(lines) + tail
            + f"\nRun `kiln data validate {dataset.yaml_path}` for the full report."
        )  # fmt: skip
    if not report.boxes:
        raise DatasetError(f"{dataset.yaml_path}: no boxes in any label file; there is nothing to learn")
    return report


def write_resolved_yaml(dataset: YoloDataset, folder: Path) -> Path:
    """The dataset YAML ultralytics reads: absolute paths, so its DATASETS_DIR guessing never applies."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(resolved_yaml(dataset), sort_keys=False, allow_unicode=True))
    return path


def dataset_digest(dataset: YoloDataset) -> str:
    """sha256 over every image and label file of every split (relative names and bytes)."""
    files = [*dataset.images, *dataset.label_files()]
    root = Path(*_common_parts(files)) if files else dataset.root
    return files_digest(files, root)


def _common_parts(files: list[Path]) -> tuple[str, ...]:
    parts = files[0].parent.parts
    for f in files[1:]:
        shared = 0
        for a, b in zip(parts, f.parent.parts, strict=False):
            if a != b:
                break
            shared += 1
        parts = parts[:shared]
    return parts


def dataset_profile(dataset: YoloDataset, report: Report) -> dict[str, Any]:
    return {
        "names": dataset.names,
        "images": {k: len(v) for k, v in dataset.splits.items()},
        "boxes": {dataset.names[c]: n for c, n in sorted(report.boxes.items())},
        "background_images": report.background,
    }


def model_input(size: int) -> Preprocess:
    """The contract's pre-processing of a YOLO model: RGB, letterboxed to size x size with grey 114, / 255."""
    return Preprocess(color="rgb", size=(size, size), resize="letterbox", mean=(0.0,), std=(1.0,), pad_value=PAD_VALUE)


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio and pad to size x size, centred, with grey 114: ultralytics' LetterBox
    (the house's one letterbox, `core.preprocess.letterbox`)."""
    return preprocess.letterbox(image, model_input(size))[0]


def to_input(images_bgr: list[np.ndarray], size: int) -> np.ndarray:
    """BGR images -> the model input the contract describes: letterboxed, RGB, NCHW float32 in [0, 1]; the same
    function the server and the predictor run (`core.preprocess.prepare_batch`)."""
    return preprocess.prepare_batch(images_bgr, model_input(size))[0]


def read_images(paths: list[Path]) -> list[np.ndarray]:
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{path}: image does not decode")
        images.append(image)
    return images
