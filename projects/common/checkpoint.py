"""Checkpoints as run artifacts: `last` (full training state) and `best` (weights), each written atomically.

    python -m projects.edgnet.train --resume <run_id>   # continues from that run's last.pt

`last` holds everything resume needs: epoch, model, optimizer, scheduler, AMP scaler, early-stopping
state and the best score so far.

An upload can die half-way (a spot reclaim kills the job; an artifact proxy then keeps the bytes it got under
the name it was given). So no file is ever overwritten: each write uploads `checkpoints/<name>-<stamp>.pt` under
a new name, then a small pointer `checkpoints/<name>-<stamp>.json` naming that file with its size and SHA-256.
A reader takes the newest pointer that parses and whose file matches it, so it never sees a half-written file,
and a kill at any moment of an upload leaves the previous complete checkpoint in charge. Once a pointer is up,
checkpoints older than the one before it are deleted (the store keeps at most two of each name, plus any
half-written leftover of a killed upload until the next write). Runs from before this scheme have a plain
`checkpoints/<name>.pt`, which is read when no pointer exists.

The same scheme holds any file, not only torch state: `log_checkpoint_file` and `fetch_checkpoint_file` publish and
read one (skinmodel keeps its XGBoost booster as `checkpoints/booster-<stamp>.ubj`). torch is imported only by what
reads or writes torch state, so a family without torch does not pay for importing it.

Writing both files every epoch cost about 50 ms an epoch on a 0.5M-parameter model, 5% of a short epoch (bench/
train_overhead.py). So while training runs the writer writes at most every `WRITE_EVERY_SECONDS`: a `best` that comes
sooner is kept as an in-memory copy of its tensors, a `last` is simply written later (it is the latest state either
way), and `flush()` at the end of training writes whatever is pending. A crash loses at most that much progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

from core.errors import UserError
from core.settings import read_env

if TYPE_CHECKING:
    import torch

ARTIFACT_DIR = "checkpoints"
WRITE_EVERY_SECONDS = 30.0  # while training runs, checkpoints reach the run at most this often; always at the end
KEEP = 2  # complete checkpoints of each name kept in the run: the newest and the one before it
_STAMPED = re.compile(r"^(?P<name>[a-z_]+)-(?P<stamp>\d{20})\.(?P<ext>[a-z]+)$")  # ext json: the pointer


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
        """Upload `state` as the newest `name` checkpoint (`log_checkpoint_file`); keep a local copy."""
        import torch

        path = self._dir / f"{name}.tmp"
        torch.save(state, path)
        log_checkpoint_file(path, name, "pt")
        path.replace(self.local_path(name))
        return self.local_path(name)

    def local_path(self, name: str) -> Path:
        """This session's newest `name` checkpoint on local disk (it may not exist yet)."""
        return self._dir / f"{name}.pt"


def log_checkpoint_file(file: Path, name: str, ext: str) -> None:
    """Log `file` to the active run as its newest `name` checkpoint: first under a new name
    (`checkpoints/<name>-<stamp>.<ext>`), then its pointer; then drop checkpoints older than the previous one.
    `file` itself is left where it is."""
    if ext == "json" or not re.fullmatch(r"[a-z]+", ext):
        raise ValueError(f"checkpoint extension {ext!r}: lower-case letters, and not json (the pointers' own)")
    stamp = f"{time.time_ns():020d}"  # sorts by time; a resumed session never reuses a killed one's name
    with tempfile.TemporaryDirectory(prefix="kiln-ckpt-") as tmp:
        path = Path(tmp) / f"{name}-{stamp}.{ext}"
        try:
            os.link(file, path)  # no copy of a large checkpoint where the file system allows
        except OSError:
            shutil.copyfile(file, path)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
        pointer = Path(tmp) / f"{name}-{stamp}.json"
        pointer.write_text(json.dumps({"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}))
        mlflow.log_artifact(str(pointer), artifact_path=ARTIFACT_DIR)
    _prune(name)


def _prune(name: str) -> None:
    """Delete this name's checkpoints older than the KEEP newest complete ones (and stale half-written ones)."""
    run = mlflow.active_run()
    if run is None:
        return
    listed = [f.path.rsplit("/", 1)[-1] for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, ARTIFACT_DIR)]
    pointers = sorted((f for f in listed if _stamped(f, name, "json")), reverse=True)
    if len(pointers) < KEEP:
        return
    oldest_kept = pointers[KEEP - 1].removesuffix(".json")
    stale = [f for f in listed if _stamped(f, name) and f < oldest_kept]
    if stale:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(run.info.artifact_uri)
        for file in stale:
            repo.delete_artifacts(f"{ARTIFACT_DIR}/{file}")  # type: ignore[no-untyped-call]


def _snapshot(value: Any) -> Any:
    """A copy of every tensor in a (nested) state dict; other values are shared."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_snapshot(v) for v in value)
    return value


def _stamped(file: str, name: str, ext: str | None = None) -> bool:
    """Whether `file` is a stamped checkpoint (or, ext "json", pointer) of `name`; any extension when ext is None."""
    match = _STAMPED.match(file)
    return match is not None and match["name"] == name and ext in (None, match["ext"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def complete_checkpoints(run_id: str, name: str = "last") -> list[str]:
    """The pointer files of `name` in the run, newest first (without checking them); [] when there are none."""
    listed = mlflow.MlflowClient().list_artifacts(run_id, ARTIFACT_DIR)
    return sorted((f.path.rsplit("/", 1)[-1] for f in listed if _stamped(f.path.rsplit("/", 1)[-1], name, "json")),
                  reverse=True)  # fmt: skip


def has_checkpoint(run_id: str, name: str = "last") -> bool:
    """Whether the run holds a `name` checkpoint a resume could read (a pointer, or an old-style plain file)."""
    listed = {f.path.rsplit("/", 1)[-1] for f in mlflow.MlflowClient().list_artifacts(run_id, ARTIFACT_DIR)}
    return f"{name}.pt" in listed or any(_stamped(f, name, "json") for f in listed)


def load_checkpoint(run_id: str, name: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The newest complete `name` checkpoint of `run_id`: the newest pointer whose file has its size and SHA-256."""
    import torch

    with tempfile.TemporaryDirectory(prefix="kiln-resume-") as tmp:
        pointers = _pointers(run_id, name)
        local = _newest_verified(run_id, pointers, Path(tmp))
        if local is not None:
            state: dict[str, Any] = torch.load(local, map_location=map_location, weights_only=False)
            return state
        return _load_plain(run_id, name, map_location, skipped=len(pointers))


def fetch_checkpoint_file(run_id: str, name: str, dst: Path) -> Path:
    """The newest complete `name` checkpoint file of `run_id`, downloaded under `dst` (any format; see
    `log_checkpoint_file`). ResumeError, naming the run, when it holds none."""
    pointers = _pointers(run_id, name)
    local = _newest_verified(run_id, pointers, dst)
    if local is None:
        found = f"{len(pointers)} incomplete {name!r} checkpoint(s) and " if pointers else ""
        raise ResumeError(f"cannot resume run {run_id!r}: {found}no complete {name!r} checkpoint in {ARTIFACT_DIR}/")
    return local


def _pointers(run_id: str, name: str) -> list[str]:
    try:
        return complete_checkpoints(run_id, name)
    except Exception as exc:  # MlflowException or OSError, depending on the artifact store
        raise ResumeError(f"cannot resume run {run_id!r}: cannot list {ARTIFACT_DIR}/ ({exc})") from None


def _newest_verified(run_id: str, pointers: list[str], dst: Path) -> Path | None:
    for pointer in pointers:
        local = _verified(run_id, pointer, dst)
        if local is not None:
            return local
    return None


def _verified(run_id: str, pointer: str, dst: Path) -> Path | None:
    """The checkpoint `pointer` names, downloaded, when the pointer parses and the file matches it; else None."""
    try:
        meta = json.loads(Path(_download(run_id, pointer, dst)).read_text())
        local = Path(_download(run_id, str(meta["file"]), dst))
        if local.stat().st_size == int(meta["bytes"]) and _sha256(local) == meta["sha256"]:
            return local
    except Exception:  # noqa: BLE001 - a half-written pointer or file: the next older checkpoint is the answer
        return None
    return None


def _download(run_id: str, file: str, dst: Path) -> str:
    return str(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_DIR}/{file}", dst_path=str(dst))
    )


def _load_plain(run_id: str, name: str, map_location: str | torch.device, skipped: int) -> dict[str, Any]:
    """A run written before atomic checkpoints: its plain `checkpoints/<name>.pt`."""
    artifact = f"{ARTIFACT_DIR}/{name}.pt"
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    except Exception as exc:  # MlflowException or OSError, depending on the artifact store
        found = f"{skipped} incomplete {name} checkpoint(s) and " if skipped else ""
        raise ResumeError(f"cannot resume run {run_id!r}: {found}no complete {name!r} checkpoint ({exc})") from None
    import torch

    state: dict[str, Any] = torch.load(local, map_location=map_location, weights_only=False)
    return state
