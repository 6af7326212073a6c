"""mAP50 against a hand-computed case, YOLO labels in pixels, and `kiln optimize --int8` on a tiny detector.

.venv/bin/python -m pytest tests/efficiency/test_detection.py -q
"""

from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from core.contract import DetectionPost, ModelContract, Preprocess, Ranking
from core.errors import DatasetError
from efficiency.cli import optimize_command
from efficiency.detection import Labelled, average_precision, map50, read_labels
from projects.common import tracking
from projects.common.onnx_export import log_onnx_model

SIDE = 64
NAMES = ("smoke", "fire")
# xywh in letterboxed 64 px, then one score per class: a smoke box and a fire box (what every image holds).
BOXES = [[32.0, 32.0, 20.0, 20.0, 0.9, 0.1], [10.0, 30.0, 8.0, 8.0, 0.1, 0.6]]
# A far-off anchor 1000 px out with no score: harmless in fp32, but one int8 scale for the whole output tensor
# (1000/255 ~ 3.9 per step) rounds every class score to 0, so the int8 detector finds nothing.
FAR_ANCHOR = [1000.0, 1000.0, 2.0, 2.0, 0.0, 0.0]
LABELS = "0 0.5 0.5 0.3125 0.3125\n1 0.15625 0.46875 0.125 0.125\n"


def box(class_id: int, x: float, y: float, confidence: float = 1.0) -> Labelled:
    return Labelled(class_id, (x, y, x + 10, y + 10), confidence)


def test_map50_matches_a_hand_computed_case() -> None:
    # class 0: three truths (a, b in image 0; c in image 1) and four predictions by falling confidence:
    # p1 hits a (TP), p2 overlaps nothing (FP), p3 hits c (TP), p4 hits a again (FP: a is taken).
    # recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2; envelope 1 up to recall 1/3, 2/3 up to 2/3:
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9. Class 1: one truth, found first: AP 1. mAP50 = (5/9 + 1) / 2 = 7/9.
    truths = [[box(0, 0, 0), box(0, 50, 50), box(1, 100, 100)], [box(0, 20, 20)]]
    predictions = [
        [box(0, 1, 1, 0.9), box(0, 30, 0, 0.8), box(0, 0, 2, 0.6), box(1, 100, 101, 0.5)],
        [box(0, 21, 20, 0.7)],
    ]
    assert map50(predictions, truths) == pytest.approx(7 / 9)
    assert average_precision([1 / 3, 1 / 3, 2 / 3, 2 / 3], [1, 1 / 2, 2 / 3, 1 / 2]) == pytest.approx(5 / 9)
    shifted = [[box(0, 4, 4, 0.9)], []]  # IoU 36/164 = 0.22 with a: below 0.5, a miss
    assert map50(shifted, [[box(0, 0, 0)], []]) == 0.0
    assert map50([[]], [[]]) == 1.0 and map50([[box(0, 0, 0)]], [[]]) == 0.0


def test_yolo_labels_in_pixels_and_bad_lines_named(tmp_path: Path) -> None:
    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")
    boxes = read_labels(label, width=200, height=100)
    assert boxes[0] == Labelled(0, (75.0, 25.0, 125.0, 75.0))
    assert boxes[1].class_id == 1 and boxes[1].xyxy == pytest.approx((20.0, 10.0, 60.0, 30.0))
    assert read_labels(tmp_path / "missing.txt", 10, 10) == []
    label.write_text("0 0.5 0.5\n")
    with pytest.raises(DatasetError, match=r"a.txt:1: expected 'class cx cy w h'"):
        read_labels(label, 10, 10)


def detector(path: Path, far_anchor: bool) -> Path:
    """output[N, 4+nc, anchors] = BOXES (+ FAR_ANCHOR), through a Conv on the image scaled by 0 so that the
    graph has an operator onnxruntime quantizes and a batch axis."""
    const = np.array(BOXES + ([FAR_ANCHOR] if far_anchor else []), dtype=np.float32).T[None]
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", *const.shape[1:]])
    inits = [
        numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "w"),
        numpy_helper.from_array(const, "const"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"]),
        helper.make_node("ReduceMean", ["conv"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["per_sample"]),
        helper.make_node("Add", ["per_sample", "const"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "tiny_detector", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A YOLO dataset: 4 train images at 64 px, 4 val images at 128 px (boxes must come back in original
    pixels to match), each labelled with the smoke and fire boxes the detector returns."""
    root = tmp_path / "fires"
    rng = np.random.default_rng(0)
    for split, side, count in (("train", SIDE, 4), ("val", 2 * SIDE, 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), image)
            (root / "labels" / split / f"{i}.txt").write_text(LABELS)
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [smoke, fire]\n")
    return root / "data.yaml"


def register(name: str, far_anchor: bool, data: Path, tmp_path: Path) -> None:
    contract = ModelContract(task="detection", family="test", postprocess=DetectionPost(names=NAMES),
                             preprocess=Preprocess("rgb", (SIDE, SIDE), resize="letterbox", scale=1 / 255,
                                                   pad_value=114),
                             ranking=Ranking("map50", "max"))  # fmt: skip
    with mlflow.start_run():
        tracking.log_dataset(str(data), "0" * 16, data.parent.name)
        mlflow.log_metric("map50", 1.0)
        log_onnx_model(detector(tmp_path / f"{name}.onnx", far_anchor), model_name=name, contract=contract,
                       input_example=np.zeros((1, 3, SIDE, SIDE), np.float32))  # fmt: skip


@pytest.mark.slow
def test_int8_detector_within_the_drop_is_registered(mlflow_uri, dataset: Path, tmp_path: Path) -> None:
    register("det", False, dataset, tmp_path)
    # a 2-layer detector gains nothing from int8 on this CPU (x0.4-0.5 and a bigger file): --force registers it
    result = CliRunner().invoke(optimize_command, ["det", "--version", "1", "--int8", "--json", "--force"])
    assert result.exit_code == 0, result.output
    assert '"metric": "map50"' in result.output and '"fp32": 1.0' in result.output
    assert "the detection dataset's val split" in result.output
    assert '"images": 4' in result.output and '"registered_version": 2' in result.output
    version = mlflow.MlflowClient().get_model_version("det", "2")
    run = mlflow.MlflowClient().get_run(version.run_id)
    assert version.tags["kiln.source_version"] == "1" and run.data.metrics["int8_map50"] == pytest.approx(1.0)


@pytest.mark.slow
def test_int8_detector_that_loses_its_scores_is_refused(mlflow_uri, dataset: Path, tmp_path: Path) -> None:
    register("far", True, dataset, tmp_path)
    args = ["far", "--version", "1", "--int8", "--calibration", str(dataset.parent), "--max-drop", "0.05"]
    result = CliRunner().invoke(optimize_command, args)
    assert result.exit_code == 1, result.output
    assert (
        "map50      fp32 1.0000   int8 0.0000" in result.output
        and "refused: metric drop 1.0000 > --max-drop 0.05" in result.output
    )
    assert [v.version for v in mlflow.MlflowClient().search_model_versions("name='far'")] == [1]


def test_classes_that_differ_from_the_model_are_refused(mlflow_uri, dataset: Path, tmp_path: Path) -> None:
    register("det", False, dataset, tmp_path)
    other = dataset.with_name("other.yaml")
    other.write_text(dataset.read_text().replace("[smoke, fire]", "[cat, dog]"))
    result = CliRunner().invoke(optimize_command, ["det", "--version", "1", "--int8", "--data", str(other)])
    assert result.exit_code == 2 and "classes ['cat', 'dog'] differ from the model's ['smoke', 'fire']" in result.output
