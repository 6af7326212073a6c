"""The app around the protocols: status, docs, JSON errors for every refusal, auth, body limit, access log,
metrics; and no 500 for any bad input thrown at any endpoint."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.edge.app import create_app


def test_v1_models_lists_what_is_served(client: Any) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"seg", "det", "reg", "tab", "plain"}
    tab = models["tab"]
    for key in ("version", "alias", "loaded_at", "last_swap_error", "ready", "swaps", "batching", "ort_threads"):
        assert key in tab
    assert (tab["version"], tab["alias"], tab["last_swap_error"]) == ("1", "production", None)
    assert tab["ort_threads"] == 1  # tabular runs single-threaded on purpose
    assert tab["warmup"].startswith("logged input example")
    # an 8-tree XGBoost runs in microseconds: batching would cost more than it saves (serving/deployment/batching.py)
    assert tab["batching"]["enabled"] is False and "not batched" in tab["warmup"]
    assert models["plain"]["task"] is None
    assert client.get("/v1/models/seg").json()["task"] == "segmentation"
    assert client.get("/v1/models/ghost").status_code == 404


def test_docs_and_openapi_describe_every_protocol(client: Any) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2/models/{name}/infer", "/invocations", "/ping", "/v1/models/{name}/predict", "/v1/models"):
        assert path in paths
    assert "multipart/form-data" in paths["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]


def test_unknown_routes_and_methods_are_json(client: Any) -> None:
    r = client.get("/v3/everything")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get("/invocations")
    assert r.status_code == 405 and "GET is not allowed" in r.json()["error"]


def test_metrics_count_requests_per_model_and_version(client: Any) -> None:
    client.post("/invocations?model=plain", json={"inputs": [[1, 2, 3]]})
    client.post("/invocations?model=plain", json={"inputs": [[1, 2]]})
    text = client.get("/metrics").text
    assert 'kiln_requests_total{endpoint="/invocations",model="plain",status="200",version="1"}' in text
    assert 'kiln_request_errors_total{code="400",model="plain",version="1"}' in text
    assert 'kiln_request_duration_seconds_bucket{endpoint="/invocations",le="0.5",model="plain",version="1"}' in text
    assert 'kiln_model_loaded_timestamp_seconds{alias="production",model="plain",version="1"}' in text
    assert "kiln_batch_rows_bucket" in text
    assert "process_cpu_seconds_total" in text


def test_one_structured_log_line_per_request(registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(registry.settings(("plain",), access_log=True))
    with TestClient(app) as c, caplog.at_level(logging.INFO, logger="kiln.serving.access"):
        c.post("/invocations", json={"inputs": [[1, 2, 3]]}, headers={"x-request-id": "abc"})
    lines = [r for r in caplog.records if r.name == "kiln.serving.access"]
    assert len(lines) == 1
    entry = lines[0].msg
    assert isinstance(entry, dict)
    assert entry["request_id"] == "abc" and entry["status"] == 200 and entry["model"] == "plain"
    assert entry["endpoint"] == "/invocations" and entry["ms"] > 0
    from serving.edge.middleware import JsonFormatter

    assert json.loads(JsonFormatter().format(lines[0]))["version"] == "1"


@pytest.fixture(scope="module")
def secured(registry: Any) -> Any:
    app = create_app(registry.settings(("plain",), api_token="s3cret", max_body_bytes=2048))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", ["/ping", "/health", "/v2/health/live", "/v2/health/ready", "/docs"])
def test_health_and_docs_stay_open(secured: Any, path: str) -> None:
    assert secured.get(path).status_code == 200
    assert secured.get("/v2/models/plain/ready").status_code == 200
    assert secured.get("/metrics").status_code == 401  # it names the served models: token (or KILN_METRICS_OPEN)


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing bearer token"), ({"Authorization": "Bearer nope"}, "invalid"), ({"Authorization": "s3cret"}, "")],
)
def test_token_is_required_elsewhere(secured: Any, headers: dict[str, str], message: str) -> None:
    for method, path in (("post", "/invocations"), ("get", "/v1/models"), ("get", "/v2/models/plain")):
        r = getattr(secured, method)(path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert message in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"


def test_right_token_passes(secured: Any) -> None:
    r = secured.post("/invocations", json={"inputs": [[1, 2, 3]]}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200


def test_oversized_bodies_are_413_declared_or_streamed(secured: Any) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    big = b"[" + b"1," * 2000 + b"1]"
    r = secured.post("/invocations", content=big, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413 and "limit is 2048" in r.json()["error"]

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 500

    r = secured.post("/invocations", content=chunks(), headers={**auth, "content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "limit is 2048" in r.json()["error"]


BAD_BODIES = [b"", b"null", b"[]", b"{}", b'{"inputs": null}', b'"str"', b"\xff\xfe\x00", b"[[[[[]]]]]", b"1e999"]


@pytest.mark.parametrize("body", BAD_BODIES)
@pytest.mark.parametrize(
    "path",
    [
        "/invocations?model=tab",
        "/invocations?model=seg",
        "/v2/models/tab/infer",
        "/v2/models/det/infer",
        "/v1/models/tab/predict",
        "/v1/models/seg/predict",
        "/v1/models/det/predict",
    ],
)
def test_no_bad_input_ever_gets_a_500(client: Any, path: str, body: bytes) -> None:
    for content_type in ("application/json", "image/png", "multipart/form-data; boundary=x"):
        r = client.post(path, content=body, headers={"content-type": content_type})
        assert 400 <= r.status_code < 500, (path, body, content_type, r.status_code, r.text)
        assert r.json()["error"]
