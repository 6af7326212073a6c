"""Train safety_detection on its bundled sample set for a fixed CPU budget and print mAP50 on the val split.

    .venv/bin/python bench/yolo_sample.py                      # 10 minutes of 2 cores, imgsz 128
    .venv/bin/python bench/yolo_sample.py --minutes 3 --clock wall

The budget is ultralytics' `time` argument: the epoch count and LR schedule are fitted to it after the
first epoch, so the run ends, fully annealed, when the budget is spent. With `--clock cpu` (the default)
ultralytics' clock is this process's CPU seconds divided by `--threads`, i.e. wall time on an idle machine
with that many cores, so a busy shared machine does not shrink the budget. The figure printed is
ultralytics' validation of best.pt on the sample's validation split (the 120 images `kiln data sample
safety` holds out). Runs against a throwaway sqlite store unless MLFLOW_TRACKING_URI is set.
"""

from __future__ import annotations

import os
import tempfile
import time
import types
from pathlib import Path

import click


@click.command()
@click.option("--minutes", type=float, default=10.0, show_default=True, help="training budget in minutes (see --clock)")
@click.option("--imgsz", type=int, default=128, show_default=True, help="training and validation image size")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads (the target machine has 2)")
@click.option("--clock", type=click.Choice(["cpu", "wall"]), default="cpu", show_default=True,
              help="budget in process CPU seconds / threads, or in wall seconds")  # fmt: skip
@click.option("--target", type=float, default=0.8, show_default=True, help="mAP50 the issue asks for")
def main(minutes: float, imgsz: int, batch: int, threads: int, clock: str, target: float) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of burning CPU time
    os.environ.setdefault("TQDM_DISABLE", "1")
    scratch = Path(tempfile.mkdtemp(prefix="kiln-bench-yolo-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{scratch / 'mlflow.db'}")
    import torch

    torch.set_num_threads(threads)
    from projects.yolo.train import YoloConfig, train

    if clock == "cpu":
        use_cpu_clock(threads)

    cfg = YoloConfig(
        preset="safety_detection", device="cpu", imgsz=imgsz, batch=batch, time=minutes / 60, epochs=1000, patience=0
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    final = train(cfg)
    wall, cpu = (time.perf_counter() - start) / 60, (time.process_time() - cpu_start) / 60
    ap50, ap = final.get("best/mAP50", float("nan")), final.get("best/mAP50-95", float("nan"))
    verdict = "meets" if ap50 >= target else "misses"
    print(
        f"safety sample, yolov8n.yaml from scratch, imgsz {imgsz}, {threads} threads, {minutes:g} min {clock} budget: "
        f"mAP50 {ap50:.3f}, mAP50-95 {ap:.3f} on the val split after {int(final['epochs_run'])} epochs "
        f"({wall:.1f} min wall, {cpu:.1f} CPU-min including start-up and export); {verdict} the {target} target"
    )


def use_cpu_clock(threads: int) -> None:
    """Make ultralytics' trainer time itself (epoch times, the `time` budget) in CPU seconds per thread."""
    import ultralytics.engine.trainer as trainer_module

    trainer_module.time = types.SimpleNamespace(time=lambda: time.process_time() / threads)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
