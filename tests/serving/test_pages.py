"""The browser side of `kiln serve`: the try-it page at /, Swagger UI from the package at /docs, pictures from the
task endpoints, models promoted after start-up, and (slow, browser) an upload drawn in headless Chromium.

.venv/bin/python -m pytest tests/serving/test_pages.py -q
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import LiveServer, Registry, det_model, image_example, png_bytes, seg_model

from serving.edge.app import create_app
from serving.runtime.pictures import wanted_format

CHROMIUM = "/usr/bin/chromium"


def _upload(size: int = 32, channels: int = 1) -> bytes:
    rng = np.random.default_rng(0)
    shape = (size, size) if channels == 1 else (size, size, channels)
    return png_bytes(rng.integers(0, 255, shape, dtype=np.uint8))


def test_docs_use_the_vendored_swagger_ui_and_need_no_token(registry: Registry) -> None:
    app = create_app(registry.settings(("seg",), api_token="s3cret"))
    with TestClient(app) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
        bundle = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 500_000
        assert client.get("/static/vendor/swagger-ui/LICENSE").status_code == 200
        page = client.get("/")
        assert page.status_code == 200 and 'src="/static/try.js"' in page.text
        assert client.get("/v1/models").status_code == 401  # the data still needs the token
        spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/models/{name}/predict"]["post"]
    names = {p["name"] for p in predict["parameters"]}
    assert {"threshold", "conf", "iou", "max_det", "format"} <= names
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert "tabular records" in examples and "image/png" in predict["responses"]["200"]["content"]


def test_segmentation_answers_a_mask_or_an_overlay_picture(client: Any) -> None:
    image = _upload()
    mask = client.post("/v1/models/seg/predict?format=png", files={"image": image})
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    decoded = cv2.imdecode(np.frombuffer(mask.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (32, 32) and set(np.unique(decoded)) <= {0, 255}
    accepted = client.post("/v1/models/seg/predict", files={"image": image}, headers={"Accept": "image/png"})
    assert accepted.content == mask.content
    over = client.post("/v1/models/seg/predict?format=overlay", files={"image": image})
    picture = cv2.imdecode(np.frombuffer(over.content, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (32, 32, 3) and over.headers["x-kiln-model"] == "seg"
    assert (
        client.post("/v1/models/seg/predict", files={"image": image})
        .headers["content-type"]
        .startswith("application/json")
    )


def test_detection_draws_its_boxes_and_other_tasks_say_why_not(client: Any) -> None:
    image = _upload(64, 3)
    drawn = client.post("/v1/models/det/predict?format=png", files={"image": image})
    assert drawn.status_code == 200
    picture = cv2.imdecode(np.frombuffer(drawn.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == original.shape and np.abs(picture.astype(int) - original).sum() > 0  # boxes drawn
    refused = client.post("/v1/models/reg/predict?format=png", files={"image": _upload(16)})
    assert refused.status_code == 406 and "answers numbers, not a picture" in refused.json()["error"]
    bad = client.post("/v1/models/seg/predict?format=jpeg", files={"image": _upload()})
    assert bad.status_code == 400 and "format='jpeg'" in bad.json()["error"]


def test_accept_header_preference() -> None:
    assert wanted_format(None, "image/png") == "png"
    assert wanted_format(None, "application/json, image/png;q=0.5") == "json"
    assert wanted_format(None, "*/*") == "json" and wanted_format(None, "") == "json"
    assert wanted_format("overlay", "application/json") == "overlay"


def test_a_model_promoted_after_start_up_is_served_without_restart(fresh_registry: Registry) -> None:
    fresh_registry.register("seg", seg_model(), image_example(32))
    fresh_registry.register("det", det_model(), image_example(64, 3), alias=None)
    app = create_app(fresh_registry.settings((), poll_seconds=0.2))  # no --models: every model with the alias
    with TestClient(app) as client:
        assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["seg"]
        fresh_registry.set_alias("det", "1")
        deadline = time.monotonic() + 30
        while "det" not in app.state.store.slots:
            assert time.monotonic() < deadline, "det was not picked up"
            time.sleep(0.1)
        answer = client.post("/v1/models/det/predict", files={"image": _upload(64, 3)})
        assert answer.status_code == 200 and answer.json()["model"] == "det"
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_uploads_an_image_and_draws_the_answer(registry: Registry, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)"
    upload = tmp_path / "part.png"
    upload.write_bytes(_upload(64, 3))
    app = create_app(registry.settings(("seg", "det", "reg", "tab")))
    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
        page.goto(server.url)
        expect(page.locator("#model-rows tr")).to_have_count(4)
        expect(page.locator("tr[data-model='det']")).to_contain_text("detection")

        page.click("tr[data-model='det']")
        page.set_input_files("#image-input", str(upload))
        page.click("#run-button")
        expect(page.locator("#summary")).to_contain_text("detection(s) on 64×64 px")
        expect(page.locator("#detail tr").nth(1)).to_contain_text("smoke")  # class names from the contract
        expect(page.locator("#detail tr").nth(1)).to_contain_text("0.900")
        drawn = page.evaluate("() => { const c = document.querySelector('#canvas'); return [c.width, c.height]; }")
        assert drawn == [64, 64]

        page.click("tr[data-model='seg']")
        page.set_input_files("#image-input", str(upload))
        page.click("#run-button")
        expect(page.locator("#summary")).to_contain_text("Foreground")

        page.click("tr[data-model='reg']")
        page.set_input_files("#image-input", str(upload))
        page.click("#run-button")
        expect(page.locator("#summary")).to_contain_text("Output 2×2×30")

        page.click("tr[data-model='tab']")
        expect(page.locator("#feature-fields input")).to_have_count(4)
        for i, field in enumerate(page.locator("#feature-fields input").all()):
            field.fill(str(0.5 + i))
        page.click("#record-form button")
        expect(page.locator("#summary")).to_contain_text("Prediction:")
        page.screenshot(path=str(tmp_path / "try.png"), full_page=True)
        browser.close()
    assert errors == []
