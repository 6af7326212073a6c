"""Task endpoints and their pre/post-processing, driven by each model's kiln.* metadata."""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
import numpy as np
import pytest
from serving_helpers import png_bytes

from serving.errors import BadRequest
from serving.runtime.postprocess import TASKS, TabularResult, TabularResults, nms, records_to_matrix, rounded


def test_every_contract_task_has_a_handler() -> None:
    from core.contract import TASKS as CONTRACT_TASKS

    assert sorted(TASKS) == sorted(CONTRACT_TASKS)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 3, 2]


def test_records_become_columns_in_feature_order_with_null_as_missing() -> None:
    matrix = records_to_matrix([{"b": 2, "a": 1.5}, {"a": None, "b": 0}, {"a": True, "b": False}], ("a", "b"))
    assert matrix[0].tolist() == [1.5, 2.0]
    assert np.isnan(matrix[1, 0])
    assert matrix[2].tolist() == [1.0, 0.0]  # JSON booleans are flags: 1 and 0


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "non-empty JSON list"),
        ([{"a": 1}], "record 0: missing features ['b'], unknown features []"),
        ([{"a": 1, "b": 2, "c": 3}], "unknown features ['c']"),
        ([{"a": 1, "b": 2}, {"a": "x", "b": 1}], "record 1: feature 'a' must be a number or null, got 'x'"),
        ([[1, 2]], "record 0 is list"),
    ],
)
def test_bad_records_name_the_row_and_feature(records: Any, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        records_to_matrix(records, ("a", "b"))
    assert message in err.value.detail


# --- through the HTTP endpoint ----------------------------------------------------------------------------


def _square(height: int = 40, width: int = 40) -> np.ndarray:
    image = np.zeros((height, width), np.uint8)
    image[10:30, 10:30] = 255
    return image


def test_segmentation_returns_mask_png_on_the_original_image(client: Any) -> None:
    r = client.post("/v1/models/seg/predict", files={"image": ("a.png", png_bytes(_square()), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["task"]) == ("seg", "1", "segmentation")
    assert body["foreground_fraction"] == pytest.approx(0.25, abs=0.02)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask_png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 40)
    assert mask[20, 20] == 255 and mask[2, 2] == 0
    assert r.headers["x-kiln-model-version"] == "1"


def test_segmentation_threshold_query_overrides_the_contract(client: Any) -> None:
    gray = np.full((32, 32), 140, np.uint8)  # 140/255 - 0.5 = 0.049 logits -> sigmoid 0.512
    low = client.post("/v1/models/seg/predict?threshold=0.5", content=png_bytes(gray), headers=_png)
    high = client.post("/v1/models/seg/predict?threshold=0.6", content=png_bytes(gray), headers=_png)
    assert low.json()["foreground_fraction"] == 1.0
    assert high.json()["foreground_fraction"] == 0.0


_png = {"content-type": "image/png"}


def test_detection_boxes_are_in_original_pixels_with_names(client: Any) -> None:
    image = np.zeros((64, 128, 3), np.uint8)  # letterboxed to 64x64: gain 0.5, 16 px bands top and bottom
    r = client.post("/v1/models/det/predict", content=png_bytes(image), headers=_png)
    assert r.status_code == 200, r.text
    dets = r.json()["detections"]
    assert [d["class_name"] for d in dets] == ["smoke", "fire"]  # B suppressed by A, D under conf
    assert dets[0]["box"] == [44.0, 12.0, 84.0, 52.0]
    assert dets[0]["confidence"] == pytest.approx(0.9)
    assert dets[1]["box"] == [12.0, 20.0, 28.0, 36.0]
    strict = client.post("/v1/models/det/predict?conf=0.7", content=png_bytes(image), headers=_png)
    assert [d["class_name"] for d in strict.json()["detections"]] == ["smoke"]
    loose_iou = client.post("/v1/models/det/predict?iou=0.9", content=png_bytes(image), headers=_png)
    assert len(loose_iou.json()["detections"]) == 3


def test_base64_json_image(client: Any) -> None:
    payload = {"image": "data:image/png;base64," + base64.b64encode(png_bytes(_square())).decode()}
    r = client.post("/v1/models/seg/predict", json=payload)
    assert r.status_code == 200 and r.json()["width"] == 40


def test_regression_output_has_the_declared_shape(client: Any) -> None:
    r = client.post("/v1/models/reg/predict", content=png_bytes(np.zeros((20, 20), np.uint8)), headers=_png)
    body = r.json()
    assert body["shape"] == [2, 2, 30] and body["layout"] == "BGGR"
    assert np.allclose(np.array(body["output"]), np.arange(120).reshape(2, 2, 30) / 100)


def test_tabular_records_give_labels_and_probabilities(client: Any) -> None:
    records = [{"f0": 2, "f1": 2, "f2": 0, "f3": None}, {"f3": 0, "f2": 0, "f1": -2, "f0": -2}]
    r = client.post("/v1/models/tab/predict", json={"records": records})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == ["yes", "no"]
    assert body["classes"] == ["no", "yes"]
    assert np.allclose(np.sum(body["probabilities"], axis=1), 1, atol=1e-5)
    assert r.json() == client.post("/v1/models/tab/predict", json=records).json()


def test_tabular_answer_from_the_run_columns_is_the_per_record_answer() -> None:
    """The task endpoint writes its answer from the run's columns; the per-record results (drift, shadow) are
    built when iterated. Both give the answer the task endpoint gave before, byte for byte."""
    probs = np.random.default_rng(0).random((3, 2))
    labels, classes = ["no", "yes", "no"], ["no", "yes"]
    per_record = TabularResults(
        (TabularResult(label=x, probabilities=p) for x, p in zip(labels, probs, strict=True)), classes, False
    )
    columns = TabularResults.from_columns(labels, probs, classes)
    before = {"predictions": labels, "probabilities": np.round(probs, 6).tolist(), "classes": classes}
    assert json.dumps(columns.to_json()) == json.dumps(per_record.to_json()) == json.dumps(before)
    assert len(columns) == 3 and [r.label for r in columns] == labels and columns[1].probabilities is not None
    assert np.array_equal(np.stack([r.probabilities for r in columns]), probs)
    values = TabularResults.from_columns([1.5, -2.0], None, ())
    assert values.regression and values.to_json() == {"predictions": [1.5, -2.0]}
    assert [r.value for r in values] == [1.5, -2.0] and values[0].probabilities is None


@pytest.mark.parametrize(
    "matrix",
    [
        np.random.default_rng(1).random((4, 3)),
        (np.arange(-16, 16).reshape(2, 16) + 0.5) * 1e-6,  # exact ties: half to even, as numpy's rint
        np.array([[-1e-9, -0.0, 0.0, 4e-7, -4e-7, 1e300, 5e-324, 0.9999995]]),  # rint keeps a zero's sign
        np.array([[np.nan, np.inf, -np.inf, 0.25]]),
        np.random.default_rng(2).random((40, 3)),  # past the few values rounded in Python
    ],
)
def test_rounded_probabilities_are_numpys_bit_for_bit(matrix: np.ndarray) -> None:
    assert repr(rounded(matrix, 6)) == repr(np.round(matrix, 6).tolist())


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "message"),
    [
        ("/v1/models/nope/predict", {"json": []}, 404, "no model named 'nope'"),
        ("/v1/models/seg/predict", {"content": b"garbage", "headers": _png}, 400, "could not be decoded"),
        ("/v1/models/seg/predict", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
        ("/v1/models/seg/predict", {"json": {"image": "%%%"}}, 400, "not valid base64"),
        ("/v1/models/seg/predict", {"json": {"picture": "x"}}, 400, '{"image": "<base64>"}'),
        ("/v1/models/seg/predict", {"files": {"photo": ("a.png", b"x")}}, 400, "no `image` file field"),
        ("/v1/models/seg/predict?threshold=2", {"content": b"x", "headers": _png}, 400, "outside [0.0, 1.0]"),
        ("/v1/models/seg/predict?conf=0.2", {"content": b"x", "headers": _png}, 400, "unknown query parameter"),
        ("/v1/models/det/predict?conf=high", {"content": b"x", "headers": _png}, 400, "is not a number"),
        ("/v1/models/tab/predict", {"json": [{"f0": 1}]}, 400, "missing features"),
        ("/v1/models/tab/predict", {"content": b"{", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ("/v1/models/tab/predict", {"content": b"a,b", "headers": {"content-type": "text/csv"}}, 415, "json"),
        ("/v1/models/plain/predict", {"json": []}, 400, "has no kiln.task metadata"),
    ],
)
def test_bad_task_requests_get_clear_4xx(client: Any, path: str, kwargs: dict, status: int, message: str) -> None:
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
