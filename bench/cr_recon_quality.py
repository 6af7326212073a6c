"""cr_recon quality on the generated sample: val Pearson after a few CPU minutes of training.

    .venv/bin/python bench/cr_recon_quality.py                  # configs/cpu_small.yaml, 4 epochs
    .venv/bin/python bench/cr_recon_quality.py --epochs 2 --threads 2

Runs the real entry point (`train(cfg)`: trainer, checkpoints, ONNX export/check/registration) into a
throwaway sqlite store on the 4000-sample set from `data/spectra.py` (3600 train, doubled by the 180-degree
augmentation, 400 val). Prints the best val Pearson (per-spectrum correlation along the 30 bins, averaged),
val MSE, what always predicting the mean training spectrum scores, and the wall time. Target: Pearson >= 0.9.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click

from projects.cr_recon import data as crdata
from projects.cr_recon.train import load_config, mean_baseline_pearson, mean_spectrum, prepare, train

CONFIG = Path(__file__).resolve().parents[1] / "projects" / "cr_recon" / "configs" / "cpu_small.yaml"


@click.command()
@click.option("--config", "config_path", default=str(CONFIG), show_default=True, help="cr_recon YAML config.")
@click.option("--epochs", default="", help="Override the config's epochs.")
@click.option("--threads", default="", help="Override the config's num_threads (0 = one per core).")
def main(config_path: str, epochs: str, threads: str) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # one line per epoch instead of a progress bar
    cfg = load_config(config_path, {"epochs": epochs, "num_threads": threads, "model_name": "cr_recon_bench"})
    _, prepared, _, val_loader = prepare(cfg)
    baseline = mean_baseline_pearson(mean_spectrum(prepared, val_loader), val_loader)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        start = time.perf_counter()
        final = train(cfg)
        seconds = time.perf_counter() - start
    n_train = len(crdata.split_indices(len(prepared.bayer), cfg.train_ratio, cfg.seed)[0])
    print(f"model {cfg.model} {cfg.model_params[cfg.model]}, loss {cfg.loss}, {cfg.epochs} epochs, "
          f"{n_train * (2 if cfg.augment_180 else 1)} train samples/epoch, {len(val_loader.dataset)} val, "
          f"{cfg.num_threads or 'default'} thread(s)")  # fmt: skip
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"best val Pearson {final['best_val_pearson']:.4f} (mean-spectrum baseline {baseline:.4f}), "
          f"val MSE {final['best_val_mse']:.5f}, wall {seconds / 60:.1f} min, load average {load}")  # fmt: skip


if __name__ == "__main__":
    main()
