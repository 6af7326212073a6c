"""Training-input throughput of EDGNet's data set with augmentation off, the family's own, and a declared
albumentations pipeline: images/s of `DrawingDataset[i]` (decode done, augment + to-tensor), CPU time.

    .venv/bin/python bench/augment_bench.py [--size 256] [--images 64] [--rounds 3]
    .venv/bin/python bench/augment_bench.py --train      # also: edgnet training epochs/s with each setting

`--train` trains a small edgnet (base_channels 16, 128 px, 64 drawings, 3 epochs, one thread) per setting
into a throwaway sqlite store, after one warm-up run that pays the one-time imports, and reports images per
CPU second of the whole run (epochs, validation and the ONNX export), all in one process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data.drawings import generate
from projects.common import augment
from projects.edgnet import data as edgdata

DECLARED = "{hflip: 0.5, rotate: 15, brightness: 0.3, contrast: 0.3, blur: 0.3, noise: 0.5, cutout: 0.5}"


def rate(dataset: edgdata.DrawingDataset, rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        for i in range(len(dataset)):
            dataset[i]
    return rounds * len(dataset) / max(time.process_time() - start, 1e-9)


def train_rate(spec: str, folder: Path, store: Path) -> float:
    """Training images per CPU second of a 3-epoch edgnet run with `augment=spec`."""
    import os

    import torch

    from projects.edgnet.train import EDGNetConfig, train

    torch.set_num_threads(1)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    cfg = EDGNetConfig(variant="edgnet", data=str(folder), epochs=3, img_size=128, batch_size=8, base_channels=16,
                       patience=0, overlay_every=0, register="never", augment=spec)  # fmt: skip
    start = time.process_time()
    train(cfg)
    n_train = len(list((folder / "images").iterdir())) * (1 - cfg.val_fraction)
    return 3 * n_train / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also time edgnet training with each setting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = generate(Path(tmp) / "drawings", count=args.images, size=args.size, seed=0)
        samples = edgdata.load_folder(folder, args.size)
    results = {}
    for name, spec in (("none", "none"), ("family default", "default"), ("albumentations declared", DECLARED)):
        dataset = edgdata.DrawingDataset(samples, True, 0)
        augment.apply_to(dataset, spec, (args.size, args.size))
        results[name] = rate(dataset, args.rounds)
    base = results["none"]
    print(f"{args.images} drawings at {args.size} px, {args.rounds} rounds, CPU time (process_time)")
    for name, value in results.items():
        print(f"{name:<26} {value:8.0f} images/s  {value / base:5.2f}x of none")
    if args.train:
        with tempfile.TemporaryDirectory() as tmp:
            folder = generate(Path(tmp) / "train", count=64, size=128, seed=0)
            train_rate("none", folder, Path(tmp) / "warmup.db")  # one-time imports (ONNX export, ...) paid here
            rates = {name: train_rate(spec, folder, Path(tmp) / f"{i}.db")
                     for i, (name, spec) in enumerate((("none", "none"), ("family default", "default"),
                                                       ("albumentations declared", DECLARED)))}  # fmt: skip
        print("edgnet training, 64 drawings at 128 px, 3 epochs, 1 thread, CPU time including validation")
        for name, value in rates.items():
            print(f"{name:<26} {value:8.1f} train images/s  {value / rates['none']:5.2f}x of none")


if __name__ == "__main__":
    main()
