"""Loading and live swapping: a moved alias swaps only after every check passes; corrupt, incompatible or
broken versions are refused while the old one keeps serving; in-flight requests finish on the old session;
and no request fails while the alias moves under concurrent load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import LiveServer, Registry, image_example, nan_model, png_bytes, seg_model

from serving.deployment.loading import batch_config, compare_signatures
from serving.deployment.store import infer
from serving.edge.app import create_app
from serving.settings import ServeSettings

GRAY_100 = png_bytes(np.full((32, 32), 100, np.uint8))  # 100/255 = 0.39: background at bias 0.5, foreground at 0.25
PNG = {"content-type": "image/png"}


def _fraction(c: TestClient) -> float:
    r = c.post("/v1/models/seg/predict", content=GRAY_100, headers=PNG)
    assert r.status_code == 200, r.text
    return float(r.json()["foreground_fraction"])


@pytest.fixture
def served(fresh_registry: Registry) -> Any:
    fresh_registry.register("seg", seg_model(0.5), image_example(32))
    app = create_app(fresh_registry.settings(("seg",), swap_retry_seconds=3600))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, fresh_registry


def _refresh(c: TestClient) -> bool:
    return bool(c.portal.call(c.app.state.store.refresh, "seg"))


def _status(c: TestClient) -> dict[str, Any]:
    return dict(c.get("/v1/models/seg").json())


def test_moved_alias_swaps_to_the_new_version(served: Any) -> None:
    c, reg = served
    assert _fraction(c) == 0.0
    assert not _refresh(c)  # alias unchanged: nothing to do
    reg.register("seg", seg_model(0.25), image_example(32))
    assert _refresh(c)
    status = _status(c)
    assert (status["version"], status["swaps"], status["last_swap_error"]) == ("2", 1, None)
    assert _fraction(c) == 1.0  # the new session answers
    assert 'kiln_model_swaps_total{model="seg"} 1.0' in c.get("/metrics").text


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(served: Any) -> None:
    c, reg = served
    bad = reg.register("seg", seg_model(0.25), image_example(32), alias=None)
    reg.corrupt("seg", bad)
    reg.set_alias("seg", bad)
    assert not _refresh(c)
    status = _status(c)
    assert status["version"] == "1"
    error = status["last_swap_error"]
    assert error["version"] == bad and error["step"] == "contract" and error["error"]
    assert _fraction(c) == 0.0
    metrics = c.get("/metrics").text
    assert 'kiln_model_swap_failures_total{model="seg",step="contract"} 1.0' in metrics
    assert 'kiln_model_swap_failing{model="seg"} 1.0' in metrics
    good = reg.register("seg", seg_model(0.25), image_example(32))
    assert _refresh(c)
    assert _status(c)["version"] == good and _status(c)["last_swap_error"] is None
    assert 'kiln_model_swap_failing{model="seg"} 0.0' in c.get("/metrics").text


@pytest.mark.parametrize(
    ("model", "step", "reason"),
    [
        (seg_model(0.5, size=48), "signature", "input 'input' shape [-1, 1, 32, 32] -> [-1, 1, 48, 48]"),
        (nan_model(), "warmup", "warm-up output 'output' contains NaN"),
    ],
)
def test_incompatible_or_broken_versions_are_refused(served: Any, model: Any, step: str, reason: str) -> None:
    c, reg = served
    size = 48 if "48" in reason else 32
    reg.register("seg", model, image_example(size))
    assert not _refresh(c)
    error = _status(c)["last_swap_error"]
    assert (error["step"], _status(c)["version"]) == (step, "1")
    assert reason in error["error"]


def test_a_refused_version_is_not_retried_until_reload(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c, reg = served
    reg.register("seg", nan_model(), image_example(32))
    store = c.app.state.store
    loads: list[str] = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda *a: loads.append(a[1]) or real_load(*a))
    assert not _refresh(c) and not _refresh(c)
    assert loads == ["2"]
    r = c.post("/v1/models/seg/reload")
    assert r.status_code == 200 and r.json()["swapped"] is False
    assert loads == ["2", "2"]


def test_deleted_alias_keeps_serving_and_says_why(served: Any) -> None:
    c, reg = served
    reg.client.delete_registered_model_alias("seg", "production")
    assert not _refresh(c)
    status = _status(c)
    assert status["version"] == "1" and status["last_swap_error"]["step"] == "resolve"
    assert _fraction(c) == 0.0
    reg.set_alias("seg", "1")
    _refresh(c)
    assert _status(c)["last_swap_error"] is None


def test_in_flight_requests_finish_on_the_old_session(served: Any) -> None:
    c, reg = served
    store = c.app.state.store
    before = store.get("seg")  # what a request picked up just before the swap
    reg.register("seg", seg_model(0.25), image_example(32))
    assert _refresh(c)
    feeds = {"input": np.zeros((1, 1, 32, 32), np.float32)}
    old = c.portal.call(infer, before, feeds)
    new = c.portal.call(infer, store.get("seg"), feeds)
    assert float(old["output"].max()) == -0.5 and float(new["output"].max()) == -0.25


def test_compare_signatures_lists_every_difference(served: Any) -> None:
    c, _ = served
    model = c.app.state.store.get("seg").model
    from types import SimpleNamespace

    from serving.runtime.tensors import TensorSpec

    other = SimpleNamespace(
        contract=model.contract,
        inputs=(TensorSpec("image", "FP32", (None, 1, 32, 32)),),
        outputs=(TensorSpec("output", "FP16", (None, 1, 32, 32)),),
    )
    problems = compare_signatures(model, other)
    assert "input names ['input'] -> ['image']" in problems
    assert "output 'output' datatype FP32 -> FP16" in problems
    assert compare_signatures(model, model) == []


def test_no_request_fails_while_the_alias_moves_under_load(fresh_registry: Registry) -> None:
    reg = fresh_registry
    reg.register("seg", seg_model(0.5), image_example(32))
    v2 = reg.register("seg", seg_model(0.25), image_example(32), alias=None)
    app = create_app(reg.settings(("seg",), poll_seconds=0.1))
    v2_body = {"inputs": [{"name": "input", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1024}]}
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def hammer(url: str, kind: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                try:
                    if kind:
                        r = http.post("/v2/models/seg/infer", json=v2_body)
                        version = r.json().get("model_version") if r.status_code == 200 else None
                    else:
                        r = http.post("/v1/models/seg/predict", content=GRAY_100, headers=PNG)
                        version = r.json().get("version") if r.status_code == 200 else None
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    seen[str(version)] += 1
                except Exception as err:  # a dropped connection is a failure too
                    failures.append(repr(err))

    with LiveServer(app) as server:
        threads = [threading.Thread(target=hammer, args=(server.url, i % 2)) for i in range(6)]
        for t in threads:
            t.start()
        latencies = []
        for target in (v2, "1", v2, "1", v2):
            moved_at = reg.set_alias("seg", target)
            while app.state.store.get("seg").model.version != target:
                assert time.monotonic() - moved_at < 20, f"no swap to v{target}"
                time.sleep(0.02)
            latencies.append(time.monotonic() - moved_at)
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen["1"] > 0 and seen[v2] > 0 and set(seen) == {"1", v2}
    assert app.state.store.slots["seg"].swaps == 5
    assert max(latencies) < 20


@pytest.mark.parametrize(
    ("ms_per_row", "rows", "inline_rows"),
    [
        (0.005, 16, 16),  # tabular: full batches, run on the event loop
        (0.2, 16, 5),  # a few milliseconds a batch: batched, big batches go to the thread pool
        (12.0, 4, 0),  # a small CNN on CPU: 4 rows fit in 50 ms
        (100.0, 1, 0),  # a 7.8M UNet on CPU: not batched at all
    ],
)
def test_batches_are_sized_by_the_warm_up_timing(served: Any, ms_per_row: float, rows: int, inline_rows: int) -> None:
    c, _ = served
    from dataclasses import replace

    model = replace(c.app.state.store.get("seg").model, ms_per_row=ms_per_row)
    config = batch_config(model, ServeSettings(max_batch_size=16, max_batch_ms=50, inline_run_ms=1))
    assert (config.max_batch_size, config.inline_max_rows) == (rows, inline_rows)


def test_no_batching_test_run_when_batches_could_not_form(fresh_registry: Registry) -> None:
    fresh_registry.register("seg", seg_model(0.5), image_example(32))
    app = create_app(fresh_registry.settings(("seg",), max_batch_size=1))
    with TestClient(app) as c:
        status = c.get("/v1/models/seg").json()
        assert status["batching"]["enabled"] is False and status["batching"]["max_batch_size"] == 1
        assert c.post("/v1/models/seg/predict", content=GRAY_100, headers=PNG).status_code == 200
