"""The review page in headless Chromium: accept one image, fix one by dragging a box, reject one, see progress;
a second tab's stale save is refused with a message.

    .venv/bin/python -m pytest tests/data/test_review_page.py -q      # needs Debian's chromium: make browser-deps

The page is served by `python -m kiln data review DST`, the same code path as `kiln data review`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from data.loop import Box
from data.review.store import Prelabel, ReviewStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_folder(dst: Path) -> Path:
    for i in range(3):
        image = np.full((200, 300, 3), 90 + 40 * i, np.uint8)
        cv2.rectangle(image, (40, 40), (120, 140), (20, 20, 200), -1)
        (dst / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst / "images" / f"cam{i}.png"), image)
    (dst / "classes.txt").write_text("person\npackage\n")
    boxes = [Box(0, 30, 30, 110, 130, 0.31), Box(1, 200, 100, 260, 160, 0.45)]
    ReviewStore(dst).add_prelabels(
        [
            Prelabel("images/cam0.png", 300, 200, boxes[:1], 0.95, "door", "2"),  # reviewed first
            Prelabel("images/cam1.png", 300, 200, boxes, 0.8, "door", "2"),
            Prelabel("images/cam2.png", 300, 200, [], 0.1, "door", "2"),
        ]
    )
    return dst


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    dst = make_folder(tmp_path / "dst")
    port = free_port()
    cmd = [sys.executable, "-m", "kiln", "data", "review", str(dst), "--port", str(port)]
    log = (tmp_path / "review.log").open("wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "review.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kiln data review did not start"
            time.sleep(0.2)
        yield url, dst
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def box_center(page: object, index: int) -> tuple[float, float]:
    bbox = page.locator(f"#boxes g.box[data-index='{index}'] rect.frame").bounding_box()  # type: ignore[attr-defined]
    assert bbox is not None
    return bbox["x"] + bbox["width"] / 2, bbox["y"] + bbox["height"] / 2


@pytest.mark.slow
@pytest.mark.browser
def test_review_three_images_fixing_one_box_by_dragging(served: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, dst = served
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        outside: list[str] = []
        context.route("**/*", lambda route: _local_only(route, outside))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)

        # The highest-priority image opens first, with its pre-label and class name.
        expect(page.locator("#item-path")).to_have_text("images/cam0.png")
        expect(page.locator("#progress-label")).to_contain_text("0 / 3 reviewed")
        expect(page.locator("#boxes text")).to_have_text("person 0.31")
        expect(page.locator("#item-model")).to_contain_text("door/2")

        # Fix: drag the box 20 image pixels right and down onto the object, then accept (saved as a fix).
        scale = page.evaluate("() => document.getElementById('canvas').getScreenCTM().a")
        x, y = box_center(page, 0)
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 10 * scale, y + 10 * scale, steps=4)
        page.mouse.move(x + 10 * scale, y + 10 * scale + 1, steps=1)
        page.mouse.move(x + 10 * scale, y + 10 * scale, steps=1)
        page.mouse.up()
        expect(page.locator("#dirty-flag")).to_be_visible()
        page.keyboard.press("a")
        expect(page.locator("#item-path")).to_have_text("images/cam1.png")
        expect(page.locator("#progress-label")).to_contain_text("1 / 3 reviewed")
        expect(page.locator("#progress-label")).to_contain_text("fixed 1")

        # Accept the second as it is; reject the third.
        page.keyboard.press("a")
        expect(page.locator("#item-path")).to_have_text("images/cam2.png")
        page.keyboard.press("r")
        expect(page.locator("#progress-label")).to_contain_text("3 / 3 reviewed · accepted 1 · fixed 1 · rejected 1")

        # Back to the first: a new box drawn with class 2 (key "2"), then a stale save from a second tab.
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#item-path")).to_have_text("images/cam0.png")
        other = context.new_page()
        other.goto(url)
        other.locator("#queue li[data-path='images/cam0.png']").click()
        expect(other.locator("#item-path")).to_have_text("images/cam0.png")
        page.keyboard.press("2")
        page.keyboard.press("n")
        stage = page.locator("#canvas").bounding_box()
        assert stage is not None
        ox, oy = page.evaluate(
            "() => { const m = document.getElementById('canvas').getScreenCTM(); return [m.e, m.f]; }"
        )
        page.mouse.move(ox + 180 * scale, oy + 20 * scale)
        page.mouse.down()
        page.mouse.move(ox + 240 * scale, oy + 70 * scale, steps=5)
        page.mouse.up()
        expect(page.locator("#boxes g.box")).to_have_count(2)
        page.keyboard.press("f")
        expect(page.locator("#boxes g.box")).to_have_count(2)
        other.keyboard.press("Delete")  # nothing selected: no change
        other.keyboard.press("r")
        expect(other.locator("#message-text")).to_contain_text("was saved elsewhere")
        expect(other.locator("#reload-button")).to_be_visible()
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        browser.close()

    labels = (dst / "labels/cam0.txt").read_text().splitlines()
    assert len(labels) == 2
    cls, cx, cy, w, h = labels[0].split()
    assert cls == "0"
    # Dragged 10 px right/down: centre (70, 80) -> (80, 90) of 300x200, size unchanged (80x100).
    assert abs(float(cx) * 300 - 80) < 1.5 and abs(float(cy) * 200 - 90) < 1.5
    assert abs(float(w) * 300 - 80) < 0.5 and abs(float(h) * 200 - 100) < 0.5
    new = labels[1].split()
    assert new[0] == "1" and abs(float(new[1]) * 300 - 210) < 2 and abs(float(new[3]) * 300 - 60) < 2
    assert (dst / "labels/cam1.txt").read_text().count("\n") == 2
    assert not (dst / "labels/cam2.txt").exists()
    assert ReviewStore(dst).get("images/cam0.png")["status"] == "fixed"  # the stale reject did not land
    assert errors == []
    assert outside == []


def _local_only(route: object, outside: list[str]) -> None:
    """Every request the page makes must go to the review server: it works with no internet."""
    request_url = route.request.url  # type: ignore[attr-defined]
    if request_url.startswith("http://127.0.0.1:"):
        route.continue_()  # type: ignore[attr-defined]
    else:
        outside.append(request_url)
        route.abort()  # type: ignore[attr-defined]
