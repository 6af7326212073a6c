"""Overhead of kiln's tracked fit loop against a bare PyTorch loop on the same EDGNet model and data.

    python bench/train_overhead.py --variant edgnet --img-size 128 --epochs 2 --repeats 3

Both sides train the same initial weights on the same batches with the same optimizer, schedule and
clipping, and both evaluate once per epoch. kiln's side adds what a real run does: the MLflow run (sqlite),
async per-epoch metrics, system metrics, tqdm, and `last`/`best` checkpoints logged as artifacts. The two
alternate in one process (bare, kiln, bare, kiln, ...) and the ratio of total times is printed, in wall time
and in process CPU time (all threads, so the async logging and system-metrics threads count against kiln).
CPU time is the steadier figure on a machine that other work shares.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import click
import mlflow
import torch
from torch import nn
from torch.utils.data import DataLoader

from data.drawings import generate
from projects.common import tracking
from projects.common.trainer import FitConfig, Task, Trainer, evaluate, make_optimization
from projects.edgnet import data as edgdata
from projects.edgnet.losses import DiceBCELoss, IoU
from projects.edgnet.model import create_model


def loaders(folder: Path, img_size: int, batch_size: int) -> tuple[DataLoader, DataLoader]:
    samples = edgdata.load_folder(folder, img_size)
    train_s, val_s = edgdata.split(samples, 0.2, 0)
    train = DataLoader(edgdata.DrawingDataset(train_s, True, 0), batch_size, shuffle=True)
    return train, DataLoader(edgdata.DrawingDataset(val_s, False), batch_size)


Timing = tuple[float, float]  # (wall seconds, process CPU seconds)


def _now() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    wall, cpu = _now()
    return wall - start[0], cpu - start[1]


def bare_loop(model: nn.Module, train: DataLoader, val: DataLoader, cfg: FitConfig) -> Timing:
    """The same optimisation and evaluation with nothing around it."""
    device = torch.device("cpu")
    opt = make_optimization(model, cfg, len(train), device)
    loss_fn = DiceBCELoss()
    start = _now()
    for _ in range(cfg.epochs):
        model.train()
        for x, y in train:
            opt.optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.optimizer.step()
            opt.scheduler.step()
        evaluate(Task(model, loss_fn, train, val, [IoU()]), device)
    return _since(start)


def kiln_loop(model: nn.Module, train: DataLoader, val: DataLoader, cfg: FitConfig) -> Timing:
    """kiln's Trainer inside a tracked MLflow run, run setup and teardown included."""
    start = _now()
    with tracking.start_run(run_name="overhead-bench"):
        tracking.log_config(cfg)
        Trainer(Task(model, DiceBCELoss(), train, val, [IoU()]), cfg, torch.device("cpu")).fit()
    return _since(start)


@click.command()
@click.option("--variant", default="edgnet", show_default=True, help="edgnet or edgnet_large")
@click.option("--img-size", default=128, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--images", default=40, show_default=True, help="generated drawings (80% train)")
@click.option("--epochs", default=2, show_default=True, help="epochs per timed fit")
@click.option("--repeats", default=3, show_default=True, help="timed fits per side, alternating")
def main(variant: str, img_size: int, batch_size: int, images: int, epochs: int, repeats: int) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TQDM_DISABLE", "0")
    tmp = Path(tempfile.mkdtemp(prefix="kiln-overhead-"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=str(tmp / "art")))
    train, val = loaders(generate(tmp / "drawings", images, img_size, 0), img_size, batch_size)
    torch.manual_seed(0)
    initial = create_model(variant)
    cfg = FitConfig(epochs=epochs, lr=1e-3, patience=0, monitor="val_iou", mode="max")
    bare_loop(copy.deepcopy(initial), train, val, FitConfig(epochs=1))  # warm-up: allocator, kernels
    bare, kiln = [], []
    for _ in range(repeats):
        torch.manual_seed(1)
        bare.append(bare_loop(copy.deepcopy(initial), train, val, cfg))
        torch.manual_seed(1)
        kiln.append(kiln_loop(copy.deepcopy(initial), train, val, cfg))
    steps = epochs * len(train)
    print(f"model {variant} @ {img_size}px, batch {batch_size}, {steps} steps + {epochs} evals per fit, {repeats} fits")
    for i, clock in enumerate(("wall", "CPU")):
        b, k = [t[i] for t in bare], [t[i] for t in kiln]
        ratio = sum(k) / sum(b)
        per_step = 1000 * statistics.median(b) / steps
        print(
            f"{clock:>4}: bare median {statistics.median(b):.2f}s ({per_step:.0f} ms/step), "
            f"kiln median {statistics.median(k):.2f}s; kiln/bare = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)"
        )


if __name__ == "__main__":
    main()
