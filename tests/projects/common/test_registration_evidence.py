"""`register=auto` as a test: labelled cases where the right answer is known (a model that learned registers, one
whose answers are noise or constant does not), through registry/baseline.py's tests and the families' evidence.

.venv/bin/python -m pytest tests/projects/common/test_registration_evidence.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.contract import Ranking
from projects.common.registration import decide
from registry.baseline import (
    REGISTER_ALPHA,
    auc_test,
    best_trivial_mask,
    overlaps,
    paired_loss_test,
    pooled_iou_test,
)


def _objects(rng: np.random.Generator, n: int, side: int = 10) -> np.ndarray:
    """n 32x32 masks, one side x side square each."""
    truth = np.zeros((n, 32, 32), dtype=bool)
    for mask in truth:
        y, x = rng.integers(0, 32 - side, 2)
        mask[y : y + side, x : x + side] = True
    return truth


def test_noise_scores_register_at_about_alpha_not_half_the_time() -> None:
    rng = np.random.default_rng(0)
    runs = 300
    registered = 0
    for _ in range(runs):
        labels = (rng.random(50) < 0.4).astype(int)
        registered += auc_test(labels, rng.normal(size=50)).beats()
    assert registered / runs <= REGISTER_ALPHA + 0.04  # the point rule (AUC > 0.5) registered about half


def test_auc_learned_registers_constant_and_one_class_never() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(50) < 0.4).astype(int)
    learned = auc_test(labels, 1.5 * labels + rng.normal(size=50))
    assert learned.beats() and learned.value > 0.75 and learned.n == 50
    constant = auc_test(labels, np.zeros(50))
    assert constant.p_value == 1.0 and not constant.beats()
    assert not auc_test(np.ones(10), rng.normal(size=10)).beats()  # one class: nothing to test


def test_paired_losses_judge_regression_against_the_training_mean() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=60)
    trivial = (y - 0.0) ** 2  # the training mean is 0
    kw = {"metric": "RMSE", "value": 0.0, "baseline": 1.0, "baseline_kind": "the training mean"}
    learned = paired_loss_test((y - (0.8 * y + 0.1 * rng.normal(size=60))) ** 2, trivial, **kw | {"value": 0.3})
    noise = paired_loss_test((y - 0.5 * rng.normal(size=60)) ** 2, trivial, **kw | {"value": 1.1})
    same = paired_loss_test(trivial, trivial, **kw | {"value": 1.0})
    assert learned.beats() and not noise.beats() and same.p_value == 1.0
    assert "RMSE 1 on 60 validation rows is not significantly below 1, the trivial baseline" in same.sentence()


def test_the_best_trivial_mask_is_the_best_mask_that_ignores_the_image() -> None:
    rng = np.random.default_rng(3)
    big = _objects(rng, 20, side=26)  # 66% of each image: all foreground scores 0.66, the centre more
    kind, iou, _ = best_trivial_mask(big)
    assert kind.startswith("a fixed mask of the pixels foreground in >=") and iou > 26 * 26 / 32**2
    assert best_trivial_mask(np.ones((3, 4, 4), dtype=bool))[:2] == ("all-foreground mask", 1.0)
    assert best_trivial_mask(np.zeros((3, 4, 4), dtype=bool))[:2] == ("all-background mask", 1.0)  # IoU of empties
    centre = np.zeros((32, 32), dtype=bool)
    centre[8:24, 8:24] = True  # a fixed central square beats all foreground, but not the best fixed mask
    small = _objects(rng, 50)
    kind, iou, trivial = best_trivial_mask(small)
    assert not pooled_iou_test(overlaps(centre, small), trivial, kind).beats()
    assert best_trivial_mask(_objects(rng, 20))[0] != "all-background mask"  # background scores IoU 0


@pytest.mark.parametrize("n", [8, 40])  # exact enumeration of the sign flips, then random draws
def test_noise_masks_do_not_beat_the_best_trivial_mask_and_a_learned_model_does(n: int) -> None:
    rng = np.random.default_rng(4)
    truth = _objects(rng, n)
    kind, _, trivial = best_trivial_mask(truth)
    noise = pooled_iou_test(overlaps(rng.random(truth.shape) < 0.1, truth), trivial, kind)
    assert noise.value > 0 and not noise.beats()  # the old rule (IoU > 0) registered every noise model
    learned = pooled_iou_test(overlaps(np.roll(truth, 2, axis=2), truth), trivial, kind)
    assert learned.beats() and learned.p_value < 0.01
    same = pooled_iou_test(trivial, trivial, kind)  # the model is the trivial mask
    assert same.p_value == 1.0 and not same.beats()


def test_decide_follows_the_evidence_under_auto_only() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(40) < 0.5).astype(int)
    noise = auc_test(labels, rng.normal(size=40))
    auc = Ranking("best_val_auc", "max")
    auto = decide("auto", auc, max(noise.value, 0.51), 0.5, "a constant score", noise)
    assert not auto.register and auto.reason.startswith(f"AUC {noise.value:.3g} on 40 validation rows is not")
    assert decide("always", auc, noise.value, 0.5, evidence=noise).register
    learned = auc_test(labels, 2 * labels + rng.normal(size=40))
    assert not decide("never", auc, learned.value, 0.5, evidence=learned).register
    assert decide("auto", auc, learned.value, 0.5, evidence=learned).register
    assert not decide("auto", auc, None, 0.5, evidence=learned).register  # the ranking metric was not measured


class _Echo(torch.nn.Module):
    """A 'model' whose logits are its input times `gain` plus seeded noise: it learned when gain dominates."""

    def __init__(self, gain: float, noise: float) -> None:
        super().__init__()
        self.gain, self.noise = gain, noise
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(x.sum()) % 1000)
        return self.gain * (x - 0.5) + self.noise * torch.randn(x.shape, generator=generator)


def test_the_segmentation_evidence_runs_the_model_over_the_val_loader() -> None:
    from projects.common.segtrain import baseline_test, trivial_baseline

    truth = torch.from_numpy(_objects(np.random.default_rng(6), 16)).float()[:, None]
    loader = [(truth[i : i + 4], truth[i : i + 4]) for i in range(0, 16, 4)]
    iou, kind = trivial_baseline(loader)
    assert kind != "all-background mask" and iou > 100 / 1024  # all foreground scores 100/1024
    learned = baseline_test(_Echo(10.0, 0.1), loader, torch.device("cpu"))
    noise = baseline_test(_Echo(0.0, 1.0), loader, torch.device("cpu"))
    assert learned.value == 1.0 and learned.beats() and learned.n == 16
    assert 0 < noise.value < 0.2 and not noise.beats() and noise.baseline == pytest.approx(iou)
