"""MLflow's scoring protocol: `POST /invocations` and `GET /ping`, so clients of `mlflow models serve` and
SageMaker's inference-container contract work against kiln unchanged.

    curl -H 'content-type: application/json' -H 'X-Kiln-Model: skinmodel' \
        -d '{"dataframe_split": {"columns": ["age", "bmi"], "data": [[41, 27.1]]}}' 127.0.0.1:8080/invocations

Accepted bodies: JSON with exactly one of `inputs`, `instances`, `dataframe_split`, `dataframe_records`, or
`text/csv` with a header row. The model is the `X-Kiln-Model` header or `?model=`; with one model served it is
implied. Answers follow MLflow's ONNX flavor: tensor inputs give `{"predictions": {output: values}}`, table
inputs (dataframe or CSV) give `{"predictions": [{output: value}, ...]}`, one record per row.
"""

from __future__ import annotations

import csv
import io
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from core.contract import TabularPost
from serving.dataplane import Prepared
from serving.deployment.loading import LoadedModel
from serving.edge.http import (
    json_response,
    media_type,
    parse_json,
    read_body,
    request_plane,
    request_store,
    routing_key,
)
from serving.errors import BadRequest, UnsupportedMediaType
from serving.runtime.postprocess import records_to_matrix
from serving.runtime.tensors import as_array, cast_to_spec, check_shape

router = APIRouter(tags=["MLflow scoring protocol"])

FORMATS = ("inputs", "instances", "dataframe_split", "dataframe_records")
Feeds = dict[str, np.ndarray]

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "exactly one of the keys",
                    "properties": {
                        "inputs": {"description": "a tensor, or {input name: tensor}"},
                        "instances": {"type": "array", "description": "rows; objects map input names"},
                        "dataframe_split": {
                            "type": "object",
                            "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                        },
                        "dataframe_records": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
            "text/csv": {"schema": {"type": "string"}, "description": "a header row, then one row per sample"},
        },
    },
    "parameters": [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "X-Kiln-Model", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
}


@router.get("/ping", summary="SageMaker/MLflow health: 200 once every model is loaded")
@router.get("/health", summary="Same as /ping")
async def ping(request: Request) -> Response:
    ok = request_store(request).ready
    return PlainTextResponse("\n", status_code=200 if ok else 503)


@router.get("/version", summary="Server version")
async def server_version() -> Response:
    try:
        text = version("kiln")
    except PackageNotFoundError:
        text = "0"
    return PlainTextResponse(text)


@router.post("/invocations", openapi_extra=_BODY, summary="Score with MLflow's input formats")
async def invocations(request: Request) -> Response:
    name = request.headers.get("x-kiln-model") or request.query_params.get("model")
    answer = await request_plane(request).infer(name, None, routing_key(request), ScoringInputs(request), request.state)
    response: Response = answer.result
    return response


class ScoringInputs:
    """A request of MLflow's scoring protocol, parsed for the version the dataplane picks."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.tabular = False

    async def prepare(self, model: LoadedModel) -> Prepared:
        feeds, self.tabular = await _parse(self.request, model)
        return Prepared(feeds)

    async def finish(self, model: LoadedModel, outputs: Feeds, prepared: Prepared) -> Response:
        if self.tabular:
            return json_response({"predictions": _records(outputs)}, model)
        return json_response({"predictions": {k: v.tolist() for k, v in outputs.items()}}, model)


async def _parse(request: Request, model: LoadedModel) -> tuple[Feeds, bool]:
    """Feeds, and whether the input was a table (its answer is then one record per row)."""
    kind = media_type(request)
    body = await read_body(request)
    if kind == "text/csv":
        columns, rows = _csv(body)
        return _table(model, columns, rows), True
    if kind not in ("application/json", ""):
        raise UnsupportedMediaType(f"content-type {kind!r} is not accepted; use application/json or text/csv")
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadRequest(f"the body must be a JSON object with one of {list(FORMATS)}")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise BadRequest(f"the body must have exactly one of {list(FORMATS)}; it has {sorted(payload)}")
    if payload.get("params") not in (None, {}, [], "", False, 0):
        raise BadRequest("`params` are not supported: ONNX models take only tensors")
    key = keys[0]
    return _PARSERS[key](model, payload[key]), key.startswith("dataframe")


def _inputs(model: LoadedModel, value: Any) -> Feeds:
    if isinstance(value, dict):
        if not value:
            raise BadRequest("`inputs` is an empty object; name each input: {input name: tensor}")
        return _named(model, {k: as_array(v, "inputs", k) for k, v in value.items()})
    return _single(model, as_array(value, "inputs", "inputs"))


def _instances(model: LoadedModel, value: Any) -> Feeds:
    if not isinstance(value, list) or not value:
        raise BadRequest("`instances` must be a non-empty list")
    if all(isinstance(row, dict) for row in value):
        names = value[0].keys()
        if any(row.keys() != names for row in value):
            raise BadRequest("every object in `instances` must have the same keys")
        return _named(model, {n: as_array([row[n] for row in value], "instances", n) for n in names})
    return _single(model, as_array(value, "instances", "instances"))


def _dataframe_split(model: LoadedModel, value: Any) -> Feeds:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise BadRequest('`dataframe_split` must be {"columns": [...], "data": [[...], ...]}')
    columns = value.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise BadRequest("`dataframe_split.columns` must be a list of strings")
    return _table(model, columns, value["data"])


def _dataframe_records(model: LoadedModel, value: Any) -> Feeds:
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise BadRequest("`dataframe_records` must be a non-empty list of objects")
    post = model.contract.postprocess
    if isinstance(post, TabularPost):
        return _single(model, records_to_matrix(value, post.feature_names))
    columns = list(value[0].keys())
    if any(list(r.keys()) != columns for r in value):
        raise BadRequest("every record in `dataframe_records` must have the same keys")
    return _table(model, columns, [[r[c] for c in columns] for r in value])


_PARSERS = {
    "inputs": _inputs,
    "instances": _instances,
    "dataframe_split": _dataframe_split,
    "dataframe_records": _dataframe_records,
}


def _table(model: LoadedModel, columns: list[str] | None, rows: list[Any]) -> Feeds:
    """A table -> feeds: tabular models reorder columns by feature_names; one input takes the matrix; several
    inputs take one column each (as MLflow's ONNX flavor does)."""
    if not rows:
        raise BadRequest("the table has no rows")
    post = model.contract.postprocess
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, list)), None)
    if bad is not None:
        raise BadRequest(f"row {bad} of the table is {type(rows[bad]).__name__}; every row must be a list of values")
    if columns is not None and any(len(row) != len(columns) for row in rows):
        raise BadRequest(f"every row must have {len(columns)} values, one per column")
    if isinstance(post, TabularPost) and columns is not None:
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        return _single(model, records_to_matrix(records, post.feature_names))
    matrix = as_array(rows, "dataframe", "data")
    if len(model.inputs) == 1:
        return _single(model, matrix)
    if columns is None or sorted(columns) != sorted(s.name for s in model.inputs) or matrix.ndim != 2:
        raise BadRequest(f"a model with inputs {[s.name for s in model.inputs]} needs one column per input")
    return _named(model, {c: matrix[:, i] for i, c in enumerate(columns)})


def _single(model: LoadedModel, array: np.ndarray) -> Feeds:
    if len(model.inputs) != 1:
        raise BadRequest(f"one tensor was given but the model has inputs {[s.name for s in model.inputs]}; name them")
    return _named(model, {model.inputs[0].name: array})


def _named(model: LoadedModel, arrays: dict[str, np.ndarray]) -> Feeds:
    feeds: Feeds = {}
    for spec in model.inputs:
        if spec.name not in arrays:
            raise BadRequest(f"input {spec.name!r} is missing; given {sorted(arrays)}")
        array = cast_to_spec(arrays[spec.name], spec, "invocations")
        check_shape(spec, array.shape, "invocations")
        feeds[spec.name] = array
    unknown = sorted(set(arrays) - set(feeds))
    if unknown:
        raise BadRequest(f"unknown inputs {unknown}; the model has {[s.name for s in model.inputs]}")
    return feeds


def _csv(body: bytes) -> tuple[list[str], list[Any]]:
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8")))
        header = next(reader)
        rows = [[_csv_value(v) for v in row] for row in reader if row]
    except (UnicodeDecodeError, StopIteration, csv.Error) as err:
        raise BadRequest(f"the CSV body could not be read ({err or 'empty'}); send a header row, then rows") from None
    if len(set(header)) != len(header):
        raise BadRequest(f"the CSV header names a column twice: {header[:20]}")
    return header, rows


def _csv_value(text: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"CSV value {text[:40]!r} is not a number") from None


def _records(outputs: Feeds) -> list[dict[str, Any]]:
    rows = {a.shape[0] for a in outputs.values() if a.ndim}
    if len(rows) != 1:
        return [{k: v.tolist() for k, v in outputs.items()}]
    columns = {k: v.tolist() for k, v in outputs.items()}
    return [{k: columns[k][i] for k in columns} for i in range(rows.pop())]
