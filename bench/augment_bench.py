"""Training-input throughput of EDGNet's data set with augmentation off, the family's own, and a declared
albumentations pipeline: images/s of `DrawingDataset[i]` (decode done, augment + to-tensor), CPU time.

    .venv/bin/python bench/augment_bench.py [--size 256] [--images 64] [--rounds 3]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
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


if __name__ == "__main__":
    main()
