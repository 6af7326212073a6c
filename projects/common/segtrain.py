"""Training steps that the binary-segmentation families (edgnet, microseg) share: the fit settings they hand
the shared trainer, the input | target | prediction overlays they log, and the evidence `register=auto` judges
(the model's per-image overlaps against the best trivial mask's, registry/baseline.py).

    python -m projects.microseg.train --variant micronet --epochs 2 --img-size 32   # logs overlays/best.png

Each family's `train.py` keeps its own config, data, contract and export; these two steps are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import mlflow
import numpy as np
import torch

from projects.common.plots import overlay_rows
from projects.common.runtime import autocast, to_device
from projects.common.segdata import Sample
from projects.common.trainer import FitConfig
from registry.baseline import BaselineTest, best_trivial_mask, overlaps, pooled_iou_test


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


def _masks(batches: Iterable[Any], model: torch.nn.Module | None, device: torch.device) -> tuple[np.ndarray, ...]:
    """The val targets [n, H, W] (bool, > 0.5 as the IoU metric reads them) and, with `model`, its masks."""
    truth, pred = [], []
    if model is not None:
        model.eval()
    with torch.no_grad():
        for inputs, targets in batches:
            truth.append((targets > 0.5).reshape(len(targets), *targets.shape[-2:]).cpu().numpy())
            if model is not None:
                with autocast(device):
                    logits = model(to_device(inputs, device)).float()
                pred.append((torch.sigmoid(logits) > 0.5).reshape(len(targets), *targets.shape[-2:]).cpu().numpy())
    return tuple(np.concatenate(part) for part in ((truth, pred) if model is not None else (truth,)))


def trivial_baseline(val_loader: Iterable[Any]) -> tuple[float, str]:
    """The val IoU of the best mask that ignores the image (all background, all foreground, the majority mask):
    the `kiln.baseline` a segmentation run is tagged with."""
    kind, iou, _ = best_trivial_mask(_masks(val_loader, None, torch.device("cpu"))[0])
    return iou, kind


def baseline_test(model: torch.nn.Module, val_loader: Iterable[Any], device: torch.device) -> BaselineTest:
    """Is the model's pooled val IoU significantly above the best trivial mask's (`register=auto` asks)?"""
    truth, pred = _masks(val_loader, model, device)
    kind, _, trivial = best_trivial_mask(truth)
    return pooled_iou_test(overlaps(pred, truth), trivial, kind)
