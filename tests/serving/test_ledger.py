"""Workers agree (serving/rollout/ledger.py): each worker of `kiln serve --workers N` applies the others' canary
answers, shadow comparisons and drift observations, so /canary, /shadow and /drift report the whole server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving_helpers import FEATURES, Registry, tabular_model

from registry.canary import GuardRails, start_canary
from serving.rollout.ledger import Event, Ledger
from serving.runtime.profiling import with_reference_profile


def test_each_worker_applies_the_others_events_once_and_not_its_own(tmp_path: Path) -> None:
    a, b = Ledger(tmp_path, "a"), Ledger(tmp_path, "b")
    seen: dict[str, list[Event]] = {"a": [], "b": []}
    a.publish(Event("answer", "m", "2@t", {"status": 200}))
    a.publish(Event("observation", "m", "1", {"inputs": {"f0": [0.5]}, "outputs": {}}))
    assert a.sync(seen["a"].extend) == 0  # its own events are not applied back
    assert b.sync(seen["b"].extend) == 2 and b.sync(seen["b"].extend) == 0  # once each, in order
    assert [e.kind for e in seen["b"]] == ["answer", "observation"] and seen["b"][1].body["inputs"] == {"f0": [0.5]}
    b.publish(Event("comparison", "m", "1:2", {"numbers": {"label_agreement": 1.0}}))
    b.close()
    assert a.sync(seen["a"].extend) == 1 and seen["a"][0].key == "1:2"
    late = Ledger(tmp_path, "c")  # a worker that starts later does not replay what came before it
    assert late.sync(seen["a"].extend) == 0
    a.close(), late.close()


def _serve(registry: Registry, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri, "KILN_POLL_SECONDS": "0.5",
           "KILN_SHADOW_BUDGET": "1", "KILN_DRIFT_BUDGET": "1", "KILN_DRIFT_MIN_SAMPLES": "5"}  # fmt: skip
    cmd = [sys.executable, "-m", "kiln", "serve", "--models", "tab", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen([*cmd, "--shadow", "challenger"], env=env, stderr=log.open("wb"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def _every_worker(url: str, path: str, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """The status route from both workers (a new connection per request), once each says `done`."""
    deadline = time.monotonic() + timeout
    while True:
        bodies: dict[str, dict[str, Any]] = {}
        for _ in range(20):
            r = httpx.get(url + path, headers={"Connection": "close"}, timeout=10)
            bodies[r.headers["x-request-id"][:8]] = r.json()  # the id's prefix names the worker process
        if len(bodies) == 2 and all(done(b) for b in bodies.values()):
            return list(bodies.values())
        assert time.monotonic() < deadline, bodies
        time.sleep(0.3)


@pytest.mark.slow
def test_two_workers_report_the_whole_server(fresh_registry: Registry, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    tab, rows = tabular_model(0)
    fresh_registry.register("tab", with_reference_profile(tab, rng.normal(size=(200, 4)), "rows"), rows)
    fresh_registry.register("tab", tabular_model(7)[0], rows, alias="challenger")
    fresh_registry.register("tab", tab, rows, alias=None)  # v3: the canary's candidate
    start_canary("tab", version=3, percent=50, guards=GuardRails(min_requests=1000), client=fresh_registry.client)
    proc, url, log = _serve(fresh_registry, tmp_path)
    n = 24
    try:
        workers = set()
        for _ in range(n):  # a new connection each: the kernel spreads them over both workers
            record = [dict(zip(FEATURES, map(float, rng.normal(size=4)), strict=True))]
            r = httpx.post(f"{url}/v1/models/tab/predict", json=record, headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200, r.text
            workers.add(r.headers["x-request-id"][:8])
        assert len(workers) == 2, "one worker took every request; the test proves nothing"
        for canary in _every_worker(url, "/v1/models/tab/canary", lambda b: b.get("state") == "running"
                                    and sum(s["requests"] for s in b["window"].values()) == n):  # fmt: skip
            assert canary["candidate_version"] == "3"
        production_answers = n - canary["window"]["candidate"]["requests"]
        shadows = _every_worker(url, "/v1/models/tab/shadow", lambda b: b["requests_compared"] == production_answers)
        assert all(s["challenger_version"] == "2" for s in shadows)
        drifts = _every_worker(url, "/v1/models/tab/drift", lambda b: b["observed_requests"] == production_answers)
        assert all("input.f0" in d["features"] for d in drifts), drifts
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
