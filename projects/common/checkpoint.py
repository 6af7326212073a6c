"""Checkpoints as run artifacts: `checkpoints/last.pt` (full training state) and `checkpoints/best.pt` (weights).

    python -m projects.edgnet.train --resume <run_id>   # continues from that run's last.pt

`last.pt` holds everything resume needs: epoch, model, optimizer, scheduler, AMP scaler, early-stopping
state and the best score so far.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import mlflow
import torch

from core.errors import UserError

ARTIFACT_DIR = "checkpoints"


class ResumeError(UserError, RuntimeError):
    """The run to resume has no usable checkpoint; the message names the run and artifact."""


class CheckpointWriter:
    """Writes checkpoints into a scratch folder and logs them to the active run under `checkpoints/`."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="kiln-ckpt-"))
        # The files live on as run artifacts; the scratch copies go when the writer does (or at exit).
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)

    def save(self, name: str, state: dict[str, Any]) -> Path:
        path = self._dir / f"{name}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
        return path

    def local_path(self, name: str) -> Path:
        return self._dir / f"{name}.pt"


def load_checkpoint(run_id: str, name: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Download `checkpoints/<name>.pt` from `run_id` and load it."""
    artifact = f"{ARTIFACT_DIR}/{name}.pt"
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    except Exception as exc:  # MlflowException or OSError, depending on the artifact store
        raise ResumeError(f"cannot resume run {run_id!r}: no artifact {artifact!r} ({exc})") from None
    state: dict[str, Any] = torch.load(local, map_location=map_location, weights_only=False)
    return state
