"""Task endpoints: `POST /v1/models/{name}/predict` does the model family's own pre- and post-processing.

    curl -F image=@part.png 127.0.0.1:8080/v1/models/edgnet/predict
    curl -H 'content-type: image/jpeg' --data-binary @site.jpg '127.0.0.1:8080/v1/models/yolo/predict?conf=0.4'
    curl -d '[{"age": 41, "bmi": 27.1}]' -H 'content-type: application/json' 127.0.0.1:8080/v1/models/skin/predict

What each task does is read from the model's `kiln.*` metadata (see serving/contract.py), never from constants:
- segmentation: logits [B,1,H,W] -> activation, threshold -> mask on the original image as PNG (base64) and
  the foreground fraction;
- detection: [B,4+nc,N] xywh -> confidence filter, class-aware NMS -> boxes in original-image pixels with class
  names;
- tabular: JSON records -> columns in `feature_names` order -> predictions (class labels) and probabilities;
- regression: the output reshaped to `output_shape`, with its `layout`.
Tasks are found through a registry filled by `@register_task`, so a new task is one class.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from serving.contract import (
    DetectionPost,
    ModelContract,
    RegressionPost,
    SegmentationPost,
    TabularPost,
)
from serving.errors import BadRequest, ServingError, UnsupportedMediaType
from serving.http import json_response, media_type, read_body, read_json, request_store
from serving.imaging import Geometry, encode_png, preprocess, unletterbox_map
from serving.tensors import TensorSpec

if TYPE_CHECKING:
    from serving.store import LoadedModel

Feeds = dict[str, np.ndarray]
Params = dict[str, float]
Specs = tuple[TensorSpec, ...]


class Task:
    """One kind of model: how to check its tensors at load, turn a request into feeds, and outputs into JSON."""

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()  # query parameters the endpoint accepts
    takes_image: ClassVar[bool] = True

    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
        raise NotImplementedError

    def prepare(self, model: LoadedModel, payload: Any) -> tuple[Feeds, Any]:
        raise NotImplementedError

    def finish(self, model: LoadedModel, outputs: Feeds, context: Any, params: Params) -> dict[str, Any]:
        raise NotImplementedError


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown kiln.task {name!r}; known: {sorted(TASKS)}") from None


# --- image tasks ------------------------------------------------------------------------------------------


class ImageTask(Task):
    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
        pre = contract.preprocess
        assert pre is not None
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{self.name} expects one NCHW input, the model has {[s.to_json() for s in inputs]}")
        _, channels, height, width = inputs[0].shape
        if channels is not None and channels != pre.channels:
            raise ValueError(f"input has {channels} channels but kiln.preprocess.color is {pre.color!r}")
        if (height, width) != (None, None) and (height, width) != pre.size:
            raise ValueError(f"input is {height}x{width} but kiln.preprocess.size is {list(pre.size)}")

    def prepare(self, model: LoadedModel, payload: Any) -> tuple[Feeds, Geometry]:
        assert model.contract.preprocess is not None
        spec = model.inputs[0]
        tensor, geometry = preprocess(payload, model.contract.preprocess, spec.dtype)
        return {spec.name: tensor}, geometry


@register_task
class Segmentation(ImageTask):
    name = "segmentation"
    params = ("threshold",)

    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
        super().check_io(contract, inputs, outputs)
        if len(outputs[0].shape) != 4 or outputs[0].shape[1] not in (1, None):
            raise ValueError(f"segmentation expects logits [B,1,H,W], the first output is {outputs[0].wire_shape}")

    def finish(self, model: LoadedModel, outputs: Feeds, context: Any, params: Params) -> dict[str, Any]:
        post = model.contract.postprocess
        assert isinstance(post, SegmentationPost)
        threshold = params.get("threshold", post.threshold)
        values = outputs[model.outputs[0].name][0, 0].astype(np.float32, copy=False)
        values = unletterbox_map(values, context)
        mask = values > _activated_cut(post.activation, threshold)
        png = encode_png(mask.astype(np.uint8) * 255)
        return {
            "width": context.width,
            "height": context.height,
            "threshold": threshold,
            "foreground_fraction": round(float(mask.mean()), 6),
            "mask_png": base64.b64encode(png).decode("ascii"),
        }


def _activated_cut(activation: str, threshold: float) -> float:
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

    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
        super().check_io(contract, inputs, outputs)
        post = contract.postprocess
        assert isinstance(post, DetectionPost)
        shape = outputs[0].shape
        want = 6 if post.nms else 4 + len(post.names)
        axis = 2 if post.nms else 1
        if len(shape) != 3 or shape[axis] not in (want, None):
            layout = "[B,N,6]" if post.nms else f"[B,4+nc,N] with nc={len(post.names)}"
            raise ValueError(f"detection expects {layout}, the first output is {outputs[0].wire_shape}")

    def finish(self, model: LoadedModel, outputs: Feeds, context: Any, params: Params) -> dict[str, Any]:
        post = model.contract.postprocess
        assert isinstance(post, DetectionPost)
        conf = params.get("conf", post.conf)
        iou = params.get("iou", post.iou)
        max_det = int(params.get("max_det", post.max_det))
        raw = outputs[model.outputs[0].name][0].astype(np.float32, copy=False)
        boxes, scores, classes = _end2end(raw, conf) if post.nms else _decode_yolo(raw, conf, iou, max_det)
        boxes = _to_original(boxes[:max_det], context)
        detections = [
            {
                "class_id": int(c),
                "class_name": post.names[int(c)] if int(c) < len(post.names) else str(int(c)),
                "confidence": round(float(s), 5),
                "box": [round(float(v), 2) for v in b],
            }
            for b, s, c in zip(boxes, scores[:max_det], classes[:max_det], strict=True)
        ]
        return {"width": context.width, "height": context.height, "box_format": "xyxy", "detections": detections}


MAX_WH = 7680.0  # class offset for class-aware NMS in one pass, as ultralytics does


def _decode_yolo(raw: np.ndarray, conf: float, iou: float, max_det: int) -> tuple[np.ndarray, ...]:
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


def _end2end(raw: np.ndarray, conf: float) -> tuple[np.ndarray, ...]:
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


def _to_original(boxes: np.ndarray, g: Geometry) -> np.ndarray:
    """Model-input pixels -> original-image pixels, clipped to the image."""
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - g.pad_left) / g.gain_x, 0, g.width)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - g.pad_top) / g.gain_y, 0, g.height)
    return out


@register_task
class Regression(ImageTask):
    name = "regression"

    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
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

    def finish(self, model: LoadedModel, outputs: Feeds, context: Any, params: Params) -> dict[str, Any]:
        post = model.contract.postprocess
        assert isinstance(post, RegressionPost)
        values = outputs[model.outputs[0].name][0].reshape(post.output_shape)
        result = {"shape": list(post.output_shape), "layout": post.layout, "output": values.tolist()}
        return result if post.cells is None else {**result, "cells": post.cells}


# --- tabular ----------------------------------------------------------------------------------------------


@register_task
class Tabular(Task):
    name = "tabular"
    takes_image = False

    def check_io(
        self, contract: ModelContract, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
    ) -> None:
        post = contract.postprocess
        assert isinstance(post, TabularPost)
        if len(inputs) != 1 or len(inputs[0].shape) != 2:
            raise ValueError(f"tabular expects one [N, features] input, the model has {[s.to_json() for s in inputs]}")
        width = inputs[0].shape[1]
        if width is not None and width != len(post.feature_names):
            raise ValueError(
                f"input has {width} columns but kiln.postprocess.feature_names lists {len(post.feature_names)}"
            )
        if post.task != "regression" and _probabilities(outputs) is None:
            raise ValueError(
                f"{post.task} needs a [N, classes] float output; outputs: {[s.to_json() for s in outputs]}"
            )

    def prepare(self, model: LoadedModel, payload: Any) -> tuple[Feeds, int]:
        post = model.contract.postprocess
        assert isinstance(post, TabularPost)
        records = payload.get("records") if isinstance(payload, dict) else payload
        matrix = records_to_matrix(records, post.feature_names)
        spec = model.inputs[0]
        return {spec.name: matrix.astype(spec.dtype, copy=False)}, len(matrix)

    def finish(self, model: LoadedModel, outputs: Feeds, context: Any, params: Params) -> dict[str, Any]:
        post = model.contract.postprocess
        assert isinstance(post, TabularPost)
        if post.task == "regression":
            values = outputs[model.outputs[0].name].reshape(context, -1)
            return {"predictions": (values[:, 0] if values.shape[1] == 1 else values).tolist()}
        probs_spec = _probabilities(model.outputs)
        assert probs_spec is not None
        probs = outputs[probs_spec.name]
        label_spec = next((s for s in model.outputs if s.name == "label"), None)
        labels = outputs[label_spec.name].reshape(-1) if label_spec else probs.argmax(axis=1)
        classes = list(post.classes)
        return {
            "predictions": [classes[int(i)] if 0 <= int(i) < len(classes) else int(i) for i in labels],
            "probabilities": np.round(probs.astype(np.float64), 6).tolist(),
            "classes": classes,
        }


def _probabilities(outputs: Specs) -> TensorSpec | None:
    named = next((s for s in outputs if s.name == "probabilities"), None)
    if named is not None:
        return named
    return next((s for s in outputs if s.datatype in ("FP32", "FP64") and len(s.shape) == 2), None)


def records_to_matrix(records: Any, features: tuple[str, ...]) -> np.ndarray:
    """[{feature: number | bool | null}, ...] -> float64 [N, F] in `features` order; null is missing (NaN)."""
    if not isinstance(records, list) or not records:
        raise BadRequest('expected a non-empty JSON list of records, or {"records": [...]}')
    wanted = set(features)
    rows: list[list[Any]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequest(f"record {i} is {type(record).__name__}, expected an object of feature: value")
        if record.keys() != wanted:
            _explain_keys(i, record, wanted)
        rows.append([record[f] for f in features])
    try:
        return np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        _explain_values(rows, features)
        raise


def _explain_keys(i: int, record: Mapping[str, Any], wanted: set[str]) -> None:
    missing, unknown = sorted(wanted - record.keys()), sorted(record.keys() - wanted)
    raise BadRequest(f"record {i}: missing features {missing}, unknown features {unknown}")


def _explain_values(rows: list[list[Any]], features: tuple[str, ...]) -> None:
    for i, row in enumerate(rows):
        for name, value in zip(features, row, strict=True):
            if value is not None and not isinstance(value, int | float):  # bool is an int: a 0/1 flag
                raise BadRequest(f"record {i}: feature {name!r} must be a number or null, got {value!r}")


# --- the HTTP endpoint ------------------------------------------------------------------------------------

router = APIRouter(tags=["task endpoints"])


_IMAGE_BODY = {
    "requestBody": {
        "description": "An image (multipart field `image`, raw image bytes, or base64 JSON), or for tabular "
        "models a JSON list of records.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "properties": {"image": {"type": "string", "description": "base64"}}},
                        {"type": "array", "items": {"type": "object"}, "description": "tabular records"},
                        {"type": "object", "properties": {"records": {"type": "array", "items": {"type": "object"}}}},
                    ]
                }
            },
        },
    }
}


@router.post("/v1/models/{name}/predict", openapi_extra=_IMAGE_BODY, summary="Predict with the model's own pre/post")
async def predict(name: str, request: Request) -> Any:
    from serving.store import infer

    deployed = request_store(request).get(name)
    model = deployed.model
    request.state.model, request.state.version = model.name, model.version
    task = _task_of(model)
    params = _params(task, request.query_params)
    if task.takes_image:
        data = await read_image(request)
        feeds, context = await run_in_threadpool(task.prepare, model, data)
    else:
        feeds, context = task.prepare(model, await read_json(request))
    outputs = await infer(deployed, feeds)
    if task.takes_image:
        result = await run_in_threadpool(task.finish, model, outputs, context, params)
    else:
        result = task.finish(model, outputs, context, params)
    return json_response({"model": model.name, "version": model.version, "task": task.name, **result}, model)


def _task_of(model: LoadedModel) -> Task:
    if model.contract.task is None:
        raise BadRequest(
            f"model {model.name!r} v{model.version} has no kiln.task metadata, so it has no task endpoint; "
            f"use POST /v2/models/{model.name}/infer or /invocations"
        )
    return get_task(model.contract.task)


def _params(task: Task, query: Mapping[str, str]) -> Params:
    params: Params = {}
    for key, raw in query.items():
        if key == "model":
            continue
        if key not in task.params:
            raise BadRequest(f"unknown query parameter {key!r} for a {task.name} model; accepted: {list(task.params)}")
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"query parameter {key}={raw!r} is not a number") from None
        low, high = _PARAM_RANGES[key]
        if not low <= value <= high:
            raise BadRequest(f"query parameter {key}={value} is outside [{low}, {high}]")
        params[key] = value
    return params


_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "conf": (0.0, 1.0),
    "iou": (0.0, 1.0),
    "max_det": (1.0, 10000.0),
}


async def read_image(request: Request) -> bytes:
    """The image bytes of a multipart upload, a raw image body, or base64 JSON."""
    media = media_type(request)
    reader = _IMAGE_READERS.get(media) or (_raw_body if media.startswith("image/") else None)
    if reader is None:
        raise UnsupportedMediaType(
            f"content-type {media!r} is not accepted; send multipart/form-data with an `image` file, "
            "image/png or image/jpeg bytes, or application/json with base64 `image`"
        )
    return await reader(request)


async def _multipart(request: Request) -> bytes:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=8)
    except ServingError:
        raise
    except Exception as err:  # python-multipart raises several types for broken bodies
        raise BadRequest(f"the multipart body could not be parsed: {err}") from None
    field = form.get("image") or form.get("file")
    if not isinstance(field, UploadFile):
        raise BadRequest(f"the multipart body has no `image` file field (fields: {sorted(form.keys())})")
    return await field.read()


async def _raw_body(request: Request) -> bytes:
    return await read_body(request)


async def _base64_json(request: Request) -> bytes:
    payload = await read_json(request)
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(image, str):
        raise BadRequest('expected {"image": "<base64>"} for an image model')
    if image.startswith("data:") and "," in image:
        image = image.split(",", 1)[1]
    try:
        return base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("field `image` is not valid base64") from None


_IMAGE_READERS: dict[str, Callable[[Request], Any]] = {
    "multipart/form-data": _multipart,
    "application/json": _base64_json,
    "application/octet-stream": _raw_body,
}
