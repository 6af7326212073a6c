import pytest
import torch

from projects.edgnet.losses import DiceBCELoss, IoU, iou_score


def test_loss_is_low_for_confident_correct_logits_and_high_for_wrong():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:5, 2:5] = 1
    good = (target * 2 - 1) * 20
    loss = DiceBCELoss()
    assert loss(good, target) < 0.01
    assert loss(-good, target) > 1.5


def test_iou_counts_over_the_whole_pass():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, :2] = 1  # 2 px
    target[1, 0, 0, :] = 1  # 4 px
    logits = torch.full_like(target, -10.0)
    logits[0, 0, 0, :2] = 10  # image 0 perfect, image 1 predicts nothing
    metric = IoU()
    metric.update(logits[:1], target[:1])
    metric.update(logits[1:], target[1:])
    assert metric.compute() == pytest.approx(2 / 6)  # not the mean of ratios (0.5)
    assert iou_score(torch.full_like(target, -10.0), torch.zeros_like(target)) == 1.0
