"""`kiln data autolabel DST --model NAME@ALIAS`: pre-label every image not reviewed yet with a registered
detector, through serving's Predictor (the server's own pre- and post-processing), and queue them for review.

    kiln data autolabel data/door --model visitor_detection@production --conf 0.25
    python -c "from data.autolabel import autolabel; print(autolabel('data/door', 'door@production').summary())"

Pre-labels go to DST/prelabels/<image>.txt (YOLO, sixth column = confidence) and into the review queue with
the model's name and version. The queue is ordered by how much a person's look is worth: the priority of an
image is 1 - d / max(conf, 1 - conf), where d is the distance of its box closest to the confidence threshold
(kept boxes, and candidates up to `margin` below the threshold that the model almost reported). 1 means a box
sits exactly on the threshold; an image with no box near it scores low, one with no candidate at all 0.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import DatasetError, UserError
from data.collect import open_log, state_dir
from data.loop import Box, ensure_class_names, prelabel_file, write_boxes
from data.review.store import Prelabel, ReviewStore
from data.yolo_layout import list_images

AUTOLABEL_LOG = "autolabel.jsonl"


@dataclass
class AutolabelResult:
    dst: Path
    model: str  # NAME/VERSION, or the file it came from
    labelled: int = 0
    already_reviewed: int = 0
    undecodable: list[str] = field(default_factory=list)
    boxes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    queued: int = 0

    def summary(self) -> str:
        rate = self.labelled / self.seconds if self.seconds > 0 else 0.0
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.boxes.items())) or "none"
        parts = [
            f"pre-labelled {self.labelled} image(s) with {self.model} in {self.seconds:.1f} s ({rate:.1f}/s)",
            f"boxes: {counts}",
            f"{self.already_reviewed} already reviewed (kept as they are)" if self.already_reviewed else "",
            f"{len(self.undecodable)} undecodable, skipped: {', '.join(self.undecodable[:5])}"
            if self.undecodable
            else "",
            f"{self.queued} image(s) to review: kiln data review {self.dst}",
        ]
        return "; ".join(p for p in parts if p)


def model_source(model: str) -> str:
    """`NAME@ALIAS` / `NAME/3` -> `models:/...`; a models:/ URI or a local file as given."""
    if model.startswith("models:/") or Path(model).expanduser().exists():
        return model
    if "@" in model or "/" in model:
        return f"models:/{model}"
    raise UserError(f"--model {model!r}: write NAME@ALIAS (e.g. door@production), NAME/VERSION or a .onnx file")


def priority(scores: list[float], conf: float) -> float:
    if not scores:
        return 0.0
    nearest = min(abs(s - conf) for s in scores)
    return round(max(0.0, 1.0 - nearest / max(conf, 1.0 - conf)), 6)


def default_margin(conf: float) -> float:
    """0.1 below the threshold, but never past half of it: --conf 0.001 alone must not be refused."""
    return min(0.1, conf / 2)


def autolabel(
    dst: str | Path,
    model: str,
    *,
    conf: float = 0.25,
    margin: float | None = None,
    batch: int = 8,
    tracking_uri: str | None = None,
    progress: bool = False,
) -> AutolabelResult:
    """Pre-label every image of DST/images that no person reviewed yet."""
    from serving.runtime.predictor import Predictor

    if not 0.0 < conf < 1.0:
        raise UserError(f"--conf must be in (0, 1), got {conf}")
    margin = default_margin(conf) if margin is None else margin
    if not 0.0 <= margin < conf:
        raise UserError(f"--margin must be in [0, conf), got {margin}")
    dst = Path(dst).expanduser()
    store = ReviewStore(dst)
    predictor = Predictor.load(model_source(model), tracking_uri=tracking_uri)
    names = _detector_names(predictor, model)
    ensure_class_names(dst, names, model)
    label = f"{predictor.name}/{predictor.version}" if predictor.version else predictor.name
    result = AutolabelResult(dst=dst, model=label)
    reviewed = store.reviewed_paths()
    todo = []
    for path in list_images(dst / "images"):
        rel = path.relative_to(dst).as_posix()
        if rel in reviewed:
            result.already_reviewed += 1
        else:
            todo.append(rel)
    start = time.perf_counter()
    _label_all(predictor, store, todo, result, conf=conf, margin=margin, batch=batch, progress=progress)
    result.seconds = time.perf_counter() - start
    store.sync_images()
    result.queued = store.progress()["queued"]
    with open_log(state_dir(dst) / AUTOLABEL_LOG) as log:
        entry = {"model": predictor.name, "version": predictor.version, "source": predictor.source, "conf": conf,
                 "images": result.labelled, "at": round(time.time(), 3)}  # fmt: skip
        log.write(json.dumps(entry) + "\n")
    return result


def _detector_names(predictor: Any, model: str) -> list[str]:
    from core.contract import DetectionPost

    post = predictor.contract.postprocess
    if predictor.contract.task != "detection" or not isinstance(post, DetectionPost):
        raise UserError(f"--model {model}: {predictor.source} is a {predictor.contract.task or 'generic'} model; "
                        "auto-labelling needs a detection model")  # fmt: skip
    return list(post.names)


def _label_all(
    predictor: Any,
    store: ReviewStore,
    todo: list[str],
    result: AutolabelResult,
    *,
    conf: float,
    margin: float,
    batch: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    version = str(predictor.version or "")
    bar = tqdm(total=len(todo), unit="img", desc="autolabel", disable=not progress or not todo)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for chunk, images in _decoded(pool, store.dst, todo, batch):
            decoded = [(rel, im) for rel, im in zip(chunk, images, strict=True) if im is not None]
            result.undecodable += [rel for rel, im in zip(chunk, images, strict=True) if im is None]
            detections = predictor.predict_images([im for _, im in decoded], conf=max(conf - margin, 1e-4))
            items = [
                _prelabel(store.dst, rel, det, conf, predictor.name, version, result)
                for (rel, _), det in zip(decoded, detections, strict=True)
            ]
            store.add_prelabels(items)
            result.labelled += len(items)
            bar.update(len(chunk))
    bar.close()


def _decoded(pool: ThreadPoolExecutor, dst: Path, todo: list[str], batch: int) -> Iterator[Any]:
    """Batches of (paths, images), the next batch decoding while the model runs on this one."""
    chunks = [todo[i : i + batch] for i in range(0, len(todo), max(1, batch))]
    pending = pool.submit(_decode_chunk, dst, chunks[0]) if chunks else None
    for i, chunk in enumerate(chunks):
        assert pending is not None
        images = pending.result()
        pending = pool.submit(_decode_chunk, dst, chunks[i + 1]) if i + 1 < len(chunks) else None
        yield chunk, images


def _decode_chunk(dst: Path, chunk: list[str]) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for rel in chunk:
        data = np.fromfile(dst / rel, dtype=np.uint8)
        out.append(cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None)
    return out


def _box(found: Any) -> Box:
    x1, y1, x2, y2 = (round(float(v), 2) for v in found.xyxy)
    return Box(found.class_id, x1, y1, x2, y2, round(found.confidence, 4))


def _prelabel(
    dst: Path, rel: str, detection: Any, conf: float, model: str, version: str, result: AutolabelResult
) -> Prelabel:
    kept = [b for b in detection.boxes if b.confidence >= conf]
    boxes = [_box(b) for b in kept]
    result.boxes.update(b.class_name for b in kept)
    width, height = int(detection.width), int(detection.height)
    if width < 1 or height < 1:
        raise DatasetError(f"{dst / rel}: the model saw an empty image")
    write_boxes(prelabel_file(dst, rel), boxes, width, height, with_confidence=True)
    score = priority([b.confidence for b in detection.boxes], conf)
    return Prelabel(rel, width, height, boxes, score, model, version)
