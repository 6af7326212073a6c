"""The typed model contract: what training builds is what serving parses, and bad metadata names itself."""

from __future__ import annotations

import json

import pytest

from core.contract import (
    DetectionPost,
    ModelContract,
    Preprocess,
    Ranking,
    RegressionPost,
    SegmentationPost,
    TabularInput,
    TabularPost,
)
from core.errors import ContractError, KilnError

CONTRACTS = {
    "segmentation": ModelContract(
        task="segmentation",
        family="edgnet",
        preprocess=Preprocess("gray", (256, 256), mean=(0.5,), std=(0.25,), size_multiple=16),
        postprocess=SegmentationPost(threshold=0.4),
        ranking=Ranking("best_val_iou", "max"),
    ),
    "detection": ModelContract(
        task="detection",
        family="yolo",
        preprocess=Preprocess("rgb", (640, 640), "letterbox", pad_value=114),
        postprocess=DetectionPost(names=("smoke", "fire"), conf=0.3),
        ranking=Ranking("best/mAP50-95"),
    ),
    "tabular": ModelContract(
        task="tabular",
        family="skinmodel",
        tabular_input=TabularInput(("a", "b")),
        postprocess=TabularPost("binary", ("a", "b"), (0, 1)),
        ranking=Ranking("best_val_auc"),
    ),
    "regression": ModelContract(
        task="regression",
        family="cr_recon",
        preprocess=Preprocess("gray", (128, 128), mean=(0.5,), std=(0.5,)),
        postprocess=RegressionPost((2, 2, 30), "BGGR", [["R", "G"], ["G", "B"]]),
        ranking=Ranking("best_val_pearson"),
    ),
}


@pytest.mark.parametrize("task", sorted(CONTRACTS))
def test_round_trip(task: str) -> None:
    contract = CONTRACTS[task].with_ids(model_name="m", run_id="r1")
    meta = contract.to_metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["kiln.task"] == task
    assert ModelContract.parse(meta) == contract


def test_ranking_is_the_promotion_hint() -> None:
    meta = CONTRACTS["regression"].to_metadata()
    assert (meta["kiln.metric"], meta["kiln.mode"]) == ("best_val_pearson", "max")
    assert ModelContract.parse({**meta, "kiln.mode": "min"}).ranking == Ranking("best_val_pearson", "min")


def test_one_value_broadcasts_per_channel() -> None:
    pre = Preprocess("rgb", (8, 8), mean=(0.5,))
    assert pre.mean == (0.5, 0.5, 0.5) and pre.channels == 3


def test_legacy_metadata_without_ranking_still_parses() -> None:
    meta = {
        "kiln.task": "segmentation",
        "kiln.preprocess": json.dumps({"color": "gray", "size": [64, 64], "scale": "1/255"}),
        "kiln.postprocess": json.dumps({"activation": "sigmoid"}),
        "kiln.preset": "x",
    }
    contract = ModelContract.parse(meta)
    assert contract.ranking is None
    assert contract.preprocess is not None and contract.preprocess.scale == pytest.approx(1 / 255)
    assert contract.extra == {"kiln.preset": "x"}  # unknown kiln.* keys are kept, not dropped


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ({"kiln.task": "painting"}, "kiln.task='painting'"),
        ({"kiln.task": "segmentation", "kiln.postprocess": "{}"}, "kiln.preprocess is missing"),
        ({"kiln.task": "segmentation", "kiln.preprocess": "[1]", "kiln.postprocess": "{}"}, "JSON object"),
        (
            {"kiln.task": "segmentation", "kiln.preprocess": '{"color": "gray", "size": [0, 4]}'},
            "kiln.preprocess.size",
        ),
        (
            {
                "kiln.task": "detection",
                "kiln.preprocess": '{"color": "rgb", "size": [8, 8]}',
                "kiln.postprocess": '{"names": []}',
            },
            "kiln.postprocess.names",
        ),
        (
            {"kiln.task": "tabular", "kiln.postprocess": '{"task": "binary", "feature_names": ["a", "a"]}'},
            "duplicates",
        ),
        ({"kiln.task": "tabular", "kiln.postprocess": "{", "kiln.metric": "x"}, "not valid JSON"),
    ],
)
def test_bad_metadata_names_the_key(meta: dict[str, str], named: str) -> None:
    with pytest.raises(ContractError, match=named.replace("[", r"\[").replace("(", r"\(")) as info:
        ModelContract.parse(meta)
    assert isinstance(info.value, KilnError) and info.value.status_code == 422


def test_bad_mode_and_mismatched_postprocess_are_refused() -> None:
    with pytest.raises(ContractError, match="kiln.mode"):
        Ranking("val_loss", "lowest")
    with pytest.raises(ContractError, match="SegmentationPost"):
        ModelContract(
            task="segmentation", preprocess=Preprocess("gray", (8, 8)), postprocess=TabularPost("binary", ("a",))
        )
    with pytest.raises(ContractError, match="needs kiln.preprocess"):
        ModelContract(task="detection", postprocess=DetectionPost(names=("a",)))
