"""Dice+BCE loss and IoU for binary segmentation logits.

python -m pytest tests/projects/edgnet/test_losses.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.metrics import overlap_sums, pooled_iou


class DiceBCELoss(nn.Module):
    """BCE on logits plus (1 - soft Dice) over the batch; both terms weigh 1, as in the seed."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum()
        dice = (2 * inter + self.smooth) / (prob.sum() + target.sum() + self.smooth)
        return bce + (1 - dice)


class IoU:
    """Foreground IoU over a whole validation pass (sums of intersection and union, not a mean of ratios)."""

    name = "val_iou"
    sums = ("inter", "union")  # the accumulators that add up over validation shards (data-parallel runs)

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.inter = 0.0
        self.union = 0.0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        inter, union = overlap_sums(torch.sigmoid(logits) > self.threshold, target > 0.5)
        self.inter += inter
        self.union += union

    def compute(self) -> float:
        return pooled_iou(self.inter, self.union)


def iou_score(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    metric = IoU(threshold)
    metric.update(logits, target)
    return metric.compute()
