"""Distillation from a registered segmentation model: its soft predictions on the student's own augmented batch.

    python -m projects.microseg.train --teacher models:/edgnet@production --distill-weight 0.5 --temperature 2

The teacher is any registered segmentation model, run through `serving.runtime.predictor.Predictor`, so its own contract
(gray or colour, size, normalisation, activation) prepares the pixels: the augmented batch is turned back into
BGR uint8 images, the teacher's logits come back on the student's pixel grid, and they ride along as a second
target channel. The loss is then

    (1 - w) * DiceBCE(student, mask) + w * T^2 * BCE(sigmoid(student / T), sigmoid(teacher / T))

(Hinton et al.'s temperature-softened targets, for a per-pixel binary output; T^2 keeps the gradient scale).
Validation batches carry the mask alone, so val_loss and val_iou mean the same with and without a teacher.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.metrics import overlap_sums, pooled_iou
from projects.microseg.data import to_pixels

Batch = tuple[torch.Tensor, torch.Tensor]


class Teacher:
    """A loaded segmentation predictor that answers a batch of normalised tensors with logits (B, 1, H, W)."""

    def __init__(self, predictor: Any, source: str) -> None:
        if predictor.contract.task != "segmentation":
            kind = predictor.contract.task
            raise ConfigError(f"teacher {source} is a {kind!r} model; distillation needs a segmentation model",
                              field="teacher")  # fmt: skip
        self.predictor = predictor
        self.source = source
        self.activation = predictor.contract.postprocess.activation

    @classmethod
    def load(cls, source: str, tracking_uri: str | None = None) -> Teacher:
        from serving.runtime import runtime
        from serving.runtime.predictor import Predictor

        # as many onnxruntime threads as torch trains with: more would only fight the training step for cores
        options = runtime.session_options(torch.get_num_threads())
        try:
            return cls(Predictor.load(source, tracking_uri=tracking_uri, session_options=options), source)
        except ConfigError:
            raise
        except Exception as err:  # the predictor names the source; keep its message, as a config error
            raise ConfigError(f"teacher: {getattr(err, 'message', err)}", field="teacher") from None

    @property
    def name(self) -> str:
        return str(self.predictor.name)

    @property
    def version(self) -> str:
        return str(self.predictor.version or "")

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a student batch, on the student's pixel grid, as float32 (B, 1, H, W)."""
        results = self.predictor.predict_images(to_pixels(batch))
        maps = np.stack([r.logits for r in results]).astype(np.float32)
        if self.activation == "none":  # the teacher outputs probabilities: back to logits, clipped off 0 and 1
            clipped = np.clip(maps, 1e-4, 1 - 1e-4)
            maps = np.log(clipped / (1 - clipped))
        return torch.from_numpy(maps[:, None])


class DistilledLoader:
    """Wraps a training loader: each batch's target gains the teacher's logits as a second channel."""

    def __init__(self, loader: Any, teacher: Teacher) -> None:
        self.loader, self.teacher = loader, teacher
        self.dataset = getattr(loader, "dataset", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for inputs, targets in self.loader:
            yield inputs, torch.cat([targets, self.teacher.logits(inputs)], dim=1)


class DistillLoss(nn.Module):
    """`base` on the mask; with a teacher channel present, blended with the softened teacher term."""

    def __init__(self, base: nn.Module, weight: float, temperature: float) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"distill_weight must be in [0, 1], got {weight}", field="distill_weight")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}", field="temperature")
        self.base, self.weight, self.temperature = base, weight, temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] == 1:
            plain: torch.Tensor = self.base(logits, target)
            return plain
        mask, teacher = target[:, :1], target[:, 1:2]
        t = self.temperature
        soft = F.binary_cross_entropy_with_logits(logits.float() / t, torch.sigmoid(teacher.float() / t))
        loss: torch.Tensor = (1 - self.weight) * self.base(logits, mask) + self.weight * t * t * soft
        return loss


def agreement(teacher: Teacher, batches: Iterable[Batch], threshold: float = 0.0) -> float:
    """IoU of the teacher's masks against the true masks on `batches` (the teacher's quality on this data)."""
    inter = union = 0.0
    for inputs, targets in batches:
        pair = overlap_sums(teacher.logits(inputs) > threshold, targets[:, :1] > 0.5)
        inter, union = inter + pair[0], union + pair[1]
    return pooled_iou(inter, union)
