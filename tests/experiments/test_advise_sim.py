"""The advisor on labelled histories (experiments/advise_sim.py) and on the wrong calls the issue #21 listed.

.venv/bin/python -m pytest tests/experiments/test_advise_sim.py -q
"""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from core import vocab
from experiments.advise import advise, contradicts, diagnose, headline
from experiments.advise_sim import KINDS, evaluate, wilson
from experiments.runview import RunView, resolve_curves
from tests.experiments.test_advise import decay, healthy, make_run, rise


def view_of(series: dict[str, list[float]], params: dict[str, str], tags: dict[str, str], first: int = 1) -> RunView:
    data = {k: [(first + i, float(v)) for i, v in enumerate(vs)] for k, vs in series.items()}
    final = {k: s[-1][1] for k, s in data.items()}
    view = RunView("r" * 32, "0", "run", "FINISHED", params, tags, final, data)
    resolve_curves(view)
    return view


EDGNET = {vocab.FAMILY: "edgnet", vocab.VARIANT: "edgnet", vocab.METRIC: "best_val_iou", vocab.MODE: "max"}


def test_seeded_simulation_meets_every_target() -> None:
    """A small seeded run of the bench: recall and precision >= 0.9 for every kind, and the hard rules hold."""
    ev = evaluate(runs_per_kind=12, seed=7)
    for kind in KINDS:
        score = ev.scores[kind]
        assert score.planted == 12
        assert score.recall >= 0.9, (kind, score)
        assert score.precision >= 0.9, (kind, score)
    assert ev.not_learning_called_healthy == 0
    assert ev.contradictions == 0 and ev.kept_faulty == 0
    assert ev.healthy_flagged <= 1


def test_wilson_interval() -> None:
    low, high = wilson(12, 12)
    assert high == 1.0 and low == pytest.approx(0.7575, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_yolo_map_zero_at_every_epoch_is_not_learning() -> None:
    tags = {vocab.FAMILY: "yolo", vocab.PRESET: "safety_detection", vocab.METRIC: "best/mAP50-95(B)",
            vocab.MODE: "max", vocab.BASELINE: "0.0"}  # fmt: skip
    series = {"train/box_loss": decay(3.0, 1.5, 4), "train/cls_loss": decay(4.0, 2.0, 4),
              "val/box_loss": decay(3.2, 1.7, 4), "metrics/mAP50-95(B)": [0.0] * 12}  # fmt: skip
    view = view_of(series, {"epochs": "12", "lr0": "0"}, tags)
    kinds = [f.kind for f in diagnose(view)]
    assert "not_learning" in kinds
    # without a baseline tag a metric that never moved is still not learning
    tags.pop(vocab.BASELINE)
    assert "not_learning" in [f.kind for f in diagnose(view_of(series, {"epochs": "12"}, tags))]


def test_exploding_val_loss_at_lr_1_is_divergence_with_the_default_lr() -> None:
    """edgnet at lr=1.0: val_loss 6.92e+18 is divergence, and the fix is the default 0.001, not 0.3."""
    series = healthy()
    series["val_loss"] = [*series["val_loss"][:4], 3.1e3, 2.2e9, 6.92e18, 6.92e18, 5e18, 6e18, 6.9e18, 6.92e18]
    view = view_of(series, {"epochs": "12", "lr": "1.0", "patience": "0"}, EDGNET)
    findings = diagnose(view)
    assert findings[0].kind == "divergence" and "exploded" in findings[0].summary
    assert findings[0].overrides == {"lr": "0.001"}
    for f in findings:
        assert "lr=1.0" not in f.command and "lr=0.3" not in f.command


def test_skinmodel_learning_rate_1_is_about_the_learning_rate() -> None:
    """Overfitting (fewer rounds) and stopped early (more patience) at eta=1.0 are symptoms of the learning rate."""
    val = [0.5, 0.35, 0.3, 0.29, 0.3, 0.33, 0.37, 0.4, 0.44, 0.47]
    series = {"train_logloss": [0.5 * 0.6**t for t in range(10)], "val_logloss": val,
              "val_auc": [0.9, 0.93, 0.95, 0.951, 0.95, 0.948, 0.947, 0.946, 0.947, 0.945]}  # fmt: skip
    tags = {vocab.FAMILY: "skinmodel", vocab.METRIC: "val_auc", vocab.MODE: "max",
            "mlflow.project.entryPoint": "skinmodel"}  # fmt: skip
    params = {"n_estimators": "200", "learning_rate": "1.0", "max_depth": "4", "early_stopping_rounds": "30"}
    findings = diagnose(view_of(series, params, tags, first=0))
    assert findings[0].kind == "lr_too_high" and findings[0].overrides == {"learning_rate": "0.05"}
    assert not any(contradicts(view_of(series, params, tags, 0), a, b) for a in findings for b in findings)
    assert all("learning_rate=1.0" not in f.command for f in findings)


@pytest.mark.parametrize("lr", ["1e-06", "0.1"])
def test_suggested_lr_is_never_absurd(lr: str) -> None:
    series = healthy()
    series["train_loss"] = [1.0 - 0.01 * t for t in range(12)] if lr == "1e-06" else series["train_loss"]
    if lr == "0.1":
        series["train_loss"] = [1.0, 0.8, 0.9, 0.7, 0.85, 0.65, 0.8, 0.6, 0.75, 0.58, 0.7, 0.56]
    for f in diagnose(view_of(series, {"epochs": "12", "lr": lr, "patience": "0"}, EDGNET)):
        if "lr" in f.overrides:
            value = float(f.overrides["lr"])
            assert 1e-4 <= value <= 1e-2 and not math.isclose(value, float(lr))


def test_one_epoch_and_cv_parent_headlines() -> None:
    one = view_of({"val_iou": [0.2], "train_loss": [0.9], "val_loss": [1.0]}, {"epochs": "1"}, EDGNET)
    assert "1 epoch," in headline(one)
    (short,) = diagnose(one)  # never "healthy": too short to judge, with a longer budget to try
    assert short.kind == "too_short" and short.overrides == {"epochs": "12"}
    cv_tags = {**EDGNET, vocab.CV_KIND: "folds", vocab.CV_N: "5"}
    parent = view_of({}, {}, cv_tags)
    parent.final.update({"cv/val_iou/mean": 0.41, "cv/val_iou/std": 0.02, "cv/val_iou/ci95_low": 0.39,
                         "cv/val_iou/ci95_high": 0.43})  # fmt: skip
    text = headline(parent)
    assert "cv parent over 5 folds" in text and "val_iou 0.41 ± 0.02" in text and "0 epochs" not in text
    assert diagnose(parent) == []


def test_comparison_leaves_out_int8_and_cv_parents(mlflow_uri: str) -> None:
    client = MlflowClient(mlflow_uri)
    mine = make_run(client, {**healthy(), "best_val_iou": [0.5]}, params={"lr": "0.001"})
    make_run(client, {**healthy(), "best_val_iou": [0.7]}, params={"lr": "0.003"})
    make_run(client, {"best_val_iou": [0.9]}, params={"yolo.x": "1"},
             tags={vocab.OPTIMIZED_FROM: "m/1", vocab.INT8: "true"})  # fmt: skip
    make_run(client, {"best_val_iou": [0.1]}, tags={vocab.CV_KIND: "folds"})
    comp = advise(mine, client=client).comparison
    assert comp is not None and comp.runs == 2 and "yolo.x" not in comp.changed
    assert comp.changed == {"lr": ("0.001", "0.003")}


def test_lr_fix_reaches_every_command() -> None:
    """A slow lr run that also still improves: every command carries the raised lr, none the faulty one."""
    series = healthy()
    series["train_loss"] = [1.0 - 0.015 * t for t in range(12)]
    series["val_iou"] = rise(0.9, 3)
    series["system/cpu_utilization_percentage"] = [10.0, 12.0, 11.0]
    view = view_of(series, {"epochs": "12", "lr": "1e-05", "patience": "0"}, EDGNET)
    view.system = {"system/cpu_utilization_percentage": [(1, 10.0), (2, 12.0), (3, 11.0)]}
    findings = diagnose(view)
    assert {f.kind for f in findings} >= {"lr_too_low", "data_bound"}
    assert all("lr=1e-05" not in f.command and "-P lr=0.001" in f.command for f in findings)
