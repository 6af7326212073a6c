"""The review store and API: queue order, verdicts, label files, stale saves refused, bad boxes named.

.venv/bin/python -m pytest tests/data/test_review.py -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from data.loop import Box
from data.review.app import create_app
from data.review.store import Prelabel, ReviewStore


def review_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        image = np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)
        path = root / "images" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
    (root / "classes.txt").write_text("smoke\nfire\n")
    store = ReviewStore(root)
    store.add_prelabels(
        [
            Prelabel("images/img0.png", 80, 60, [Box(0, 10, 10, 30, 40, 0.9)], 0.2, "det", "3"),
            Prelabel("images/img1.png", 80, 60, [Box(1, 5, 5, 20, 20, 0.3), Box(0, 40, 10, 70, 50, 0.8)], 0.9,
                     "det", "3"),
            Prelabel("images/img2.png", 80, 60, [], 0.0, "det", "3"),
        ]
    )  # fmt: skip
    return root


@pytest.fixture
def client(tmp_path: Path) -> Any:
    app = create_app(review_folder(tmp_path / "dst"))
    with TestClient(app) as test_client:
        yield test_client


def test_queue_is_ordered_by_priority_and_the_page_is_served(client: TestClient) -> None:
    queue = client.get("/api/queue").json()
    assert [i["path"] for i in queue["items"]] == ["images/img1.png", "images/img0.png", "images/img2.png"]
    assert queue["progress"] == {"total": 3, "reviewed": 0, "queued": 3, "accepted": 0, "fixed": 0, "rejected": 0}
    page = client.get("/")
    assert page.status_code == 200 and "/static/review.js" in page.text
    assert "http" not in page.text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    assert client.get("/static/review.js").status_code == 200
    assert client.get("/api/images/images/img0.png").content[:4] == b"\x89PNG"
    assert client.get("/api/summary").json()["names"] == ["smoke", "fire"]


def test_accept_fix_reject_write_labels_and_count(client: TestClient, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    item = client.get("/api/items/images/img0.png").json()
    assert item["model"] == "det/3" and item["width"] == 80 and item["boxes"][0]["confidence"] == 0.9
    saved = client.put(
        "/api/items/images/img0.png", json={"revision": item["revision"], "verdict": "accepted", "boxes": item["boxes"]}
    ).json()
    assert saved["status"] == "accepted" and saved["revision"] == item["revision"] + 1
    assert (dst / "labels/img0.txt").read_text() == "0 0.250000 0.416667 0.250000 0.500000\n"

    item = client.get("/api/items/images/img1.png").json()
    moved = [{**item["boxes"][0], "x1": 0, "x2": 15}, {"class_id": 1, "x1": 50, "y1": 40, "x2": 90, "y2": 70}]
    saved = client.put(
        "/api/items/images/img1.png", json={"revision": item["revision"], "verdict": "accepted", "boxes": moved}
    ).json()
    assert saved["status"] == "fixed"  # accepting edited boxes counts as a fix
    assert saved["boxes"][1] == {"class_id": 1, "x1": 50.0, "y1": 40.0, "x2": 80.0, "y2": 60.0}  # clipped
    assert len((dst / "labels/img1.txt").read_text().splitlines()) == 2

    item = client.get("/api/items/images/img2.png").json()
    saved = client.put("/api/items/images/img2.png", json={"revision": item["revision"], "verdict": "rejected"}).json()
    assert saved["progress"] == {"total": 3, "reviewed": 3, "queued": 0, "accepted": 1, "fixed": 1, "rejected": 1}
    assert not (dst / "labels/img2.txt").exists()


def test_a_stale_save_is_refused_and_nothing_is_lost(client: TestClient, tmp_path: Path) -> None:
    """Two tabs open revision r; the first save wins, the second gets 409 naming both revisions."""
    item = client.get("/api/items/images/img0.png").json()
    first = {
        "revision": item["revision"],
        "verdict": "fixed",
        "boxes": [{"class_id": 1, "x1": 1, "y1": 1, "x2": 9, "y2": 9}],
    }
    assert client.put("/api/items/images/img0.png", json=first).status_code == 200
    second = {"revision": item["revision"], "verdict": "rejected", "boxes": []}
    stale = client.put("/api/items/images/img0.png", json=second)
    assert stale.status_code == 409
    assert f"now revision {item['revision'] + 1}" in stale.json()["detail"]
    assert (tmp_path / "dst/labels/img0.txt").read_text().startswith("1 ")  # the first save stands
    history = client.get("/api/items/images/img0.png/history").json()["history"]
    assert [h["status"] for h in history] == ["fixed"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"revision": 1, "verdict": "fixed", "boxes": [{"class_id": 5, "x1": 1, "y1": 1, "x2": 9, "y2": 9}]},
         422, "boxes[0].class_id 5 is not a class id 0..1"),
        ({"revision": 1, "verdict": "fixed", "boxes": [{"class_id": 0, "x1": 5, "y1": 5, "x2": 5.2, "y2": 9}]},
         422, "boxes[0] (5,5)-(5,9) is under one pixel wide"),
        ({"revision": 1, "verdict": "fixed", "boxes": [{"class_id": 0, "x1": "a", "y1": 5, "x2": 5, "y2": 9}]},
         422, "boxes[0].x1 'a' is not a number"),
        ({"revision": 1, "verdict": "maybe", "boxes": []}, 422, "verdict 'maybe' is not one of accepted, fixed"),
        ({"revision": "x", "verdict": "fixed"}, 422, "revision 'x' must be an integer"),
    ],
)  # fmt: skip
def test_invalid_saves_are_named_and_change_nothing(
    client: TestClient, tmp_path: Path, body: dict[str, Any], status: int, message: str
) -> None:
    response = client.put("/api/items/images/img0.png", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert client.get("/api/items/images/img0.png").json()["status"] == "queued"
    assert not (tmp_path / "dst/labels/img0.txt").exists()


def test_unknown_images_are_404_and_new_images_join_the_queue(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/api/items/images/nope.png").status_code == 404
    (tmp_path / "dst/images/img2.png").unlink()  # gone from disk while queued: 404 naming it, never a 500
    gone = client.get("/api/images/images/img2.png")
    assert gone.status_code == 404 and "images/img2.png is no longer in" in gone.json()["detail"]
    assert client.get("/api/images/../../etc/passwd").status_code == 404
    cv2.imwrite(str(tmp_path / "dst/images/late.png"), np.zeros((8, 8, 3), np.uint8))
    assert client.post("/api/sync").json()["added"] == 1
    assert client.get("/api/queue").json()["items"][-1]["path"] == "images/late.png"


def test_new_prelabels_never_replace_a_review(tmp_path: Path) -> None:
    dst = review_folder(tmp_path / "dst")
    store = ReviewStore(dst)
    store.save("images/img0.png", 0, "accepted", [Box(0, 10, 10, 30, 40).to_json()])
    changed = store.add_prelabels([Prelabel("images/img0.png", 80, 60, [], 1.0, "det", "4")])
    assert changed == 0
    assert store.get("images/img0.png")["status"] == "accepted"
    assert store.get("images/img0.png")["model"] == "det/3"
