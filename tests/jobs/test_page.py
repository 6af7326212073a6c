"""The page in headless Chromium: fill the form, start a tiny job, watch it reach 100% with a chart, cancel another.

    .venv/bin/python -m pytest tests/jobs/test_page.py -q      # needs Debian's chromium: make browser-deps

The service runs as `python -m kiln jobs serve`, the same code path as `kiln jobs serve`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from jobs_helpers import alive, kill_leftover_jobs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Counts the drawn (non-transparent) pixels of every chart canvas: uPlot draws its series there.
DRAWN_PIXELS_JS = """() => [...document.querySelectorAll('#job-charts canvas')].map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def store_db(tmp_path: Path, make_store: Callable[[Path], Path]) -> Path:
    return make_store(tmp_path)


@pytest.fixture
def served(tmp_path: Path, tiny_project: Path, store_db: Path) -> Iterator[str]:
    db = store_db
    port = free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        "KILN_PROJECT_DIR": str(tiny_project),
        "KILN_JOBS_DB": str(tmp_path / "jobs.db"),
        "KILN_JOBS_POLL_SECONDS": "0.2",
    }
    cmd = [sys.executable, "-m", "kiln", "jobs", "serve", "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, tmp_path / "serve.log")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        kill_leftover_jobs(tmp_path / "jobs.db")


def wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"kiln jobs serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"kiln jobs serve did not answer within {timeout}s:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.browser
def test_start_watch_and_cancel_from_the_page(served: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served)

        page.select_option("#entry-point", "tiny")
        # Before Start: the time estimate (tiny names no image size, so it says why there is none) and the quick
        # preset, which puts its 3 epochs into the form.
        expect(page.locator("#estimate")).to_contain_text("no estimate")
        page.fill("input[name=param-epochs]", "40")
        page.click("#quick-preset")
        expect(page.locator("input[name=param-epochs]")).to_have_value("3")
        page.fill("input[name=param-sleep]", "0.3")
        page.fill("input[name=param-note]", "from the browser")
        page.click("#start-button")
        expect(page.locator("#job-status")).to_have_text("completed", timeout=120_000)
        expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")
        expect(page.locator("#progress-label")).to_contain_text("Epoch 3 / 3")
        expect(page.locator("#job-log")).to_contain_text("note='from the browser'")
        expect(page.locator("#job-charts .chart canvas")).to_have_count(2)  # loss, val_acc
        page.wait_for_function(f"({DRAWN_PIXELS_JS})().every(n => n > 500)", timeout=10_000)
        page.screenshot(path=str(tmp_path / "completed.png"), full_page=True)

        page.fill("input[name=param-epochs]", "500")
        page.click("#start-button")
        expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)
        expect(page.locator("#job-log")).to_contain_text("Epoch 1/500", timeout=120_000)
        job_id = page.locator("#job-title").inner_text()
        page.click("#cancel-button")
        expect(page.locator("#job-status")).to_have_text("cancelled", timeout=60_000)
        expect(page.locator(f".job-row[data-job='{job_id}'] .badge")).to_have_text("cancelled", timeout=10_000)
        browser.close()
    job = httpx.get(f"{served}/api/training/{job_id}").json()
    assert job["status"] == "cancelled" and not alive(job["pid"])
    assert errors == []


@pytest.mark.slow
@pytest.mark.browser
def test_models_tab_promotes_and_offers_its_own_force(store_db: Path, served: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    mlflow = MlflowClient(f"sqlite:///{store_db}")
    mlflow.create_registered_model("seg", tags={"kiln.metric": "val_iou"})
    (tmp_path / "model").mkdir()
    for iou, params, p50 in ((0.8, 1000, 1.0), (0.6, 2000, 2.0)):  # v2 is dominated: worse, bigger, slower
        run_id = mlflow.create_run("0").info.run_id
        mlflow.log_metric(run_id, "val_iou", iou, step=1)
        mlflow.log_metric(run_id, "num_parameters", params)
        mlflow.log_metric(run_id, "latency_p50_ms", p50)
        mlflow.create_model_version("seg", source=str(tmp_path / "model"), run_id=run_id)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{served}/#models")
        expect(page.locator("[data-production='seg']")).to_contain_text("Latest v2: val_iou 0.6")
        page.click("[data-promote='seg:1']")
        page.click(".promote-form button[type=submit]")
        expect(page.locator("[data-production='seg']")).to_have_text("v1", timeout=10_000)
        expect(page.locator("[data-promote='seg:1']")).to_have_count(0)  # v1 holds production: nothing to offer
        page.click("[data-promote='seg:2']")
        page.click(".promote-form button[type=submit]")
        result = page.locator(".model-card[data-model='seg'] .result")
        expect(result).to_contain_text("val_iou 0.6 is worse than production v1's 0.8")
        expect(result).not_to_contain_text("--force")
        page.click("[data-force='seg:2']")
        expect(result).to_contain_text("v2 is now production (was v1), forced.")

        page.click(".tab[data-tab='compare']")  # the efficiency frontier of the same two versions
        page.fill("#frontier-metric", "val_iou")
        page.click("#frontier-form button[type=submit]")
        expect(page.locator("#frontier-table tr.on-frontier")).to_have_count(1)
        expect(page.locator("#frontier-table tr.on-frontier")).to_contain_text("seg v1")
        expect(page.locator("#frontier-budgets [data-best='seg v1']")).to_have_count(5)  # 10k ... 10M, no budget
        expect(page.locator("#frontier-charts canvas")).to_have_count(2)  # vs parameters, vs latency
        page.wait_for_function(f"({DRAWN_PIXELS_JS.replace('#job-charts', '#frontier-charts')})().every(n => n > 100)")
        page.fill("#frontier-max-params", "0")
        page.click("#frontier-form button[type=submit]")
        expect(page.locator("#frontier-error")).to_contain_text("max_params must be a finite number > 0")
        browser.close()
    assert int(mlflow.get_model_version_by_alias("seg", "production").version) == 2
    assert errors == []
