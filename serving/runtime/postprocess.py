"""What each `kiln.task` does around the ONNX run, in numpy: the input checks at load, images or records into
feeds, and raw outputs into typed results whose `.to_json()` is the body of the task endpoint.

    python -c "from serving.runtime.postprocess import TASKS; print(sorted(TASKS))"

Every parameter comes from the model's `kiln.*` contract (core/contract.py), never from constants:
- segmentation: logits [B,1,H,W] -> activation, threshold -> mask on the original image and foreground fraction;
- detection: [B,4+nc,N] xywh -> confidence filter, class-aware NMS -> boxes in original-image pixels with class
  names (or [B,N,6] from a graph that ran NMS itself);
- tabular: records -> columns in `feature_names` order -> labels and probabilities (or values);
- regression: the output reshaped to `output_shape`, with its `layout`.
Tasks are found through a registry filled by `@register_task`, so a new task is one class. The predictor
(serving/runtime/predictor.py) drives these; the HTTP endpoint (serving/edge/task_routes.py) only reads and
writes bytes.
"""

from __future__ import annotations

import base64
import functools
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import numpy as np

from core.contract import DetectionPost, ModelContract, RegressionPost, SegmentationPost, TabularPost
from core.preprocess import Geometry, prepare, unletterbox_boxes, unletterbox_map
from serving.errors import BadRequest
from serving.runtime.imaging import encode_png
from serving.runtime.tensors import TensorSpec

Feeds = dict[str, np.ndarray]
Params = dict[str, float]
Specs = tuple[TensorSpec, ...]

PARAM_RANGES: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "conf": (0.0, 1.0),
    "iou": (0.0, 1.0),
    "max_det": (1.0, 10000.0),
}


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """A mask on the original image: `mask` is uint8 HxW with 1 for foreground, 0 for background."""

    mask: np.ndarray  # uint8 HxW in original pixels, 1 = foreground
    logits: np.ndarray  # float32 HxW: the model's raw output mapped back to original pixels
    activation: str  # the contract's activation ("sigmoid" or "none")
    threshold: float  # the threshold the mask was cut at (on the activated output)

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def probability(self) -> np.ndarray:
        """float32 HxW foreground probability: the activated output (computed on demand; the mask does not need it)."""
        if self.activation == "none":
            return self.logits
        return np.asarray(1.0 / (1.0 + np.exp(-self.logits.astype(np.float32))), dtype=np.float32)

    @property
    def foreground_fraction(self) -> float:
        return float(self.mask.mean())

    def to_json(self) -> dict[str, Any]:
        png = encode_png(self.mask * np.uint8(255))
        return {
            "width": self.width,
            "height": self.height,
            "threshold": self.threshold,
            "foreground_fraction": round(self.foreground_fraction, 6),
            "mask_png": base64.b64encode(png).decode("ascii"),
        }


@dataclass(frozen=True)
class Box:
    """One detection, in original-image pixels."""

    class_id: int
    class_name: str
    confidence: float
    xyxy: tuple[float, float, float, float]  # x1, y1, x2, y2

    def to_json(self) -> dict[str, Any]:
        return {
            "class_id": self.class_id,
            "class_name": self.class_name,
            "confidence": round(self.confidence, 5),
            "box": [round(v, 2) for v in self.xyxy],
        }


@dataclass(frozen=True)
class DetectionResult:
    """Every box kept after the confidence filter, NMS and max_det, highest confidence first."""

    width: int  # original image
    height: int
    boxes: tuple[Box, ...]

    @property
    def xyxy(self) -> np.ndarray:
        return np.array([b.xyxy for b in self.boxes], dtype=np.float64).reshape(-1, 4)

    @property
    def class_ids(self) -> np.ndarray:
        return np.array([b.class_id for b in self.boxes], dtype=np.int64)

    @property
    def confidences(self) -> np.ndarray:
        return np.array([b.confidence for b in self.boxes], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "box_format": "xyxy",
            "detections": [b.to_json() for b in self.boxes],
        }


@dataclass(frozen=True, eq=False)
class RegressionResult:
    """One image's output, reshaped to the contract's `output_shape` (e.g. a 2x2x30 spectrum per Bayer cell)."""

    values: np.ndarray
    layout: str
    cells: Any = None

    def to_json(self) -> dict[str, Any]:
        result = {"shape": list(self.values.shape), "layout": self.layout, "output": self.values.tolist()}
        return result if self.cells is None else {**result, "cells": self.cells}


@dataclass(frozen=True, eq=False)
class TabularResult:
    """One record's answer: `label` and `probabilities` for a classifier, `value` for a regressor."""

    label: Any = None  # a value of the contract's classes (or the class id when the contract lists fewer)
    probabilities: np.ndarray | None = None  # float64 [classes]
    value: float | list[float] | None = None  # regression

    def to_json(self) -> dict[str, Any]:
        if self.probabilities is None:
            return {"value": self.value}
        return {"label": self.label, "probabilities": np.round(self.probabilities, 6).tolist()}


class TabularResults(Sequence[TabularResult]):
    """The answers to a batch of records, in order; `.to_json()` is the task endpoint's body.

    The task makes it from the run's columns (`from_columns`): the answer is written from them directly, and the
    per-record `TabularResult`s are only built when something iterates them (drift, shadow, off the request path),
    which keeps a one-row request's answer to a few numpy calls."""

    def __init__(self, results: Iterable[TabularResult], classes: Sequence[Any], regression: bool) -> None:
        self._rows: list[TabularResult] | None = list(results)
        self.classes = list(classes)
        self.regression = regression
        self._answers: list[Any] = []  # labels (classifier) or values (regressor), when made from columns
        self._probabilities: np.ndarray | None = None  # float64 [rows, classes], when made from columns

    @classmethod
    def from_columns(
        cls, answers: list[Any], probabilities: np.ndarray | None, classes: Sequence[Any]
    ) -> TabularResults:
        """A classifier's labels and [rows, classes] probabilities, or (`probabilities` None) a regressor's values."""
        results = cls.__new__(cls)  # no per-record list to copy
        results.classes, results.regression = list(classes), probabilities is None
        results._rows, results._answers, results._probabilities = None, answers, probabilities
        return results

    @property
    def rows(self) -> list[TabularResult]:
        if self._rows is None:  # two threads may both build it: the same list, and the assignment is atomic
            if self._probabilities is None:
                self._rows = [TabularResult(value=v) for v in self._answers]
            else:
                pairs = zip(self._answers, self._probabilities, strict=True)
                self._rows = [TabularResult(label=label, probabilities=p) for label, p in pairs]
        return self._rows

    @overload
    def __getitem__(self, index: int) -> TabularResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[TabularResult]: ...

    def __getitem__(self, index: int | slice) -> TabularResult | list[TabularResult]:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows) if self._rows is not None else len(self._answers)

    def __iter__(self) -> Iterator[TabularResult]:
        return iter(self.rows)

    def to_json(self) -> dict[str, Any]:
        if self._rows is None:
            answers, probabilities = self._answers, self._probabilities
        else:
            answers = [r.value if self.regression else r.label for r in self._rows]
            found = [r.probabilities for r in self._rows if r.probabilities is not None]
            probabilities = None if self.regression else np.stack(found)
        if self.regression or probabilities is None:
            return {"predictions": answers}
        return {"predictions": answers, "probabilities": rounded(probabilities, 6), "classes": self.classes}


def rounded(matrix: np.ndarray, decimals: int) -> list[Any]:
    """`np.round(matrix, decimals).tolist()` of a float64 [rows, columns] matrix. numpy rounds as
    rint(x * 10**decimals) / 10**decimals in three ufunc calls, the most of a one-row answer's numpy time; Python's
    round() of the same product is the same half-to-even rint, so a few values are rounded here bit for bit."""
    if matrix.size > 64 or matrix.ndim != 2 or matrix.dtype != np.float64:
        return list(matrix.round(decimals).tolist())
    scale = 10.0**decimals
    try:
        # a zero keeps its sign, as rint's does (-0.4 -> -0.0); round() of nan or inf raises
        return [[(round(v * scale) or math.copysign(0.0, v)) / scale for v in row] for row in matrix.tolist()]
    except (ValueError, OverflowError):  # nan or inf, which numpy keeps as they are
        return list(matrix.round(decimals).tolist())


ImageResult = SegmentationResult | DetectionResult | RegressionResult


# --- tasks ------------------------------------------------------------------------------------------------


class Task:
    """One kind of model: how its tensors are checked at load, and which options its predictions take."""

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()  # options (query parameters) predictions accept
    takes_image: ClassVar[bool] = True

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        raise NotImplementedError

    def check_params(self, params: Mapping[str, float]) -> Params:
        """Refuse options this task does not take and values out of range, naming them."""
        checked: Params = {}
        for key, value in params.items():
            if key not in self.params:
                raise BadRequest(
                    f"unknown query parameter {key!r} for a {self.name} model; accepted: {list(self.params)}"
                )
            low, high = PARAM_RANGES[key]
            if not low <= float(value) <= high:
                raise BadRequest(f"query parameter {key}={float(value)} is outside [{low}, {high}]")
            checked[key] = float(value)
        return checked


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown kiln.task {name!r}; known: {sorted(TASKS)}") from None


class ImageTask(Task):
    """Tasks whose input is one image: preprocess per `kiln.preprocess`, one result per image."""

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        pre = contract.preprocess
        assert pre is not None
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.name} expects one NCHW input, the model has {[s.to_json() for s in inputs]}")
        _, channels, height, width = inputs[0].shape
        if channels is not None and channels != pre.channels:
            raise ValueError(f"input has {channels} channels but kiln.preprocess.color is {pre.color!r}")
        if (height, width) != (None, None) and (height, width) != pre.size:
            raise ValueError(f"input is {height}x{width} but kiln.preprocess.size is {list(pre.size)}")

    def prepare(self, contract: ModelContract, spec: TensorSpec, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """A decoded image (uint8 BGR or gray) -> the 1xCxHxW input in the input's dtype, and its geometry."""
        assert contract.preprocess is not None
        return prepare(image, contract.preprocess, spec.dtype)

    def finish(self, contract: ModelContract, output: np.ndarray, geometry: Geometry, params: Params) -> ImageResult:
        """One image's row of the first output -> its result."""
        raise NotImplementedError


@register_task
class Segmentation(ImageTask):
    name = "segmentation"
    params = ("threshold",)

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        super().check_io(contract, inputs, outputs)
        if len(outputs[0].shape) != 4 or outputs[0].shape[1] not in (1, None):
            raise ValueError(f"segmentation expects logits [B,1,H,W], the first output is {outputs[0].wire_shape}")

    def finish(
        self, contract: ModelContract, output: np.ndarray, geometry: Geometry, params: Params
    ) -> SegmentationResult:
        post = contract.postprocess
        assert isinstance(post, SegmentationPost)
        threshold = params.get("threshold", post.threshold)
        values = unletterbox_map(output[0].astype(np.float32, copy=False), geometry)
        mask = (values > activated_cut(post.activation, threshold)).astype(np.uint8)
        return SegmentationResult(mask=mask, logits=values, activation=post.activation, threshold=threshold)


def activated_cut(activation: str, threshold: float) -> float:
    """The raw-output value above which activation(x) > threshold, so the map is never activated."""
    if activation == "none":
        return threshold
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold / (1.0 - threshold))


@register_task
class Detection(ImageTask):
    name = "detection"
    params = ("conf", "iou", "max_det")

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        super().check_io(contract, inputs, outputs)
        post = contract.postprocess
        assert isinstance(post, DetectionPost)
        shape = outputs[0].shape
        want = 6 if post.nms else 4 + len(post.names)
        axis = 2 if post.nms else 1
        if len(shape) != 3 or shape[axis] not in (want, None):
            layout = "[B,N,6]" if post.nms else f"[B,4+nc,N] with nc={len(post.names)}"
            raise ValueError(f"detection expects {layout}, the first output is {outputs[0].wire_shape}")

    def finish(
        self, contract: ModelContract, output: np.ndarray, geometry: Geometry, params: Params
    ) -> DetectionResult:
        post = contract.postprocess
        assert isinstance(post, DetectionPost)
        conf = params.get("conf", post.conf)
        iou = params.get("iou", post.iou)
        max_det = int(params.get("max_det", post.max_det))
        raw = output.astype(np.float32, copy=False)
        boxes, scores, classes = end2end(raw, conf) if post.nms else decode_yolo(raw, conf, iou, max_det)
        original = unletterbox_boxes(boxes[:max_det].reshape(-1, 4), geometry)
        kept = [
            Box(
                class_id=int(c),
                class_name=post.names[int(c)] if int(c) < len(post.names) else str(int(c)),
                confidence=float(s),
                xyxy=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            )
            for b, s, c in zip(original, scores[:max_det], classes[:max_det], strict=True)
        ]
        return DetectionResult(width=geometry.width, height=geometry.height, boxes=tuple(kept))


MAX_WH = 7680.0  # class offset for class-aware NMS in one pass, as ultralytics does


def decode_yolo(raw: np.ndarray, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, ...]:
    """[4+nc, N] xywh + class scores -> xyxy boxes, scores and classes after confidence filter and NMS."""
    predictions = raw.T
    class_scores = predictions[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(classes)), classes]
    keep = scores > conf
    xywh, scores, classes = predictions[keep, :4], scores[keep], classes[keep]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    kept = nms(boxes + (classes[:, None] * MAX_WH), scores, iou)[:max_det]
    return boxes[kept], scores[kept], classes[kept]


def end2end(raw: np.ndarray, conf: float) -> tuple[np.ndarray, ...]:
    """[N, 6] x1,y1,x2,y2,score,class from a graph that ran NMS itself."""
    keep = raw[:, 4] > conf
    rows = raw[keep]
    order = np.argsort(-rows[:, 4], kind="stable")
    rows = rows[order]
    return rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns indices of kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


@register_task
class Regression(ImageTask):
    name = "regression"

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        super().check_io(contract, inputs, outputs)
        post = contract.postprocess
        assert isinstance(post, RegressionPost)
        per_sample = outputs[0].shape[1:]
        if all(d is not None for d in per_sample) and math.prod(d or 0 for d in per_sample) != math.prod(
            post.output_shape
        ):
            raise ValueError(
                f"output {outputs[0].wire_shape} cannot be reshaped to kiln.postprocess.output_shape "
                f"{list(post.output_shape)}"
            )

    def finish(
        self, contract: ModelContract, output: np.ndarray, geometry: Geometry, params: Params
    ) -> RegressionResult:
        post = contract.postprocess
        assert isinstance(post, RegressionPost)
        return RegressionResult(values=output.reshape(post.output_shape), layout=post.layout, cells=post.cells)


@register_task
class Tabular(Task):
    name = "tabular"
    takes_image = False

    def check_io(self, contract: ModelContract, inputs: Specs, outputs: Specs) -> None:
        post = contract.postprocess
        assert isinstance(post, TabularPost)
        if len(inputs) != 1 or len(inputs[0].shape) != 2:
            raise ValueError(f"tabular expects one [N, features] input, the model has {[s.to_json() for s in inputs]}")
        width = inputs[0].shape[1]
        if width is not None and width != len(post.feature_names):
            raise ValueError(
                f"input has {width} columns but kiln.postprocess.feature_names lists {len(post.feature_names)}"
            )
        if post.task != "regression" and probabilities_output(outputs) is None:
            raise ValueError(
                f"{post.task} needs a [N, classes] float output; outputs: {[s.to_json() for s in outputs]}"
            )

    def prepare(self, contract: ModelContract, spec: TensorSpec, payload: Any) -> np.ndarray:
        """A list of records (or `{"records": [...]}`) -> the [N, F] input in the input's dtype."""
        post = contract.postprocess
        assert isinstance(post, TabularPost)
        records = payload.get("records") if isinstance(payload, dict) else payload
        return records_to_matrix(records, post.feature_names).astype(spec.dtype, copy=False)

    def finish(self, contract: ModelContract, outputs: Specs, values: Feeds, rows: int) -> TabularResults:
        post = contract.postprocess
        assert isinstance(post, TabularPost)
        if post.task == "regression":
            flat = values[outputs[0].name].reshape(rows, -1)
            answers = (flat[:, 0] if flat.shape[1] == 1 else flat).tolist()
            return TabularResults.from_columns(answers, None, ())
        probs_name, label_name = _classifier_outputs(outputs)
        probs = values[probs_name].astype(np.float64)
        labels = values[label_name].reshape(-1) if label_name else probs.argmax(axis=1)
        classes = post.classes
        if len(labels) != len(probs):  # checked here: the rows that would have refused it are built lazily
            raise ValueError(f"the model answered {len(labels)} labels for {len(probs)} rows of probabilities")
        named = [classes[i] if 0 <= i < len(classes) else i for i in map(int, labels.tolist())]
        return TabularResults.from_columns(named, probs, classes)


@functools.lru_cache(maxsize=256)
def _classifier_outputs(outputs: Specs) -> tuple[str, str | None]:
    """The names of a classifier's probabilities and label outputs, found once per loaded model's specs (the
    lookup walks the specs in Python, a request's answer only needs the names)."""
    probs = probabilities_output(outputs)
    if probs is None:  # Tabular.check_io refuses such a model at load
        raise ValueError(f"no [N, classes] float output among {[s.to_json() for s in outputs]}")
    return probs.name, next((s.name for s in outputs if s.name == "label"), None)


def probabilities_output(outputs: Specs) -> TensorSpec | None:
    named = next((s for s in outputs if s.name == "probabilities"), None)
    if named is not None:
        return named
    return next((s for s in outputs if s.datatype in ("FP32", "FP64") and len(s.shape) == 2), None)


def records_to_matrix(records: Any, features: tuple[str, ...]) -> np.ndarray:
    """[{feature: number | bool | null}, ...] -> float64 [N, F] in `features` order; null is missing (NaN)."""
    if not isinstance(records, list) or not records:
        raise BadRequest('expected a non-empty JSON list of records, or {"records": [...]}')
    wanted, row_of = _feature_lookup(features)
    rows: list[Sequence[Any]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequest(f"record {i} is {type(record).__name__}, expected an object of feature: value")
        if record.keys() != wanted:
            _explain_keys(i, record, wanted)
        rows.append(row_of(record))
    try:
        return np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        _explain_values(rows, features)
        raise


@functools.lru_cache(maxsize=64)
def _feature_lookup(features: tuple[str, ...]) -> tuple[frozenset[str], Callable[[Mapping[str, Any]], Sequence[Any]]]:
    """A contract's feature names as a set, and a getter of a record's values in their order (made once per
    contract, not per request: the set and a Python loop over 30 names were a tenth of a record's decoding)."""
    if len(features) == 1:  # itemgetter of one name answers the value, not a tuple
        return frozenset(features), lambda record: [record[features[0]]]
    return frozenset(features), operator.itemgetter(*features)


def _explain_keys(i: int, record: Mapping[str, Any], wanted: frozenset[str]) -> None:
    missing, unknown = sorted(wanted - record.keys()), sorted(record.keys() - wanted)
    raise BadRequest(f"record {i}: missing features {missing}, unknown features {unknown}")


def _explain_values(rows: list[Sequence[Any]], features: tuple[str, ...]) -> None:
    for i, row in enumerate(rows):
        for name, value in zip(features, row, strict=True):
            if value is not None and not isinstance(value, int | float):  # bool is an int: a 0/1 flag
                raise BadRequest(f"record {i}: feature {name!r} must be a number or null, got {value!r}")
