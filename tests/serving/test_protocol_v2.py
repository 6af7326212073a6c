"""The Open Inference Protocol (KServe V2): every route, JSON and binary tensors, gzip bodies, clear 400s,
and tritonclient.http against a live server, unchanged, with and without binary data."""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest
from serving_helpers import LiveServer

from serving.edge.app import create_app


def _infer(client: Any, name: str, body: Any, **kw: Any) -> Any:
    return client.post(f"/v2/models/{name}/infer", json=body, **kw)


def _x(data: Any, shape: list[int] | None = None, datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape or [1, 3], "datatype": datatype, "data": data}


def test_health_and_server_metadata(client: Any) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "kiln" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client: Any) -> None:
    meta = client.get("/v2/models/tab").json()
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert client.get("/v2/models/tab/versions/1").status_code == 200
    assert client.get("/v2/models/tab/ready").json() == {"name": "tab", "ready": True}
    assert client.get("/v2/models/tab/versions/1/ready").status_code == 200
    assert client.get("/v2/models/tab/versions/7/ready").status_code == 404
    assert client.get("/v2/models/ghost").status_code == 404


def test_infer_json_nested_or_flat_with_id_and_selected_outputs(client: Any) -> None:
    r = _infer(client, "plain", {"id": "r1", "inputs": [_x([[1, 2, 3], [4, 5, 6]], [2, 3])]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "r1" and body["model_name"] == "plain" and body["model_version"] == "1"
    assert body["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [2, 4, 6, 8, 10, 12]}]
    r = _infer(client, "tab", {"inputs": [_x([0.0] * 8, [2, 4], name="input")], "outputs": [{"name": "label"}]})
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    assert r.json()["outputs"][0]["datatype"] == "INT64"


def test_infer_versioned_route(client: Any) -> None:
    assert client.post("/v2/models/plain/versions/1/infer", json={"inputs": [_x([1, 2, 3])]}).status_code == 200
    r = client.post("/v2/models/plain/versions/2/infer", json={"inputs": [_x([1, 2, 3])]})
    assert r.status_code == 404 and "version 1 is" in r.json()["error"]


def test_binary_tensor_extension_both_ways(client: Any) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = client.post(
        "/v2/models/plain/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 24
    assert np.array_equal(np.frombuffer(r.content[length:], np.float32).reshape(2, 3), 2 * x)


def test_gzip_request_body(client: Any) -> None:
    body = gzip.compress(json.dumps({"inputs": [_x([1, 2, 3])]}).encode())
    r = client.post("/v2/models/plain/infer", content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2, 4, 6]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [_x([1, 2, 3, 4, 5], [1, 3])]}, "shape [1, 3] needs 3 values, data has 5"),
        ({"inputs": [_x([1, 2, 3, 4], [1, 4])]}, "expects shape [-1, 3], got [1, 4]"),
        ({"inputs": [_x([1, 2, 3], [3])]}, "expects rank 2"),
        ({"inputs": [_x([1, 2, 3], datatype="FP64")]}, "has datatype FP64, the model expects FP32"),
        ({"inputs": [_x([1, 2, 3], datatype="FLOAT")]}, "datatype 'FLOAT' is not one of"),
        ({"inputs": [_x(["a", "b", "c"])]}, "data must be FP32 numbers"),
        ({"inputs": [_x([1, 2, 3], name="z")]}, "has no input 'z'; inputs: ['x']"),
        ({"inputs": [_x([1, 2, 3]), _x([1, 2, 3])]}, "input 'x' is given twice"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}, "neither data nor"),
        ({"inputs": [_x([1, 2, 3])], "outputs": [{"name": "nope"}]}, "has no output 'nope'"),
        ({"inputs": [_x([1, 2, 3])], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}, "classif"),
        ({"inputs": []}, 'non-empty "inputs" list'),
        ([1, 2], 'non-empty "inputs" list'),
        ({"inputs": [_x([1, 2, 3], [1, "3"])]}, "shape must be a list of integers"),
    ],
)
def test_bad_infer_requests_are_400_with_the_reason(client: Any, body: Any, message: str) -> None:
    r = _infer(client, "plain", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"", {}, "the body is empty"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "does not fit a body"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "abc"}, "is not an integer"),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, "could not be decompressed"),
    ],
)
def test_malformed_bodies_are_400(client: Any, content: bytes, headers: dict[str, str], message: str) -> None:
    r = client.post("/v2/models/plain/infer", content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_binary_size_mismatch_is_400(client: Any) -> None:
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    ).encode()
    r = client.post(
        "/v2/models/plain/infer",
        content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "needs 12 bytes, got 8" in r.json()["error"]


@pytest.fixture(scope="module")
def live(registry: Any) -> Any:
    with LiveServer(create_app(registry.settings(("tab", "seg")))) as server:
        yield server


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http_works_unchanged(live: Any, binary: bool) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{live.port}")
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("tab")
    assert triton.get_model_metadata("tab")["inputs"][0]["shape"] == [-1, 4]
    rows = np.array([[2, 2, 0, 0], [-2, -2, 0, 0]], dtype=np.float32)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = triton.infer("tab", [tensor], outputs=outputs, request_id="42")
    assert result.as_numpy("label").tolist() == [1, 0]
    assert result.as_numpy("probabilities").shape == (2, 2)
    assert result.get_response()["id"] == "42"
    image = np.zeros((1, 1, 32, 32), np.float32)
    seg_input = httpclient.InferInput("input", [1, 1, 32, 32], "FP32")
    seg_input.set_data_from_numpy(image, binary_data=binary)
    seg = triton.infer("seg", [seg_input])  # no outputs named: tritonclient asks for binary outputs
    assert np.allclose(seg.as_numpy("output"), -0.5)
    bad = httpclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=binary)
    with pytest.raises(InferenceServerException, match=r"expects shape \[-1, 4\], got \[1, 3\]"):
        triton.infer("tab", [bad])
    triton.close()
