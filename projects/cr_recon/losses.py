"""CR_recon losses on (B, 2, 2, L) spectra, found through a registry like the models.

    python -c "from projects.cr_recon.losses import create_loss; print(create_loss('mse_pearson'))"

`mse_pearson` is the seed's default: w_mse * MSE + w_corr * (1 - Pearson), where Pearson is taken per
spectrum along the bins and averaged, so the loss rewards the right shape as well as the right values.
`weighted_smooth` is MSE plus a penalty on the squared difference between adjacent predicted bins.
"""

from __future__ import annotations

import torch
from torch import nn

from projects.common.registry import Registry


class UnknownLossError(ValueError):
    """An unknown loss name or a parameter the loss does not take."""


LOSSES = Registry("loss", UnknownLossError)
register_loss = LOSSES.register


def create_loss(name: str, **params: object) -> nn.Module:
    """Build the registered loss `name` with `params` replacing its default weights."""
    loss: nn.Module = LOSSES.create(name, **params)
    return loss


def pearson(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation along the last axis (the bins); one value per spectrum."""
    pred = pred - pred.mean(dim=-1, keepdim=True)
    target = target - target.mean(dim=-1, keepdim=True)
    cov = (pred * target).sum(dim=-1)
    return cov / torch.sqrt((pred * pred).sum(dim=-1) * (target * target).sum(dim=-1) + eps)


@register_loss("mse_pearson")
class MSEPearsonLoss(nn.Module):
    def __init__(self, w_mse: float = 1.0, w_corr: float = 0.2) -> None:
        super().__init__()
        self.w_mse, self.w_corr = w_mse, w_corr

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()  # Pearson's sums are not safe in fp16 under AMP
        mse = torch.mean((pred - target) ** 2)
        return self.w_mse * mse + self.w_corr * (1.0 - pearson(pred, target).mean())


@register_loss("weighted_smooth")
class WeightedSmoothLoss(nn.Module):
    def __init__(self, w_mse: float = 1.0, w_smooth: float = 0.1) -> None:
        super().__init__()
        self.w_mse, self.w_smooth = w_mse, w_smooth

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        mse = torch.mean((pred - target) ** 2)
        smooth = torch.mean((pred[..., 1:] - pred[..., :-1]) ** 2)
        return self.w_mse * mse + self.w_smooth * smooth
