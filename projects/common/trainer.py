"""The PyTorch fit loop every torch family shares: AdamW, warmup-cosine, clipping, AMP, checkpoints, resume.

    python -m projects.edgnet.train --epochs 2 --max-train-batches 4

A family supplies the model, loss, metrics and loaders in a `Task`; `fit` runs the epochs inside the active
MLflow run, logs `train_loss`, `val_loss`, the task metrics, `lr`, `epoch_seconds` and `samples_per_second`
with `step=epoch`, keeps `checkpoints/last.pt` and `checkpoints/best.pt`, and stops early on `patience`.
After each epoch the metrics go to the trainer's epoch listeners (`Trainer(..., listeners=[...])` or
`add_listener`, see `projects.common.callbacks`); one may stop training after that epoch (`FitState.stopped_by`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mlflow
import torch
from torch import nn
from tqdm import tqdm

from projects.common import callbacks, distributed, tracking
from projects.common.checkpoint import CheckpointWriter, load_checkpoint
from projects.common.runtime import autocast, to_device, uses_amp
from projects.common.schedule import warmup_cosine

Batch = tuple[torch.Tensor, torch.Tensor]


class Metric(Protocol):
    """Accumulates over a whole validation pass, so the score is not a mean of per-batch ratios."""

    name: str

    def reset(self) -> None: ...

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> float: ...


@dataclass
class FitConfig:
    epochs: int = 10  # passes over the training set
    lr: float = 1e-3  # peak AdamW learning rate, reached after warmup
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warmup length, in epochs (fractions allowed)
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    patience: int = 15  # epochs without improvement of `monitor` before stopping; 0 never stops early
    max_train_batches: int = 0  # cap on batches per epoch (0 = all); for smoke tests
    monitor: str = "val_loss"  # metric that picks best.pt and drives early stopping
    mode: str = "min"  # "min" or "max" for `monitor`


@dataclass
class Task:
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_loader: Iterable[Batch]
    val_loader: Iterable[Batch]
    metrics: Sequence[Metric] = ()
    # Called after each epoch's validation with (epoch, model); families log sample images here.
    on_epoch_end: Callable[[int, nn.Module], None] | None = None


@dataclass
class FitState:
    epoch: int = 0  # last completed epoch (1-based); 0 before training
    best_score: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    stopped_by: str = ""  # the reason a listener gave for stopping training; "" when none did


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def make_optimization(model: nn.Module, cfg: FitConfig, steps_per_epoch: int, device: torch.device) -> Optimization:
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    factor = warmup_cosine(math.ceil(cfg.warmup_epochs * steps_per_epoch), total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scaler = torch.amp.GradScaler(device.type, enabled=uses_amp(device))
    return Optimization(optimizer, scheduler, scaler)


def _limited(loader: Iterable[Batch], limit: int) -> Iterable[Batch]:
    for i, batch in enumerate(loader):
        if limit and i >= limit:
            return
        yield batch


def steps_in_epoch(loader: Any, limit: int) -> int:
    n = len(loader)
    return min(n, limit) if limit else n


def train_one_epoch(
    task: Task, opt: Optimization, cfg: FitConfig, device: torch.device, epoch: int
) -> dict[str, float]:
    """One pass over the training set; returns train_loss and the sample count."""
    task.model.train()
    total, count = 0.0, 0
    bar = tqdm(
        _limited(task.train_loader, cfg.max_train_batches),
        total=steps_in_epoch(task.train_loader, cfg.max_train_batches),
        desc=f"Epoch {epoch}/{cfg.epochs}",
        leave=False,
        # No bar when stderr is not a terminal (a job log), nor on ranks other than 0: the epoch's line follows.
        disable=None if distributed.world().is_main else True,
    )
    for inputs, targets in bar:
        inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
        loss = _step(task, opt, cfg, device, inputs, targets)
        total += loss * len(inputs)
        count += len(inputs)
        bar.set_postfix(loss=f"{loss:.4f}")
    return {"train_loss": total / max(count, 1), "samples": float(count)}


def _step(
    task: Task, opt: Optimization, cfg: FitConfig, device: torch.device, x: torch.Tensor, y: torch.Tensor
) -> float:
    opt.optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        loss = task.loss_fn(task.model(x), y)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss.item()}; lower --lr or check the data")
    opt.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
    if cfg.grad_clip > 0:
        opt.scaler.unscale_(opt.optimizer)
        nn.utils.clip_grad_norm_(task.model.parameters(), cfg.grad_clip)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(task: Task, device: torch.device, world: distributed.World | None = None) -> dict[str, float]:
    """val_loss and every task metric over the whole validation set; with `world`, each rank holds a shard and
    the sums are reduced over the ranks."""
    task.model.eval()
    for metric in task.metrics:
        metric.reset()
    total, count = 0.0, 0.0  # floats: the ranks' sums come back as floats
    for inputs, targets in task.val_loader:
        inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
        with autocast(device):
            outputs = task.model(inputs)
            loss = task.loss_fn(outputs, targets)
        total += float(loss) * len(inputs)
        count += len(inputs)
        for metric in task.metrics:
            metric.update(outputs.float(), targets)
    if world is not None and world.active:
        total, count = world.sum(total, count)
        for metric in task.metrics:
            world.reduce_metric(metric)
    results = {"val_loss": total / max(count, 1)}
    results.update({m.name: m.compute() for m in task.metrics})
    return results


def _improved(score: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return score < best if mode == "min" else score > best


class Trainer:
    """Runs `fit` for one Task inside the active MLflow run."""

    def __init__(
        self, task: Task, cfg: FitConfig, device: torch.device, listeners: Iterable[callbacks.EpochListener] = ()
    ) -> None:
        if cfg.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {cfg.mode!r}")
        self.task, self.cfg, self.device = task, cfg, device
        task.model.to(device)
        if device.type == "cuda":
            task.model.to(memory_format=torch.channels_last)
        # Data-parallel: train through DDP, keep the bare module for checkpoints, validation and export.
        self.world = distributed.world()
        self.train_task = dataclasses.replace(task, model=distributed.wrap(task.model, device))
        steps = steps_in_epoch(task.train_loader, cfg.max_train_batches)
        self.opt = make_optimization(task.model, cfg, steps, device)
        self.state = FitState()
        self.writer = CheckpointWriter()
        self.stop_request: callbacks.StopRequest | None = None  # set when a listener stopped training
        self.listeners = list(listeners)  # told of every epoch on rank 0 (projects.common.callbacks)

    def add_listener(self, listener: callbacks.EpochListener) -> None:
        """Tell `listener` of every epoch from now on (as ultralytics' `add_callback`)."""
        self.listeners.append(listener)

    def resume_from(self, run_id: str) -> None:
        """Restore model, optimizer, scheduler, scaler and loop state from `run_id`'s last checkpoint."""
        ckpt = load_checkpoint(run_id, "last", map_location=self.device)
        self.task.model.load_state_dict(ckpt["model"])
        self.opt.optimizer.load_state_dict(ckpt["optimizer"])
        self.opt.scheduler.load_state_dict(ckpt["scheduler"])
        self.opt.scaler.load_state_dict(ckpt["scaler"])
        self.state = FitState(**ckpt["fit_state"])
        if self.world.is_main:  # every rank loads the same checkpoint; only rank 0 logs
            self._log_unlogged_epochs(run_id)

    def _log_unlogged_epochs(self, run_id: str) -> None:
        """Epochs in last.pt whose metrics the killed session never logged (they follow the checkpoint)."""
        logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, self.cfg.monitor)}
        for row in self.state.history:
            if int(row["epoch"]) not in logged:
                tracking.log_epoch({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def fit(self) -> FitState:
        # A run that stopped (early, or by a listener) is finished: resuming it only exports (kiln tune and kiln cv
        # register a trial or fold this way, from its own run, without training it again).
        first = self.cfg.epochs + 1 if self.state.stopped_early or self.state.stopped_by else self.state.epoch + 1
        for epoch in range(first, self.cfg.epochs + 1):
            metrics = self._run_epoch(epoch)
            self._track(epoch, metrics)
            # Rank 0 hears the listeners and decides; every rank stops together on its word.
            request = callbacks.report(epoch, metrics, self.listeners) if self.world.is_main else None
            self.stop_request, stop_early = self.world.broadcast((request, self._should_stop()))
            if self.stop_request is not None:
                self.state.stopped_by = self.stop_request.reason
                break
            if stop_early:
                self.state.stopped_early = True
                if self.world.is_main:
                    cfg = self.cfg
                    print(f"Early stopping at epoch {epoch}: no {cfg.monitor} improvement in {cfg.patience} epochs")
                break
        if self.world.is_main:
            if first <= self.cfg.epochs and (self.state.stopped_early or self.state.stopped_by):
                self.writer.save("last", self._full_state())  # last.pt records the stop
            self.writer.flush()  # checkpoints are written at most every WRITE_EVERY_SECONDS while training runs
        return self.state

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        start = time.perf_counter()
        distributed.set_epoch(self.task.train_loader, epoch)
        train = train_one_epoch(self.train_task, self.opt, self.cfg, self.device, epoch)
        train_seconds = time.perf_counter() - start
        loss_sum, samples = self.world.sum(train["train_loss"] * train["samples"], train["samples"])
        train = {"train_loss": loss_sum / max(samples, 1), "samples": samples}
        metrics = {"train_loss": train["train_loss"], **evaluate(self.task, self.device, self.world)}
        metrics["lr"] = self.opt.optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = time.perf_counter() - start
        metrics["samples_per_second"] = train["samples"] / max(train_seconds, 1e-9)
        return metrics

    def _track(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.cfg.monitor not in metrics:
            raise KeyError(f"monitor metric {self.cfg.monitor!r} not produced; have {sorted(metrics)}")
        state = self.state
        state.epoch = epoch
        state.history.append({"epoch": float(epoch), **metrics})
        score = metrics[self.cfg.monitor]
        improved = _improved(score, state.best_score, self.cfg.mode)
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
        else:
            state.bad_epochs += 1
        if not self.world.is_main:  # the other ranks keep the loop state (early stopping) and log nothing
            return
        summary = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"Epoch {epoch}/{self.cfg.epochs}: {summary}", flush=True)
        if improved:
            self.writer.save("best", {"model": self.task.model.state_dict(), "epoch": epoch, "metrics": metrics})
        if self.task.on_epoch_end is not None and callbacks.figures_wanted():
            self.task.on_epoch_end(epoch, self.task.model)
        self.writer.save("last", self._full_state())
        # Metrics after last.pt: a session killed in between (a spot reclaim) resumes past this epoch without
        # running it twice, and resume_from logs the metrics it missed from the checkpoint's history.
        tracking.log_epoch(metrics, epoch)

    def _full_state(self) -> dict[str, Any]:
        return {
            "model": self.task.model.state_dict(),
            "optimizer": self.opt.optimizer.state_dict(),
            "scheduler": self.opt.scheduler.state_dict(),
            "scaler": self.opt.scaler.state_dict(),
            "fit_state": vars(self.state).copy(),
        }

    def _should_stop(self) -> bool:
        return self.cfg.patience > 0 and self.state.bad_epochs >= self.cfg.patience

    def load_best(self) -> None:
        """Load best.pt's weights into the model (used before export)."""
        path = self.writer.local_path("best")
        if path.exists():
            best = torch.load(path, map_location=self.device, weights_only=False)
            self.task.model.load_state_dict(best["model"])
        elif self.state.epoch:  # resumed without a new best this session: fetch it from the run
            run = mlflow.active_run()
            if run is not None:
                self.task.model.load_state_dict(load_checkpoint(run.info.run_id, "best", self.device)["model"])


def fit_replica(task: Task, cfg: FitConfig, device: torch.device, resume: str = "") -> FitState:
    """A data-parallel rank other than 0: the same fit, in step with rank 0, from the same checkpoint when
    resuming; it opens no MLflow run and logs nothing."""
    trainer = Trainer(task, cfg, device)
    if resume:
        trainer.resume_from(resume)
    return trainer.fit()
