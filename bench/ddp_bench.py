"""Data-parallel training on CPU: gloo DDP with 2 processes (1 thread each) against 1 process with 2 threads.

    OMP_NUM_THREADS=1 python bench/ddp_bench.py --family edgnet --seeds 0 1 2 --epochs 8
    python bench/ddp_bench.py --family microseg --seeds 0 --epochs 6 --img-size 32

Each seed trains the same recipe twice in a throwaway sqlite store: `nproc=1` with `torch.set_num_threads(2)`, then
`nproc=2` (each rank one thread), the same global batch. It prints, per pair, the best val IoU of each, their
difference, the wall time of the whole training call and the CPU seconds of this process and its children
(`resource.getrusage`), then the medians and the ratio DDP / one process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def settings(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    common = {"img_size": args.img_size, "num_samples": args.images, "epochs": args.epochs, "batch_size": args.batch,
              "lr": args.lr, "patience": 0, "register": "never", "seed": seed}  # fmt: skip
    if args.family == "edgnet":
        return {**common, "variant": "edgnet", "base_channels": 8, "depth": 2, "overlay_every": 0}
    return {**common, "variant": "micronet", "sample": "seg_objects", "num_test": 4}


def timed(family: str, overrides: dict[str, Any]) -> tuple[float, float, float]:
    import torch

    from projects.common.families import train_family

    torch.set_num_threads(2)  # the one-process baseline uses both cores; DDP ranks set one thread each
    wall, cpu = time.perf_counter(), cpu_seconds()
    final = train_family(family, overrides)
    return final["best_val_iou"], time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("edgnet", "microseg"), default="edgnet")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='kiln-ddp-bench-')}/mlflow.db"
    rows = []
    for seed in args.seeds:
        one = timed(args.family, settings(args, seed))
        two = timed(args.family, {**settings(args, seed), "nproc": 2})
        rows.append((seed, one, two))
        print(f"seed {seed}: best_val_iou 1 proc {one[0]:.4f}, 2 procs {two[0]:.4f} (diff {two[0] - one[0]:+.4f}); "
              f"wall {one[1]:.1f} -> {two[1]:.1f} s; CPU {one[2]:.1f} -> {two[2]:.1f} s", flush=True)  # fmt: skip
    diffs = [abs(t[0] - o[0]) for _, o, t in rows]
    wall = statistics.median(t[1] / o[1] for _, o, t in rows)
    cpu = statistics.median(t[2] / o[2] for _, o, t in rows)
    print(f"{args.family}: max |diff| {max(diffs):.4f}, median {statistics.median(diffs):.4f} over {len(rows)} "
          f"seeds; DDP / one process: wall x{wall:.2f}, CPU x{cpu:.2f} (medians)")  # fmt: skip


if __name__ == "__main__":
    main()
