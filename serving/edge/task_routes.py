"""Task endpoints over HTTP: `POST /v1/models/{name}/predict` reads an image or JSON records, hands them to the
model's predictor (serving/runtime/predictor.py) through its batcher, and answers the result's JSON.

    curl -F image=@part.png 127.0.0.1:8080/v1/models/edgnet/predict
    curl -H 'content-type: image/jpeg' --data-binary @site.jpg '127.0.0.1:8080/v1/models/yolo/predict?conf=0.4'
    curl -d '[{"age": 41, "bmi": 27.1}]' -H 'content-type: application/json' 127.0.0.1:8080/v1/models/skin/predict
    curl -F image=@part.png '127.0.0.1:8080/v1/models/edgnet/predict?format=overlay' -o overlay.png

`?format=png` / `?format=overlay` (or `Accept: image/png`) answer a picture instead of JSON
(serving/runtime/pictures.py).

What each task does (segmentation masks, detection boxes, tabular labels, regression outputs) is in
serving/runtime/postprocess.py; this module only reads bodies and query parameters and writes the response.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.dataplane import Prepared
from serving.deployment.batching import Feeds
from serving.deployment.loading import LoadedModel
from serving.edge.http import json_response, media_type, read_body, read_json, request_plane, routing_key
from serving.errors import BadRequest, ServingError, UnsupportedMediaType
from serving.runtime.pictures import picture, wanted_format
from serving.runtime.postprocess import Task

router = APIRouter(tags=["task endpoints"])


def _query(name: str, description: str, kind: str = "number") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": kind}}


# Query parameters of every task, for /docs (a model's task decides which apply; others are refused by name).
_PARAMETERS = [
    _query("threshold", "segmentation: cut-off on the activated output (default: the model's contract)"),
    _query("conf", "detection: minimum confidence of a box (default: the contract's, e.g. 0.25)"),
    _query("iou", "detection: IoU above which NMS drops the weaker of two same-class boxes (default 0.45)"),
    _query("max_det", "detection: most boxes returned (default 300)", "integer"),
    {
        **_query("format", "answer a picture instead of JSON: `png` = the mask (segmentation) or the boxes drawn "
                 "(detection); `overlay` = the mask laid over the image. `Accept: image/png` also asks for `png`.",
                 "string"),
        "schema": {"type": "string", "enum": ["json", "png", "overlay"]},
    },
]  # fmt: skip

_JSON_EXAMPLES = {
    "image as base64": {
        "value": {
            "image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
        }
    },
    "tabular records": {"value": [{"mean radius": 14.1, "mean texture": 19.3, "...": "one value per feature"}]},
    "tabular, wrapped": {"value": {"records": [{"mean radius": 14.1, "...": "one value per feature"}]}},
}

_RESPONSES = {
    "200": {
        "description": "JSON by default; a PNG with `format=png|overlay` or `Accept: image/png`",
        "content": {
            "application/json": {
                "examples": {
                    "segmentation": {"value": {"model": "edgnet_large", "version": "1", "task": "segmentation",
                                               "width": 96, "height": 96, "threshold": 0.5,
                                               "foreground_fraction": 0.08, "mask_png": "iVBORw0..."}},
                    "detection": {"value": {"model": "safety_detection", "version": "2", "task": "detection",
                                            "width": 320, "height": 320, "box_format": "xyxy", "detections": [
                                                {"class_id": 1, "class_name": "fire", "confidence": 0.91,
                                                 "box": [40.5, 60.0, 120.25, 180.0]}]}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}  # fmt: skip

_IMAGE_BODY = {
    "parameters": _PARAMETERS,
    "responses": _RESPONSES,
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
                },
                "examples": _JSON_EXAMPLES,
            },
        },
    },
}


@router.post("/v1/models/{name}/predict", openapi_extra=_IMAGE_BODY, summary="Predict with the model's own pre/post")
async def predict(name: str, request: Request) -> Any:
    """Read the request; the dataplane picks the version, which prepares and finishes it with its predictor."""
    # most requests have no query string: Starlette's QueryParams would still parse an empty one
    query = dict(request.query_params) if request.scope["query_string"] else {}
    fmt = wanted_format(query.pop("format", None), request.headers.get("accept", ""))
    answer = await request_plane(request).infer(
        name, None, routing_key(request), TaskInputs(request, query, fmt), request.state
    )
    model, result = answer.model, answer.result
    task = _task_of(model)
    if fmt != "json":
        png = await run_in_threadpool(picture, result, answer.prepared.data or b"", fmt, task.name)
        headers = {"X-Kiln-Model": model.name, "X-Kiln-Model-Version": str(model.version)}
        return Response(png, media_type="image/png", headers=headers)
    return json_response({"model": model.name, "version": model.version, "task": task.name, **result.to_json()}, model)


class TaskInputs:
    """A task request (an image or JSON records), decoded by the predictor of the version that answers it."""

    def __init__(self, request: Request, query: dict[str, str], fmt: str) -> None:
        self.request, self.query, self.fmt = request, query, fmt

    async def prepare(self, model: LoadedModel) -> Prepared:
        task = _task_of(model)
        params = task.check_params(_query_options(task, self.query))
        predictor = model.predictor
        if task.takes_image:
            data = await read_image(self.request)
            feeds, geometry = await run_in_threadpool(predictor.prepare_bytes, data)
            return Prepared(feeds, data=data, geometry=geometry, params=params, typed=True)
        if self.fmt != "json":
            picture(None, b"", self.fmt, task.name)  # raises the 406 that names what this task answers
        payload = await read_json(self.request)
        feeds, _ = predictor.prepare_records(payload)
        return Prepared(feeds, records=payload, params=params, typed=True)

    async def finish(self, model: LoadedModel, outputs: Feeds, prepared: Prepared) -> Any:
        predictor = model.predictor
        if prepared.geometry is not None:
            assert prepared.data is not None
            return await run_in_threadpool(predictor.finish_image, outputs, prepared.geometry, prepared.params)
        rows = int(next(iter(prepared.feeds.values())).shape[0])
        return predictor.finish_records(outputs, rows)


def _task_of(model: LoadedModel) -> Task:
    task = model.predictor.task
    if task is None:
        raise BadRequest(
            f"model {model.name!r} v{model.version} has no kiln.task metadata, so it has no task endpoint; "
            f"use POST /v2/models/{model.name}/infer or /invocations"
        )
    return task


def _query_options(task: Task, query: Mapping[str, str]) -> dict[str, float]:
    """Query parameters as numbers; unknown names are refused first, naming what the task accepts."""
    options: dict[str, float] = {}
    for key, raw in query.items():
        if key == "model":
            continue
        if key not in task.params:
            raise BadRequest(f"unknown query parameter {key!r} for a {task.name} model; accepted: {list(task.params)}")
        try:
            options[key] = float(raw)
        except ValueError:
            raise BadRequest(f"query parameter {key}={raw!r} is not a number") from None
    return options


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
