"""The kiln.* metadata contract: what training writes is parsed and validated, and errors name the key."""

from __future__ import annotations

import json

import pytest

from core.contract import DetectionPost, SegmentationPost, TabularPost, parse_contract
from core.errors import ContractError


def _meta(task: str, pre: dict | None, post: dict) -> dict[str, str]:
    meta = {"kiln.task": task, "kiln.family": "x", "kiln.postprocess": json.dumps(post)}
    if pre is not None:
        meta["kiln.preprocess"] = json.dumps(pre)
    return meta


PRE = {"color": "rgb", "size": [640, 640], "resize": "letterbox", "scale": "1/255", "mean": [0], "std": [1]}


def test_detection_contract_with_ultralytics_names_dict_and_fraction_scale() -> None:
    post = {"names": {"1": "fire", "0": "smoke"}, "conf": 0.3, "iou": 0.5, "nms": False, "box_format": "xywh"}
    contract = parse_contract(_meta("detection", PRE, post))
    assert isinstance(contract.postprocess, DetectionPost)
    assert contract.postprocess.names == ("smoke", "fire")
    assert contract.preprocess is not None
    assert contract.preprocess.scale == pytest.approx(1 / 255)
    assert contract.preprocess.mean == (0.0, 0.0, 0.0)  # one value broadcast to the 3 channels
    assert contract.preprocess.pad_value == 114


def test_model_without_kiln_task_is_generic() -> None:
    contract = parse_contract({})
    assert contract.task is None and contract.preprocess is None and contract.postprocess is None


def test_tabular_needs_no_preprocess() -> None:
    post = {"task": "multiclass", "feature_names": ["a", "b"], "classes": [0, 1, 2]}
    contract = parse_contract(_meta("tabular", None, post))
    assert isinstance(contract.postprocess, TabularPost)
    assert contract.postprocess.classes == (0, 1, 2)


def test_contracts_written_by_the_trainers_parse() -> None:
    """The exact metadata dicts projects/*/train.py write (copied here so a change there shows up as a diff)."""
    skin = {
        "kiln.task": "tabular",
        "kiln.preprocess": json.dumps(
            {"layout": "[B, F]", "dtype": "float32", "missing": "NaN", "feature_names": ["a"]}
        ),
        "kiln.postprocess": json.dumps({"task": "regression", "feature_names": ["a"], "classes": []}),
    }
    assert parse_contract(skin).preprocess is None
    cr = _meta(
        "regression",
        {"color": "gray", "size": [128, 128], "resize": "stretch", "scale": 1 / 255, "mean": [0.5], "std": [0.5]},
        {"output_shape": [2, 2, 30], "layout": "BGGR", "cells": [["R", "G"], ["G", "B"]]},
    )
    assert parse_contract(cr).postprocess.cells == [["R", "G"], ["G", "B"]]  # type: ignore[union-attr]


def test_segmentation_defaults() -> None:
    contract = parse_contract(_meta("segmentation", {**PRE, "color": "gray", "mean": [0], "std": [1]}, {}))
    assert contract.postprocess == SegmentationPost(activation="sigmoid", threshold=0.5)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"kiln.task": "ocr"}, "kiln.task='ocr' is not one of"),
        (_meta("segmentation", None, {}), "kiln.preprocess is missing"),
        ({"kiln.task": "tabular", "kiln.postprocess": "{not json"}, "kiln.postprocess is not valid JSON"),
        (_meta("segmentation", {**PRE, "size": [640]}, {}), "kiln.preprocess.size must be [H, W]"),
        (_meta("segmentation", {**PRE, "mean": [0, 0]}, {}), "kiln.preprocess.mean has 2 values for 3 channels"),
        (_meta("segmentation", {**PRE, "std": [0]}, {}), "kiln.preprocess.std must not contain 0"),
        (_meta("segmentation", {**PRE, "color": "cmyk"}, {}), "kiln.preprocess.color='cmyk'"),
        (_meta("segmentation", PRE, {"threshold": 2}), "kiln.postprocess.threshold must be in [0, 1]"),
        (_meta("detection", PRE, {"names": []}), "kiln.postprocess.names must be a non-empty list"),
        (_meta("detection", PRE, {"names": ["a"], "conf": "high"}), "kiln.postprocess.conf must be a number"),
        (_meta("tabular", None, {"task": "binary", "feature_names": ["a", "a"], "classes": [0, 1]}), "duplicates"),
        (_meta("tabular", None, {"task": "binary", "feature_names": ["a"]}), "must list at least 2 classes"),
        (_meta("regression", PRE, {"output_shape": [2, -2]}), "output_shape must be a list of positive ints"),
    ],
)
def test_malformed_contracts_name_the_key(meta: dict[str, str], message: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_contract(meta)
    assert message in str(err.value)
