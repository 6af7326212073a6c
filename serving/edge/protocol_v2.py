"""The Open Inference Protocol (KServe V2 / Triton) over REST, JSON tensors and the binary tensor extension.

    curl 127.0.0.1:8080/v2/models/skinmodel
    curl -d '{"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [...]}]}' \
        127.0.0.1:8080/v2/models/skinmodel/infer

`tritonclient.http` works against it unchanged: with `binary_data=False` the tensors travel as JSON; with its
defaults they travel as raw bytes after a JSON header whose length is in `Inference-Header-Content-Length`
(Triton's binary tensor data extension), which is much cheaper for images. Readiness answers 503 while a
model is not loaded, so Kubernetes probes and `is_model_ready` see the same thing.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from serving.dataplane import Prepared
from serving.deployment.batching import Feeds
from serving.deployment.loading import LoadedModel
from serving.deployment.store import Deployed
from serving.edge.http import json_response, parse_json, read_body, request_plane, request_store, routing_key
from serving.errors import BadRequest, ModelNotFound, ModelNotReady
from serving.runtime.tensors import V2_TO_NUMPY, TensorSpec, cast_to_spec, check_shape

router = APIRouter(tags=["Open Inference Protocol (KServe V2)"])

HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORM = "onnxruntime_onnx"

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": sorted(V2_TO_NUMPY)},
        "data": {"type": "array", "description": "row-major, flat or nested"},
        "parameters": {"type": "object", "description": "binary_data_size with the binary extension"},
    },
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON header of {HEADER_LENGTH} bytes, then the binary tensors",
            },
        },
    }
}


def _server_version() -> str:
    try:
        return version("kiln")
    except PackageNotFoundError:
        return "0"


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response({"name": "kiln", "version": _server_version(), "extensions": ["binary_tensor_data"]})


@router.get("/v2/health/live", summary="Liveness")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready", summary="Readiness: every model loaded")
async def ready(request: Request) -> Response:
    is_ready = request_store(request).ready
    return json_response({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}", summary="Model metadata")
@router.get("/v2/models/{name}/versions/{model_version}", summary="Model metadata of one version")
async def model_metadata(name: str, request: Request, model_version: str | None = None) -> Response:
    model = _deployed(request, name, model_version).model
    return json_response(metadata(model))


@router.get("/v2/models/{name}/ready", summary="Model readiness")
@router.get("/v2/models/{name}/versions/{model_version}/ready", summary="Model version readiness")
async def model_ready(name: str, request: Request, model_version: str | None = None) -> Response:
    try:
        _deployed(request, name, model_version)
    except ModelNotReady:
        return json_response({"name": name, "ready": False}, status_code=503)
    except ModelNotFound:  # an open route (a probe needs no token): name nothing that is served
        raise ModelNotFound(f"model {_short(name)} is not served") from None
    return json_response({"name": name, "ready": True})


@router.post("/v2/models/{name}/infer", openapi_extra=_INFER_BODY, summary="Inference")
@router.post("/v2/models/{name}/versions/{model_version}/infer", openapi_extra=_INFER_BODY, summary="Inference")
async def model_infer(name: str, request: Request, model_version: str | None = None) -> Response:
    inputs = V2Inputs(request)
    answer = await request_plane(request).infer(name, model_version, routing_key(request), inputs, request.state)
    response: Response = answer.result
    return response


class V2Inputs:
    """An inference request of the Open Inference Protocol: JSON or binary tensors, checked against the version
    the dataplane picks; the answer is the protocol's response (JSON, or JSON header then binary outputs)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.payload: dict[str, Any] = {}
        self.wanted: list[tuple[str, bool]] = []

    async def prepare(self, model: LoadedModel) -> Prepared:
        body = await read_body(self.request)
        self.payload, binary = _split_body(body, self.request.headers.get(HEADER_LENGTH))
        feeds = decode_inputs(self.payload, binary, model)
        self.wanted = _requested_outputs(self.payload, model)
        return Prepared(feeds)

    async def finish(self, model: LoadedModel, outputs: Feeds, prepared: Prepared) -> Response:
        return encode_response(self.payload, model, outputs, self.wanted)


def metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [s.to_json() for s in model.inputs],
        "outputs": [s.to_json() for s in model.outputs],
    }


def _deployed(request: Request, name: str, model_version: str | None) -> Deployed:
    """Production, or the version named (production's or a running canary's candidate)."""
    if model_version is None:
        return request_store(request).get(name)
    if not model_version.strip():  # `?model_version=` names no version: refused, not read as production
        raise BadRequest("model_version is empty; name a version, or leave the parameter out for production")
    return request_plane(request).route(name, model_version)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        payload, binary = parse_json(body), b""
    else:
        if not header_length.strip().isdigit() or len(header_length.strip()) > 12:
            raise BadRequest(f"{HEADER_LENGTH}={_short(header_length)} is not an integer byte count")
        length = int(header_length)
        if not 0 < length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH}={length} does not fit a body of {len(body)} bytes")
        payload, binary = parse_json(body[:length]), body[length:]
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise BadRequest('the request must be a JSON object with a non-empty "inputs" list')
    if "id" in payload and not isinstance(payload["id"], str):
        raise BadRequest(f'"id" must be a string, got {_short(payload["id"])}')
    return payload, binary


def decode_inputs(payload: dict[str, Any], binary: bytes, model: LoadedModel) -> dict[str, np.ndarray]:
    """Every input tensor of the request, checked against the model's spec."""
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(payload["inputs"]):
        name, shape, datatype, params = _tensor_header(tensor, i)
        spec = model.input(name)
        if spec is None:
            raise BadRequest(f"model {model.name!r} has no input {name!r}; inputs: {[s.name for s in model.inputs]}")
        if name in feeds:
            raise BadRequest(f"input {name!r} is given twice")
        if datatype != spec.datatype:
            raise BadRequest(f"input {name!r} has datatype {datatype}, the model expects {spec.datatype}")
        check_shape(spec, shape, "inputs")
        size = params.get("binary_data_size")
        if size is not None:
            feeds[name], offset = _binary_tensor(binary, offset, size, spec, shape)
        else:
            feeds[name] = _json_tensor(tensor, spec, shape)
    if offset != len(binary):
        raise BadRequest(f"the binary part has {len(binary)} bytes but the inputs declare {offset}")
    missing = [s.name for s in model.inputs if s.name not in feeds]
    if missing:
        raise BadRequest(f"inputs {missing} are missing; the model needs {[s.name for s in model.inputs]}")
    rows = {a.shape[0] for a in feeds.values() if a.ndim}
    if len(rows) > 1:
        raise BadRequest(f"the inputs disagree on the batch size (axis 0): {sorted(rows)}")
    return feeds


def _tensor_header(tensor: Any, i: int) -> tuple[str, list[int], str, dict[str, Any]]:
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{i}].name must be a string")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise BadRequest(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise BadRequest(f"input {name!r}: datatype {_short(datatype)} is not one of {sorted(V2_TO_NUMPY)}")
    params = _parameters(tensor, f"input {name!r}")
    if "shared_memory_region" in params:
        raise BadRequest(f"input {name!r}: shared-memory tensors are not supported by this server")
    return name, shape, datatype, params


def _json_tensor(tensor: dict[str, Any], spec: TensorSpec, shape: list[int]) -> np.ndarray:
    if "data" not in tensor:
        raise BadRequest(f"input {spec.name!r} has neither data nor parameters.binary_data_size")
    if spec.datatype == "BYTES":
        raise BadRequest(f"input {spec.name!r}: BYTES tensors are not supported")
    try:
        array = np.asarray(tensor["data"], dtype=spec.dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"input {spec.name!r}: data must be {spec.datatype} numbers in nested or flat lists") from None
    if array.size != math.prod(shape):
        raise BadRequest(f"input {spec.name!r}: shape {shape} needs {math.prod(shape)} values, data has {array.size}")
    return cast_to_spec(array.reshape(shape), spec, "inputs")


def _binary_tensor(binary: bytes, offset: int, size: Any, spec: TensorSpec, shape: list[int]) -> tuple[np.ndarray, int]:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise BadRequest(f"input {spec.name!r}: binary_data_size={size!r} runs past the {len(binary)}-byte body")
    if spec.datatype == "BYTES":
        raise BadRequest(f"input {spec.name!r}: BYTES tensors are not supported")
    expected = math.prod(shape) * spec.dtype.itemsize
    if size != expected:
        raise BadRequest(f"input {spec.name!r}: shape {shape} of {spec.datatype} needs {expected} bytes, got {size}")
    array = np.frombuffer(binary, dtype=spec.dtype.newbyteorder("<"), count=math.prod(shape), offset=offset)
    return array.reshape(shape), offset + size


def _requested_outputs(payload: dict[str, Any], model: LoadedModel) -> list[tuple[str, bool]]:
    """(name, binary?) for every output to return; all of them when the request names none."""
    default_binary = _flag(_parameters(payload, "the request"), "binary_data_output", "the request")
    requested = payload.get("outputs")
    if requested is None:
        return [(s.name, default_binary) for s in model.outputs]
    if not isinstance(requested, list):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    known = {s.name for s in model.outputs}
    wanted: list[tuple[str, bool]] = []
    for i, item in enumerate(requested):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in known:
            raise BadRequest(
                f"outputs[{i}]: model {model.name!r} has no output {_short(name)}; outputs: {sorted(known)}"
            )
        params = _parameters(item, f"outputs[{i}]")
        if "classification" in params:
            raise BadRequest("the classification extension is not supported; request the raw output")
        if "shared_memory_region" in params:
            raise BadRequest(f"output {name!r}: shared-memory tensors are not supported by this server")
        wanted.append((name, _flag(params, "binary_data", f"outputs[{i}]", default_binary)))
    return wanted


def _parameters(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """The `parameters` object of a request, tensor or output; absent or null is empty, anything else a 400."""
    params = owner.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: parameters must be an object, got {_short(params)}")
    return params


def _flag(params: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameters.{key} must be true or false, got {_short(value)}")
    return value


def _short(value: Any, limit: int = 60) -> str:
    """A client value for an error message: its repr, cut (a client value can be megabytes or deeply nested)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_response(
    payload: dict[str, Any], model: LoadedModel, outputs: dict[str, np.ndarray], wanted: list[tuple[str, bool]]
) -> Response:
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in wanted:
        value = outputs[name]
        spec = next(s for s in model.outputs if s.name == name)
        tensor: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(value.shape)}
        if binary:
            raw = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = value.ravel().tolist()
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": tensors}
    if isinstance(payload.get("id"), str):
        body["id"] = payload["id"]
    if not chunks:
        return json_response(body, model)
    header = json_response(body).body
    headers = {HEADER_LENGTH: str(len(header)), "X-Kiln-Model": model.name, "X-Kiln-Model-Version": model.version}
    return Response(bytes(header) + b"".join(chunks), media_type="application/octet-stream", headers=headers)
