"""mAP50 of a detector on a YOLO dataset, as `kiln optimize --int8` judges a detection model's int8 version.

    python -c "from efficiency.detection import average_precision; print(average_precision([0.5, 1.0], [1.0, 0.5]))"

Boxes come from `serving.runtime.predictor.Predictor` in original-image pixels; the truth from the dataset's YOLO label
files (`class cx cy w h`, normalised; a polygon line counts as its bounding box). AP is VOC's all-point
interpolation (VOC 2010 on): the area under the precision envelope over every recall step, with predictions of a
class matched greedily, highest confidence first, to the unmatched ground-truth box of the same class and image
with the highest IoU, when that IoU is at least 0.5. mAP50 is the mean AP over the classes that have ground-truth
boxes (a class nobody labelled has no AP, as in VOC and ultralytics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DatasetError
from core.metrics import box_iou
from data.yolo_layout import YoloDataset, label_path, list_images, load_dataset, text_of
from serving.runtime.predictor import Predictor

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Labelled:
    """One ground-truth or predicted box in pixels; `confidence` is 1 for ground truth."""

    class_id: int
    xyxy: tuple[float, float, float, float]
    confidence: float = 1.0


def average_precision(recall: Sequence[float] | np.ndarray, precision: Sequence[float] | np.ndarray) -> float:
    """VOC all-point AP: the precision envelope (max precision at any higher recall) summed over recall steps."""
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_ap(predictions: Sequence[Sequence[Labelled]], truths: Sequence[Sequence[Labelled]], class_id: int) -> float:
    """AP at IoU 0.5 for one class over images (predictions[i] and truths[i] belong to image i)."""
    gt = [[t for t in boxes if t.class_id == class_id] for boxes in truths]
    total = sum(len(g) for g in gt)
    found = [(p.confidence, i, p) for i, boxes in enumerate(predictions) for p in boxes if p.class_id == class_id]
    found.sort(key=lambda item: -item[0])  # stable: equal confidences keep image order
    used = [[False] * len(g) for g in gt]
    hits = []
    for _, image, pred in found:
        ious = box_iou(pred.xyxy, [t.xyxy for t in gt[image]])[0]
        best = int(np.argmax(ious)) if ious.size else -1
        hit = best >= 0 and ious[best] >= IOU_THRESHOLD and not used[image][best]
        if hit:
            used[image][best] = True
        hits.append(hit)
    tp = np.cumsum(hits, dtype=np.float64)
    recall = tp / total
    precision = tp / np.arange(1, len(hits) + 1)
    return average_precision(recall, precision)


def map50(predictions: Sequence[Sequence[Labelled]], truths: Sequence[Sequence[Labelled]]) -> float:
    """Mean AP at IoU 0.5 over the classes with ground truth; 1.0 when no image has a box and none is predicted."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predicted images against {len(truths)} labelled ones")
    classes = sorted({t.class_id for boxes in truths for t in boxes})
    if not classes:
        return 0.0 if any(predictions) else 1.0
    return float(np.mean([class_ap(predictions, truths, c) for c in classes]))


# --- the dataset ----------------------------------------------------------------------------------------------


def read_labels(path: Path, width: int, height: int) -> list[Labelled]:
    """A YOLO label file in pixels; a missing file is an image with no objects."""
    if not path.is_file():
        return []
    boxes = []
    for number, line in enumerate(text_of(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            class_id, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise DatasetError(f"{path}:{number}: expected 'class cx cy w h' numbers, got {line.strip()!r}") from None
        if len(values) == 4:
            cx, cy, w, h = values
            xyxy = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon: its bounding box
            xs, ys = values[0::2], values[1::2]
            xyxy = (min(xs), min(ys), max(xs), max(ys))
        else:
            raise DatasetError(f"{path}:{number}: expected 'class cx cy w h' or a polygon, got {line.strip()!r}")
        boxes.append(Labelled(class_id, (xyxy[0] * width, xyxy[1] * height, xyxy[2] * width, xyxy[3] * height)))
    return boxes


def open_dataset(data: Path) -> YoloDataset:
    """A dataset YAML, a folder holding one, or a bare folder of images (images/ + labels/, or side by side)."""
    if data.is_file() or (data.is_dir() and any(data.glob("*.y*ml"))):
        return load_dataset(data, require=("val",))
    if not data.is_dir():
        raise DatasetError(f"{data}: not a dataset YAML or folder")
    images = list_images(data / "images") if (data / "images").is_dir() else list_images(data)
    if not images:
        raise DatasetError(f"{data}: no images (expected a dataset YAML, or images/ + labels/)")
    return YoloDataset(None, data.resolve(), [], splits={"all": images}, sources={"all": [data]})


def evaluation_images(dataset: YoloDataset) -> list[Path]:
    """The validation split of a YAML dataset; every image of a bare folder."""
    return dataset.splits.get("val") or dataset.splits.get("all") or dataset.images


def calibration_images(dataset: YoloDataset) -> list[Path]:
    """Training images first (what the model learned from), then the rest."""
    return dataset.splits.get("train", []) + [p for p in dataset.images if p not in dataset.splits.get("train", [])]


def detection_map50(predictor: Predictor, images: Sequence[Path], read: Callable[[Path], np.ndarray]) -> float:
    """mAP50 of a detection `predictor` on labelled `images` (`read` decodes one to BGR, as the server gets it)."""
    predictions: list[list[Labelled]] = []
    truths: list[list[Labelled]] = []
    for image_path in images:
        image = read(image_path)
        result = predictor.predict_images([image])[0]
        boxes = getattr(result, "boxes", None)
        if boxes is None:
            raise DatasetError("the model returned no boxes: it is not a detection model")
        predictions.append([Labelled(b.class_id, tuple(b.xyxy), b.confidence) for b in boxes])
        truths.append(read_labels(label_path(image_path), image.shape[1], image.shape[0]))
    return map50(predictions, truths)
