"""Training steps that the binary-segmentation families (edgnet, microseg) share: the fit settings they hand
the shared trainer and the input | target | prediction overlays they log.

    python -m projects.microseg.train --variant micronet --epochs 2 --img-size 32   # logs overlays/best.png

Each family's `train.py` keeps its own config, data, contract and export; these two steps are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import mlflow
import torch

from projects.common.plots import overlay_rows
from projects.common.segdata import Sample
from projects.common.trainer import FitConfig


class SegFitSettings(Protocol):
    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    patience: int
    max_train_batches: int


def fit_config(cfg: SegFitSettings) -> FitConfig:
    """The trainer's settings from a segmentation config; the best epoch is the one with the highest val IoU."""
    return FitConfig(
        epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs,
        grad_clip=cfg.grad_clip, patience=cfg.patience, max_train_batches=cfg.max_train_batches,
        monitor="val_iou", mode="max",
    )  # fmt: skip


def log_overlays(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    to_tensor: Callable[..., torch.Tensor],
    name: str,
    count: int = 4,
) -> None:
    """input | target | prediction for the first `count` samples, labelled, as overlays/<name>.png (each tile at
    least 256 px wide, so a 64 px sample is visible). `to_tensor` is the family's normalisation."""
    device = next(model.parameters()).device
    model.eval()
    rows = []
    with torch.no_grad():
        for s in samples[:count]:
            logits = model(to_tensor(s.image)[None].to(device))
            rows.append((s.image, s.mask, (torch.sigmoid(logits)[0, 0] > 0.5).cpu().numpy().astype("uint8")))
    if rows:
        mlflow.log_image(overlay_rows(rows), f"overlays/{name}.png")
