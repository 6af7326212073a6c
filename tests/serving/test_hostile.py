"""Hostile input: malformed bodies of every class end in a 4xx, requests too large for a model are refused before
the run, onnxruntime refusals say what the model accepts, and the server's logs and metrics stay honest.

    .venv/bin/python -m pytest tests/serving/test_hostile.py -q

The module registry (conftest.py) serves seg, det, reg, tab and plain; tests that need their own models or
settings build them here. The last test runs uvicorn with kiln's protocol class on a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from serving_helpers import SEG_PRE, Registry, _graph, _meta, png_bytes, with_metadata

from core.contract import SegmentationPost
from serving.edge.app import create_app
from serving.edge.metrics import Metrics
from serving.edge.middleware import AccessMiddleware, BodyLimitMiddleware, TracebackLimiter

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b"1" * 5000
V2 = "/v2/models/plain/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], **overrides}


# (route, body as bytes or JSON, extra headers): every one of these was a 500 before, or is of the same class
MALFORMED: list[tuple[str, Any, dict[str, str]]] = [
    (V2, DEEP, {}),
    (V2, gzip.compress(DEEP), {"content-encoding": "gzip"}),
    ("/invocations?model=plain", DEEP, {}),
    ("/v1/models/tab/predict", DEEP, {}),
    (V2, HUGE_INT, {}),
    (V2, {"inputs": [tensor(data=[10**400, 1, 2])]}, {}),
    ("/v1/models/tab/predict", [{"f0": 10**400, "f1": 0, "f2": 0, "f3": 0}], {}),
    ("/invocations?model=tab", {"dataframe_split": {"columns": ["f0", "f1", "f2", "f3"], "data": [5]}}, {}),
    ("/invocations?model=tab", {"dataframe_split": {"columns": ["f0", "f1", "f2", "f3"], "data": [None]}}, {}),
    ("/invocations?model=plain", {"dataframe_split": {"data": [5, 6, 7]}}, {}),
    ("/invocations?model=plain", {"dataframe_split": {"columns": ["x"], "data": [[1, 2, 3]]}}, {}),
    ("/invocations?model=plain", {"inputs": {}}, {}),
    ("/invocations?model=plain", {"instances": [[1, 2, [3]]]}, {}),
    ("/invocations?model=plain", {"inputs": [[1e308, 1, 2]], "params": {"a": 1}}, {}),
    (V2, {"inputs": [tensor()], "parameters": [1, 2]}, {}),
    (V2, {"inputs": [tensor()], "parameters": "x"}, {}),
    (V2, {"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}}, {}),
    (V2, {"inputs": [tensor()], "outputs": [{"name": "y", "parameters": [1]}]}, {}),
    (V2, {"inputs": [tensor()], "outputs": [{"name": ["y"]}]}, {}),
    (V2, {"inputs": [tensor(datatype={"a": 1})]}, {}),
    (V2, {"inputs": [tensor(datatype=["FP32"])]}, {}),
    (V2, {"inputs": [tensor(parameters=[1])]}, {}),
    (V2, {"inputs": [tensor(parameters={"binary_data_size": True})]}, {}),
    (V2, {"id": {"a": [1]}, "inputs": [tensor()]}, {}),
    (V2, {"inputs": [tensor(data={"a": 1})]}, {}),
    (V2, {"inputs": [tensor(shape=[10**18, 10**18])]}, {}),
    (V2, b'{"inputs": [' + b"[" * 70 + b"]" * 70 + b"]}", {}),
    (V2, b'{"inputs": [1]}', {"Inference-Header-Content-Length": "9" * 40}),
    ("/v1/models/seg/predict", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 9000 +X 9000\n" + b"\0" * 4000,
     {"content-type": "image/x-hdr"}),
    ("/v1/models/seg/predict", b"GIF89a" + b"\0" * 100, {"content-type": "image/gif"}),
    ("/v1/models/seg/predict", {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 50).decode()}, {}),
    ("/v1/webhooks/mlflow", DEEP, {}),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "headers"), MALFORMED)
def test_malformed_requests_are_4xx_with_a_message(client: Any, route: str, body: Any, headers: dict[str, str]) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(route, content=content, headers={"content-type": "application/json", **headers})
    assert 400 <= r.status_code < 500, (route, r.status_code, r.text[:300])
    assert r.json()["error"] and "Traceback" not in r.text


def test_a_5000_digit_integer_is_named(client: Any) -> None:
    r = client.post(V2, content=b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [' + HUGE_INT)
    assert r.status_code == 400 and "5000 digits" in r.json()["error"]


def test_integer_inputs_are_range_checked(client: Any) -> None:
    from serving.errors import BadRequest
    from serving.runtime.tensors import TensorSpec, cast_to_spec

    with pytest.raises(BadRequest, match=r"INT8 values in \[-128, 127\]"):
        cast_to_spec(np.array([1, 300]), TensorSpec("x", "INT8", (None,)), "inputs")


# --- a graph that needs even sides, as a UNet needs multiples of 2**depth ----------------------------------------


def even_sides_model(size_multiple: int) -> onnx.ModelProto:
    """output = x + upsample(maxpool(x)): runs for even H and W only (an odd side gives mismatched maps)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, "h", "w"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, "h", "w"])
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    nodes = [
        helper.make_node("MaxPool", ["input"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["input", "up"], ["output"]),
    ]
    model = _graph(nodes, [x], [y], [scales])
    pre = replace(SEG_PRE, size=(32, 32), size_multiple=size_multiple)
    return with_metadata(model, _meta("segmentation", "edgnet", pre, SegmentationPost()))


@pytest.fixture(scope="module")
def even(template_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serving_helpers import image_example, new_registry

    reg = new_registry(template_store, tmp_path_factory.mktemp("even"))
    reg.register("declared", even_sides_model(2), image_example(32))
    reg.register("undeclared", even_sides_model(1), image_example(32))  # its contract forgets the multiple
    app = create_app(reg.settings(("declared", "undeclared")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def v2_image(side: int, batch: int = 1) -> dict[str, Any]:
    shape = [batch, 1, side, side]
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": [0.5] * int(np.prod(shape))}]}


@pytest.mark.parametrize("side", [5, 1, 97])
def test_a_side_the_contract_refuses_is_400_before_the_run(even: Any, side: int) -> None:
    r = even.post("/v2/models/declared/infer", json=v2_image(side))
    assert r.status_code == 400
    assert "multiples of 2" in r.json()["error"] and f"{side}x{side}" in r.json()["error"]
    assert even.post("/v2/models/declared/infer", json=v2_image(34)).status_code == 200


def test_an_onnxruntime_refusal_is_400_saying_what_the_model_accepts(even: Any) -> None:
    r = even.post("/v2/models/undeclared/infer", json=v2_image(5))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "cannot run 'input' [1, 1, 5, 5]" in error and "it accepts 'input' FP32 [-1, 1, -1, -1]" in error
    assert "trained at 32x32" in error


def test_pixels_over_the_models_cap_are_413_before_the_run(even: Any) -> None:
    deployed = even.app.state.store.get("declared")
    limits = deployed.limits
    assert limits.max_pixels == 4 * deployed.batcher.config.max_batch_size * 32 * 32  # the automatic size
    assert deployed.model.predictor.shrink_above_pixels == limits.usual_pixels == limits.max_pixels // 4
    side = int(np.sqrt(limits.max_pixels)) // 2 * 2 + 2  # one even square just over the cap
    raw = np.zeros((1, 1, side, side), np.float32).tobytes()
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 1, side, side], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    r = even.post(
        "/v2/models/declared/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 413 and "KILN_MAX_REQUEST_PIXELS" in r.json()["error"], r.text


def test_the_pixel_cap_is_a_setting(registry: Registry) -> None:
    app = create_app(registry.settings(("seg",), max_request_pixels=2048))
    with TestClient(app) as c:
        assert c.post("/v2/models/seg/infer", json=v2_image(32, batch=2)).status_code == 200
        r = c.post("/v2/models/seg/infer", json=v2_image(32, batch=3))
        assert r.status_code == 413 and "3,072 pixels" in r.json()["error"] and "limit is 2,048" in r.json()["error"]
        ok = c.post("/v1/models/seg/predict", content=png_bytes(np.zeros((500, 700), np.uint8)),
                    headers={"content-type": "image/png"})  # fmt: skip
        assert ok.status_code == 200  # the task endpoint resizes to the model's size first


# --- headers, slow bodies, disconnects, 500s ----------------------------------------------------------------------


def test_too_many_or_too_large_headers_are_431(client: Any) -> None:
    many = {f"x-h{i}": "1" for i in range(150)}
    r = client.get("/ping", headers=many)
    assert r.status_code == 431 and "at most 100 are read" in r.json()["error"]
    r = client.get("/ping", headers={"x-big": "a" * 70_000})
    assert r.status_code == 431 and "the limit is 65536" in r.json()["error"]


def asgi_call(app: Any, receive_messages: list[Any], path: str = "/x") -> tuple[list[dict[str, Any]], Any]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b"", "state": {}}

    async def receive() -> Any:
        item = receive_messages.pop(0) if receive_messages else {"type": "http.disconnect"}
        if item == "hang":
            await asyncio.sleep(30)
        return item

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, scope


async def reads_body(scope: Any, receive: Any, send: Any) -> None:
    from starlette.requests import Request
    from starlette.responses import Response

    body = await Request(scope, receive).body()
    await Response(body)(scope, receive, send)


def test_a_body_that_does_not_arrive_in_time_is_408(caplog: pytest.LogCaptureFixture) -> None:
    from core.http import error_response
    from serving.edge.app import render_error
    from serving.errors import ServingError

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await reads_body(scope, receive, send)
        except ServingError as err:  # what the routes' error handler does
            await error_response(err, render_error)(scope, receive, send)

    guarded = BodyLimitMiddleware(app, max_bytes=1000, timeout=0.2)
    start = time.monotonic()
    sent, _ = asgi_call(guarded, [{"type": "http.request", "body": b"ab", "more_body": True}, "hang"])
    assert time.monotonic() - start < 5
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert b"within 0.2 s" in sent[1]["body"] and b"2 bytes came" in sent[1]["body"]


def test_a_client_that_leaves_mid_body_is_499_not_500(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    app = AccessMiddleware(BodyLimitMiddleware(reads_body, max_bytes=1000), metrics)
    with caplog.at_level(logging.INFO, logger="kiln"):
        sent, _ = asgi_call(app, [{"type": "http.request", "body": b"ab", "more_body": True}])
    assert sent == []  # nobody to answer
    text = metrics.render().decode()
    assert 'status="499"' in text and 'status="500"' not in text
    assert "kiln_client_disconnects_total" in text and "kiln_request_errors_total{" not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_500_is_one_line_with_the_request_id_and_repeated_tracebacks_are_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the disk fell off")

    app = AccessMiddleware(broken, Metrics())
    with caplog.at_level(logging.ERROR, logger="kiln.serving.errors"):
        first, scope = asgi_call(app, [])
        second, _ = asgi_call(app, [])
    request_id = scope["state"]["request_id"]
    assert first[0]["status"] == 500 and request_id.encode() in first[1]["body"]
    assert second[0]["status"] == 500
    entries = [r.msg for r in caplog.records if r.name == "kiln.serving.errors"]
    assert len(entries) == 2 and all(isinstance(e, dict) for e in entries)
    assert entries[0]["request_id"] == request_id and "RuntimeError: the disk fell off" in entries[0]["error"]
    assert "Traceback" in entries[0]["traceback"] and entries[1]["traceback"].startswith("suppressed")


def test_the_traceback_limiter_is_per_place_and_bounded() -> None:
    limiter = TracebackLimiter(60, max_places=2)
    assert limiter.allow("a", now=0) and not limiter.allow("a", now=30) and limiter.allow("a", now=61)
    assert limiter.allow("b", now=61) and limiter.allow("c", now=61)  # over max_places: forgotten, not grown
    assert len(limiter._last) <= 2


# --- swaps and open routes --------------------------------------------------------------------------------------


def test_swap_failing_clears_when_the_alias_returns(fresh_registry: Registry) -> None:
    from serving_helpers import image_example, seg_model

    reg = fresh_registry
    reg.register("seg", seg_model(), image_example(32))
    reg.register("seg", seg_model(bias=0.1), image_example(32), alias=None)
    reg.corrupt("seg", "2")
    with TestClient(create_app(reg.settings(("seg",), swap_retry_seconds=0))) as c:
        reg.set_alias("seg", "2")
        assert c.post("/v1/models/seg/reload").json()["last_swap_error"]["version"] == "2"
        assert 'kiln_model_swap_failing{model="seg"} 1.0' in c.get("/metrics").text
        reg.set_alias("seg", "1")
        status = c.post("/v1/models/seg/reload").json()
        assert status["version"] == "1" and status["last_swap_error"] is None
        assert 'kiln_model_swap_failing{model="seg"} 0.0' in c.get("/metrics").text


def test_open_routes_leak_no_model_names(registry: Registry) -> None:
    app = create_app(registry.settings(("plain", "tab"), api_token="s3cret"))
    with TestClient(app) as c:
        r = c.get("/v2/models/ghost/ready")
        assert r.status_code == 404 and "plain" not in r.text and "tab" not in r.text
        assert c.get("/v2/models/plain/ready").status_code == 200
        for path in ("/metrics", "/redoc", "/docs/oauth2-redirect", "/v1/models", "/v2/models/ghost"):
            assert c.get(path).status_code == 401, path


# --- the real socket: uvicorn with kiln's protocol ---------------------------------------------------------------


def raw_request(port: int, data: bytes, read: bool = True) -> bytes:
    """Send `data` (from a thread, so a server that stops reading cannot block us) and read the answer; a server
    that closed on unread bytes resets the connection, which can drop its answer: then b"RESET"."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(data)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        if not read:
            sender.join(timeout=10)
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            return b"".join(chunks) or b"RESET"
        return b"".join(chunks)


@pytest.mark.slow
def test_uvicorn_with_kilns_protocol_refuses_huge_heads_and_counts_disconnects(registry: Registry) -> None:
    import uvicorn

    from serving.cli import bind_tcp
    from serving.edge.transport import KilnHttpProtocol

    app = create_app(registry.settings(("plain",), body_timeout_seconds=1.0))
    sock = bind_tcp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, http=KilnHttpProtocol, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        start = time.monotonic()
        big = raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4_000_000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431") or big == b"RESET", big[:200]  # closed at 64 KiB, not 4 MB
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(20_000))
        answer = raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431") or answer == b"RESET", answer[:200]
        assert time.monotonic() - start < 10
        just_over = raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert just_over.startswith(b"HTTP/1.1 431"), just_over[:200]
        few_too_many = b"".join(b"X-H%d: 1\r\n" % i for i in range(120))
        assert raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + few_too_many + b"\r\n").startswith(
            b"HTTP/1.1 431"
        )
        body = json.dumps({"inputs": [[0.5, 1.5, 2.5]] * 20_000}).encode()  # ~400 KB: bodies are not head
        posted = raw_request(port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
        assert posted.startswith(b"HTTP/1.1 200"), posted[:300]
        slow = raw_request(port, b'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in')
        assert slow.startswith(b"HTTP/1.1 408")
        raw_request(port, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", read=False)
        ok = raw_request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while "kiln_client_disconnects_total" not in (text := app.state.metrics.render().decode()):
            assert time.monotonic() < deadline, "the disconnect was not counted"
            time.sleep(0.1)
        assert 'status="500"' not in text
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# --- decode limits, empty model_version, 405 Allow (#22; the unit tests are in test_decode_limits.py) ------------


def test_the_task_route_answers_413_for_a_lying_header_and_200_for_a_reduced_jpeg(client: Any) -> None:
    lying = client.post(
        "/v1/models/seg/predict", content=_lying_jpeg(8000, 8000), headers={"content-type": "image/jpeg"}
    )
    assert lying.status_code == 413 and "8000x8000" in lying.json()["error"], lying.text
    big = client.post(
        "/v1/models/seg/predict", content=_jpeg(512, 384, gray=True), headers={"content-type": "image/jpeg"}
    )
    assert big.status_code == 200, big.text
    assert (big.json()["width"], big.json()["height"]) == (512, 384)  # answered in the upload's pixels


def test_empty_model_version_is_refused_and_the_oauth2_redirect_is_gone(client: Any) -> None:
    assert client.get("/v2/models/seg?model_version=").status_code == 400
    assert client.get("/v2/models/seg").status_code == 200
    assert client.get("/docs/oauth2-redirect").status_code == 404
    assert "oauth2RedirectUrl" not in client.get("/docs").text


def test_a_405_names_every_method_of_the_path_and_errors_are_documented(client: Any) -> None:
    trace = client.request("TRACE", "/v2/models/seg/infer")
    assert trace.status_code == 405 and trace.headers["allow"] == "POST", trace.headers
    assert client.request("DELETE", "/v1/models/seg").headers["allow"] == "GET"
    predict = client.get("/openapi.json").json()["paths"]["/v1/models/{name}/predict"]["post"]["responses"]
    assert {"400", "406", "413", "415", "503"} <= set(predict) and "image/png" in predict["200"]["content"]
    assert predict["413"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def _jpeg(width: int, height: int, gray: bool = False) -> bytes:
    from test_decode_limits import jpeg

    return jpeg(width, height, gray)


def _lying_jpeg(width: int, height: int) -> bytes:
    from test_decode_limits import lying_jpeg

    return lying_jpeg(width, height)
