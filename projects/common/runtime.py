"""Device choice, seeding and mixed precision: CUDA with AMP and channels_last when present, else CPU.

python -c "from projects.common.runtime import pick_device; print(pick_device())"
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def pick_device(pref: str = "auto") -> torch.device:
    """`auto` takes CUDA when present; an explicit `cuda` without a GPU is an error, not a silent CPU run."""
    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(pref)
    except RuntimeError:
        raise ValueError(f"unknown device {pref!r}; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def uses_amp(device: torch.device) -> bool:
    return device.type == "cuda"


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """fp16 autocast on CUDA; a no-op on CPU, where bf16 autocast is slower than fp32 for convolutions."""
    if uses_amp(device):
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            yield
    else:
        yield


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an image batch, in channels_last on CUDA where cuDNN's convolutions are faster with it."""
    batch = batch.to(device, non_blocking=True)
    if device.type == "cuda" and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch
