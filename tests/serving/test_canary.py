"""Canary on the server: the registry's split is applied (sticky per routing key), and a candidate that starts
failing under concurrent load is rolled back by its guard rail while no request on production's share fails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
from serving_helpers import LiveServer, Registry, tabular_model

from registry.canary import GuardRails, read_canary, start_canary
from registry.promotion import history
from serving.edge.app import create_app
from serving.rollout.canary import bucket, judge, monitor_for

ROWS = [{"f0": 0.5, "f1": -0.2, "f2": 0.1, "f3": 1.0}]


def test_bucket_is_stable_and_spread() -> None:
    assert bucket("m", "client-1") == bucket("m", "client-1")
    shares = [bucket("m", f"client-{i}") for i in range(2000)]
    assert min(shares) >= 0 and max(shares) < 100
    assert 8 < sum(s < 10 for s in shares) / 20 < 12  # about 10% of keys fall under 10


def test_judge_waits_for_enough_requests_then_names_the_rail() -> None:
    guards = GuardRails(min_requests=10, max_error_rate=0.1)
    broken = monitor_for(guards)
    for _ in range(5):
        broken.record(False, False, 0.01)
        broken.record(True, True, 0.01)
    assert judge(broken, None, guards.min_agreement) is None  # 5 candidate answers: too few to judge yet
    for _ in range(5):
        broken.record(False, False, 0.01)
        broken.record(True, True, 0.01)
    failing = judge(broken, None, guards.min_agreement)
    # the first 5xx came before the candidate had answered anything: no share yet, so it is not counted
    assert failing is not None and failing.failed == "error_rate" and failing.numbers["candidate_errors"] == 9

    slow, same = monitor_for(guards), monitor_for(guards)
    rng = np.random.default_rng(0)
    for i in range(3000):  # production 10 ms +-30%; the slow candidate (one answer in four) takes twice as long
        latency = float(rng.lognormal(np.log(0.01), 0.3))
        slow.record(i % 4 == 0, False, latency * (2 if i % 4 == 0 else 1))
        same.record(i % 4 == 0, False, latency)
    verdict = judge(slow, None, guards.min_agreement)
    assert verdict is not None and verdict.failed == "p99" and verdict.numbers["slow_candidate"] > 0
    assert judge(same, None, guards.min_agreement) is None

    for values, fails in (([0.5] * 60, True), ([0.95] * 60, False)):
        monitor = monitor_for(guards)
        for _ in range(20):
            monitor.record(True, False, 0.01)
        for value in values:
            monitor.compared(value)
        verdict = judge(monitor, None, guards.min_agreement)
        assert (verdict is not None and verdict.failed == "agreement") == fails
    pooled = judge(monitor_for(guards), ("pearson", 0.3, 30, []), guards.min_agreement)
    assert pooled is not None and pooled.failed == "agreement"


@pytest.fixture
def canary_server(fresh_registry: Registry) -> Any:
    tab, rows = tabular_model(0)
    fresh_registry.register("tab", tab, rows)
    fresh_registry.register("tab", tab, rows, alias=None)
    # latency is not what this test is about: on a loaded 2-core machine two copies of one model differ in p99
    guards = GuardRails(min_requests=10, max_error_rate=0.1, max_p99_ratio=50, window_seconds=60)
    start_canary("tab", version=2, percent=30, guards=guards, client=fresh_registry.client)
    app = create_app(fresh_registry.settings(("tab",), poll_seconds=0.5))
    with LiveServer(app) as server:
        yield server, fresh_registry


def _load(url: str, stop: threading.Event, answers: list[tuple[str, int, str]], worker: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        i = 0
        while not stop.is_set():
            key = f"client-{worker}-{i % 25}"
            r = http.post("/v1/models/tab/predict", json=ROWS, headers={"X-Kiln-Routing-Key": key})
            answers.append((r.headers.get("X-Kiln-Model-Version", "?"), r.status_code, key))
            i += 1


def test_failing_candidate_is_rolled_back_under_load(canary_server: Any) -> None:
    server, reg = canary_server
    app = server.app
    with httpx.Client(base_url=server.url) as http:
        sides = {http.post("/v1/models/tab/predict", json=ROWS, headers={"X-Kiln-Routing-Key": f"k{i}"})
                 .headers["X-Kiln-Model-Version"] for i in range(40)}  # fmt: skip
        assert sides == {"1", "2"}
        sticky = {http.post("/v1/models/tab/predict", json=ROWS, headers={"X-Kiln-Routing-Key": "same"})
                  .headers["X-Kiln-Model-Version"] for _ in range(10)}  # fmt: skip
        assert len(sticky) == 1
        assert http.get("/v1/models/tab/canary").json()["state"] == "running"

    answers: list[tuple[str, int, str]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(server.url, stop, answers, w)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    candidate = app.state.store.slots["tab"].canary.deployed.model.predictor

    def broken(feeds: Any) -> Any:
        raise RuntimeError("candidate session broke")

    candidate.run = broken  # the candidate starts failing under load
    deadline = time.monotonic() + 20
    while app.state.store.slots["tab"].canary is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # production keeps answering after the rollback
    stop.set()
    for t in threads:
        t.join()

    counts = Counter((version, status) for version, status, _ in answers)
    failed_keys = {key for _, status, key in answers if status != 200}
    # the candidate did fail; every failure was on a key routed to it (errors carry no version header), and every
    # answer production gave, before and after the rollback, was a success
    assert failed_keys and all(bucket("tab", key) < 30 for key in failed_keys), counts
    assert counts[("1", 200)] > 50 and all(status == 200 for version, status, _ in answers if version == "1"), counts
    with httpx.Client(base_url=server.url) as http:
        status = http.get("/v1/models/tab/canary").json()
    assert status["state"] == "none"
    last = status["last"]
    assert last["verdict"]["failed"] == "error_rate" and last["first_error_to_rollback_s"] < 5
    print(f"first candidate error -> rollback: {last['first_error_to_rollback_s'] * 1000:.1f} ms; {last['verdict']}")
    for _ in range(100):  # the registry write happens right after, off the event loop
        if read_canary(reg.client, "tab") is None:
            break
        time.sleep(0.05)
    assert read_canary(reg.client, "tab") is None
    event = history("tab", client=reg.client)[-1]
    assert event.action == "canary-rollback" and event.canary is not None
    assert event.canary["failed"] == "error_rate" and event.canary["numbers"]["candidate_errors"] >= 1
    assert "first_error_to_rollback_s" in event.canary
    assert np.isfinite(event.canary["first_error_to_rollback_s"])
