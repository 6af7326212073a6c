"""Checkpoints as run artifacts: `checkpoints/last.pt` (full training state) and `checkpoints/best.pt` (weights).

    python -m projects.edgnet.train --resume <run_id>   # continues from that run's last.pt

`last.pt` holds everything resume needs: epoch, model, optimizer, scheduler, AMP scaler, early-stopping
state and the best score so far.

Writing both files every epoch cost about 50 ms an epoch on a 0.5M-parameter model, 5% of a short epoch (bench/
train_overhead.py). So while training runs the writer writes at most every `WRITE_EVERY_SECONDS`: a `best` that comes
sooner is kept as an in-memory copy of its tensors, a `last` is simply written later (it is the latest state either
way), and `flush()` at the end of training writes whatever is pending. A crash loses at most that much progress.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from core.errors import UserError
from core.settings import read_env

ARTIFACT_DIR = "checkpoints"
WRITE_EVERY_SECONDS = 30.0  # while training runs, checkpoints reach the run at most this often; always at the end


@dataclass(frozen=True)
class CheckpointSettings:
    # KILN_CHECKPOINT_EVERY_SECONDS: 0 writes every epoch, so that a killed job (a SageMaker spot reclaim) resumes
    # exactly where its metrics stop; the SageMaker container sets it (docs/sagemaker.md)
    checkpoint_every_seconds: float = WRITE_EVERY_SECONDS


class ResumeError(UserError, RuntimeError):
    """The run to resume has no usable checkpoint; the message names the run and artifact."""


class CheckpointWriter:
    """Writes checkpoints into a scratch folder and logs them to the active run under `checkpoints/`."""

    def __init__(self, every_seconds: float | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="kiln-ckpt-"))
        # The files live on as run artifacts; the scratch copies go when the writer does (or at exit).
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._every = read_env(CheckpointSettings).checkpoint_every_seconds if every_seconds is None else every_seconds
        self._written_at = time.monotonic()
        self._pending: dict[str, dict[str, Any]] = {}

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Write `name` now when the interval has passed (with anything pending), else keep it for later.

        `best` is kept as a copy of its tensors (training goes on changing them); `last` as given, because at
        the next write or at `flush()` the live state it points to is the newest state, which `last` stands for.
        """
        self._pending[name] = _snapshot(state) if name != "last" else state
        if time.monotonic() - self._written_at >= self._every:
            self.flush()

    def flush(self) -> None:
        """Write every pending checkpoint to the active run (training calls this when it ends)."""
        for name, state in list(self._pending.items()):
            self._write(name, state)
        self._pending.clear()
        self._written_at = time.monotonic()

    def _write(self, name: str, state: dict[str, Any]) -> Path:
        path = self._dir / f"{name}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
        return path

    def local_path(self, name: str) -> Path:
        return self._dir / f"{name}.pt"


def _snapshot(value: Any) -> Any:
    """A copy of every tensor in a (nested) state dict; other values are shared."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_snapshot(v) for v in value)
    return value


def load_checkpoint(run_id: str, name: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Download `checkpoints/<name>.pt` from `run_id` and load it."""
    artifact = f"{ARTIFACT_DIR}/{name}.pt"
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    except Exception as exc:  # MlflowException or OSError, depending on the artifact store
        raise ResumeError(f"cannot resume run {run_id!r}: no artifact {artifact!r} ({exc})") from None
    state: dict[str, Any] = torch.load(local, map_location=map_location, weights_only=False)
    return state
