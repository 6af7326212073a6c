"""`kiln data autolabel` with a tiny detection ONNX registered in a tmp sqlite store, through serving's Predictor.

    .venv/bin/python -m pytest tests/data/test_autolabel.py -q

The detector (tests/serving/serving_helpers.det_model) returns fixed boxes on a 64x64 letterbox: smoke 0.9 at
the centre, fire 0.6 on the left, and a smoke candidate at 0.2, below the 0.25 threshold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from serving_helpers import Registry, det_model, image_example, new_registry, seg_model  # noqa: E402

from data.autolabel import autolabel, default_margin, priority  # noqa: E402
from data.cli import data  # noqa: E402
from data.loop import class_names, read_boxes  # noqa: E402
from data.review.store import ReviewStore  # noqa: E402


@pytest.fixture(scope="module")
def registry(mlflow_template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One registry for the module: the tests only read it."""
    reg = new_registry(mlflow_template_db, tmp_path_factory.mktemp("registry"))
    reg.register("det", det_model(), image_example(64, 3))
    reg.register("seg", seg_model(), image_example(32))
    return reg


def folder(dst: Path, n: int = 5) -> Path:
    for i in range(n):
        (dst / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst / "images" / f"f{i}.png"), np.full((64, 64, 3), 30 * i, np.uint8))
    return dst


def test_prelabels_queue_and_model_are_recorded(registry: Registry, tmp_path: Path) -> None:
    dst = folder(tmp_path / "dst")
    (dst / "images/broken.png").write_bytes(b"not a png")
    result = autolabel(dst, "det@production", tracking_uri=registry.uri)
    assert result.model == "det/1" and result.labelled == 5
    assert result.undecodable == ["images/broken.png"]
    assert result.boxes == {"smoke": 5, "fire": 5}
    assert class_names(dst) == ["smoke", "fire"]  # taken from the model's contract
    lines = (dst / "prelabels/f0.txt").read_text().splitlines()
    assert lines == ["0 0.500000 0.500000 0.312500 0.312500 0.9000", "1 0.156250 0.468750 0.125000 0.125000 0.6000"]
    boxes = read_boxes(dst / "prelabels/f0.txt", 64, 64)
    assert [round(b.x1) for b in boxes] == [22, 6]
    store = ReviewStore(dst)
    item = store.get("images/f0.png")
    assert item["model"] == "det/1" and item["status"] == "queued" and len(item["prelabels"]) == 2
    # the 0.2 candidate is 0.05 from the 0.25 threshold: 1 - 0.05 / 0.75
    assert item["priority"] == pytest.approx(1 - 0.05 / 0.75, abs=1e-4)
    assert not (dst / "labels").exists()  # pre-labels never count as human labels


def test_reviewed_images_are_not_relabelled(registry: Registry, tmp_path: Path) -> None:
    dst = folder(tmp_path / "dst", 3)
    autolabel(dst, "det@production", tracking_uri=registry.uri)
    store = ReviewStore(dst)
    item = store.get("images/f1.png")
    store.save(item["path"], item["revision"], "fixed", [])
    out = CliRunner().invoke(
        data, ["autolabel", str(dst), "--model", "det/1", "--conf", "0.5", "--tracking-uri", registry.uri, "--quiet"]
    )
    assert out.exit_code == 0, out.output
    assert "pre-labelled 2 image(s) with det/1" in out.output and "1 already reviewed" in out.output
    assert store.get("images/f1.png")["status"] == "fixed"
    assert (dst / "labels/f1.txt").read_text() == ""
    # with --conf 0.5 the fire box (0.6) is nearest the threshold: 1 - 0.1 / 0.5
    assert store.get("images/f0.png")["priority"] == pytest.approx(0.8, abs=1e-4)


def test_bad_models_are_named(registry: Registry, tmp_path: Path) -> None:
    dst = folder(tmp_path / "dst", 1)
    runner = CliRunner()
    out = runner.invoke(data, ["autolabel", str(dst), "--model", "seg@production", "--tracking-uri", registry.uri])
    assert out.exit_code == 1 and "is a segmentation model; auto-labelling needs a detection model" in out.output
    out = runner.invoke(data, ["autolabel", str(dst), "--model", "ghost@production", "--tracking-uri", registry.uri])
    assert out.exit_code == 1 and "ghost" in out.output and "Traceback" not in out.output
    (dst / "classes.txt").write_text("person\n")
    out = runner.invoke(data, ["autolabel", str(dst), "--model", "det@production", "--tracking-uri", registry.uri])
    assert out.exit_code == 1 and "class names ['person'] differ from model det@production's" in out.output
    out = runner.invoke(data, ["autolabel", str(dst), "--model", "det@production", "--conf", "1.5"])
    assert out.exit_code == 1 and "--conf must be in (0, 1)" in out.output
    out = runner.invoke(data, ["autolabel", str(dst), "--model", "det@production", "--conf", "0.2", "--margin", "0.3"])
    assert out.exit_code == 1 and "--margin must be in [0, conf), got 0.3" in out.output


def test_a_low_conf_alone_is_accepted(registry: Registry, tmp_path: Path) -> None:
    """--conf 0.001 without --margin: the default margin follows the threshold instead of refusing it."""
    assert default_margin(0.25) == 0.1 and default_margin(0.001) == 0.0005
    dst = folder(tmp_path / "dst", 1)
    out = CliRunner().invoke(data, ["autolabel", str(dst), "--model", "det@production", "--conf", "0.001",
                                    "--tracking-uri", registry.uri, "--quiet"])  # fmt: skip
    assert out.exit_code == 0, out.output


def test_priority_puts_boxes_near_the_threshold_first() -> None:
    assert priority([], 0.25) == 0.0
    assert priority([0.25], 0.25) == 1.0
    assert priority([0.3, 0.95], 0.25) > priority([0.6, 0.95], 0.25) > priority([0.95], 0.25)
    assert priority([0.2], 0.25) == priority([0.3], 0.25)  # just below counts as much as just above
