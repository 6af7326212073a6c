"""Train EDGNet (UNet line-work segmentation) inside an MLflow run, then export, check and register ONNX.

    mlflow run . -e edgnet --env-manager local -P epochs=3 -P img_size=128
    python -m projects.edgnet.train --variant edgnet --epochs 3 --img-size 128

With no `--data`, a sample of synthetic engineering drawings is generated (see `data/drawings.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import torch
from torch.utils.data import DataLoader

from core.contract import ModelContract, Preprocess, SegmentationPost
from core.errors import DatasetError
from data.drawings import ensure_sample
from projects.common import augment, console, datacache, distributed, registration, tracking
from projects.common.callbacks import EpochListener, figures_wanted, wants_export
from projects.common.config import entry_point
from projects.common.datasets import data_folder, log_data_input
from projects.common.onnx_export import export_checked
from projects.common.plots import save_loss_curve
from projects.common.runtime import pick_device, seed_everything
from projects.common.segdata import MaskDataset, Sample
from projects.common.segtrain import baseline_test, fit_config, log_overlays, trivial_baseline
from projects.common.trainer import FitState, Task, Trainer, fit_replica
from projects.edgnet import data as edgdata
from projects.edgnet.config import FAMILY as FAMILY
from projects.edgnet.config import RANKING as RANKING
from projects.edgnet.config import EDGNetConfig as EDGNetConfig
from projects.edgnet.losses import DiceBCELoss, IoU
from projects.edgnet.model import MODELS, count_parameters, create_model


def _check(cfg: EDGNetConfig) -> None:
    if cfg.variant not in MODELS:
        raise DatasetError(f"unknown variant {cfg.variant!r}; known: {sorted(MODELS)}")
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "img_size": cfg.img_size, "lr": cfg.lr}
    for name, value in positive.items():
        if value <= 0:
            raise DatasetError(f"{name} must be > 0, got {value}")


def resolve_data(cfg: EDGNetConfig) -> Path:
    if cfg.data:
        return data_folder(cfg.data)  # a folder, or dataset:NAME@vN fetched and verified once
    # Drawn at the training size, so the line masks are exact at that resolution (no resampling).
    return ensure_sample(cfg.num_samples, cfg.img_size, cfg.seed)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is not None:  # fresh augmentation stream per worker and per epoch
        cast(MaskDataset, info.dataset).rng = np.random.default_rng(torch.initial_seed() % 2**32)


def make_loaders(cfg: EDGNetConfig, folder: Path) -> tuple[DataLoader[Any], DataLoader[Any], list[Sample]]:
    key = ("edgnet", str(folder.resolve()), cfg.img_size, cfg.skip_bad)  # a study's trials decode the folder once
    samples = datacache.shared(key, lambda: edgdata.load_folder(folder, cfg.img_size, skip_bad=cfg.skip_bad))
    train_s, val_s = edgdata.split(samples, cfg.val_fraction, cfg.seed)
    pin = torch.cuda.is_available()
    common: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": pin, "worker_init_fn": _worker_init}
    train_set = edgdata.DrawingDataset(train_s, True, cfg.seed)
    augment.apply_to(train_set, cfg.augment, (cfg.img_size, cfg.img_size))  # a bad `augment` fails before any run
    train = DataLoader(train_set, cfg.batch_size, shuffle=True, **common)
    val = DataLoader(edgdata.DrawingDataset(val_s, False), cfg.batch_size, shuffle=False, **common)
    return train, val, val_s


def contract(cfg: EDGNetConfig, size_multiple: int = 1) -> ModelContract:
    """Gray, stretched to img_size, (x / 255 - MEAN) / STD; sigmoid logits thresholded at 0.5."""
    pre = Preprocess(color="gray", size=(cfg.img_size, cfg.img_size), resize="stretch", mean=(edgdata.MEAN,),
                     std=(edgdata.STD,), size_multiple=size_multiple)  # fmt: skip
    return ModelContract(task="segmentation", family="edgnet", preprocess=pre, postprocess=SegmentationPost(),
                         ranking=RANKING)  # fmt: skip


def export_and_register(
    cfg: EDGNetConfig, model: torch.nn.Module, val_batch: torch.Tensor, register: bool = True
) -> int | None:
    """Export best weights to ONNX, check them on a real val batch (also the drift reference profile), log and
    (when `register`) register. Returns the version, None when not registered."""
    contract_ = contract(cfg, 2 ** int(getattr(model, "depth", 0)))
    return export_checked(model, val_batch, register, model_name=cfg.model_name or cfg.variant, contract=contract_,
                          profile=True)  # fmt: skip


def _log_run_context(
    cfg: EDGNetConfig, folder: Path, n_train: int, n_val: int, n_params: int, baseline: tuple[float, str]
) -> None:
    tracking.log_config(cfg, extra={"num_parameters": n_params})
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    profile = {"images": n_train + n_val, "train": n_train, "val": n_val, "masks": (folder / "masks").is_dir()}
    if log_data_input(folder) is None:  # a dataset version is recorded as NAME@vN with its digest
        digest = datacache.shared(("digest", str(folder.resolve())), lambda: tracking.files_digest(files, folder))
        tracking.log_dataset(str(folder.resolve()), digest, folder.name, profile=profile)
    tracking.tag_family(
        "edgnet", RANKING, variant=cfg.variant, baseline=f"{baseline[0]:.6g}", baseline_kind=baseline[1]
    )


def _finish(
    cfg: EDGNetConfig, trainer: Trainer, state: FitState, val_loader: DataLoader[Any], val_s: list[Sample]
) -> dict[str, float]:
    trainer.load_best()
    model = trainer.task.model
    if figures_wanted():  # not for a trial or fold: its finishing pass draws them if it is the one kept
        if state.history:
            mlflow.log_figure(save_loss_curve(state.history, extra=("val_iou",)), "loss_curve.png")
        log_overlays(model, val_s, edgdata.to_tensor, name="best")
    best = float(state.best_score or 0.0)
    final = {"best_val_iou": best}
    batch = next(iter(val_loader))[0]
    outcome = registration.record_and_register(
        cfg.register, RANKING, final, cfg.model_name or cfg.variant,
        lambda register: export_and_register(cfg, model, batch, register), best_epoch=state.best_epoch,
        allowed=wants_export(trainer.stop_request), evidence=lambda: baseline_test(model, val_loader, trainer.device),
    )  # fmt: skip
    tracking.set_note(
        f"{cfg.variant}: best val IoU {best:.3f} at epoch {state.best_epoch}/{cfg.epochs}; {outcome.note}"
    )
    return final


def train(cfg: EDGNetConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    """Train, track, export and register; returns the final metrics. `cfg.nproc` > 1 trains data-parallel."""
    _check(cfg)
    return distributed.run(_train, cfg, cfg.nproc, listeners=listeners)


def _train(cfg: EDGNetConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    with distributed.main_first():  # rank 0 generates the sample drawings, the others then read them
        folder = resolve_data(cfg)
    train_loader, val_loader, val_s = make_loaders(cfg, folder)  # bad files fail here, before any run
    model = create_model(cfg.variant, base_channels=cfg.base_channels, depth=cfg.depth)
    if cfg.img_size % 2**model.depth:
        raise DatasetError(f"img_size {cfg.img_size} must be a multiple of {2**model.depth} for {cfg.variant}")
    registration.check_mode(cfg.register)
    shards = distributed.shard(train_loader, cfg.seed, True), distributed.shard(val_loader, cfg.seed, False)
    if not distributed.world().is_main:
        fit_replica(Task(model, DiceBCELoss(), *shards, [IoU()]), fit_config(cfg), device, cfg.resume)
        return {}
    with tracking.start_run(run_name=cfg.variant, resume_run_id=cfg.resume or None):
        n_train = len(cast(MaskDataset, train_loader.dataset))
        console.header("edgnet", cfg.variant, f"{folder.name} ({n_train + len(val_s)} images)", str(device))
        baseline = trivial_baseline(val_loader)  # the best mask that ignores the image: the IoU to beat
        _log_run_context(cfg, folder, n_train, len(val_s), count_parameters(model), baseline)
        if figures_wanted():
            augment.log_dataset_augmentation(train_loader.dataset, cfg.augment, cfg.seed)
        task = Task(model, DiceBCELoss(), *shards, [IoU()], _overlay_hook(cfg, val_s))
        trainer = Trainer(task, fit_config(cfg), device, listeners)
        if cfg.resume:
            trainer.resume_from(cfg.resume)
        state = trainer.fit()
        final = _finish(cfg, trainer, state, val_loader, val_s)
        url = console.active_run_url()
    name = cfg.model_name or cfg.variant
    version = int(final["registered_version"]) if "registered_version" in final else None
    print(f"best val IoU {final['best_val_iou']:.4f} ({baseline[1]} baseline {baseline[0]:.4f}) -> "
          + (f"registered {name} v{version}" if version is not None else "not registered"))  # fmt: skip
    console.footer(url, name, version)
    return final


def _overlay_hook(cfg: EDGNetConfig, val_s: list[Sample]) -> Callable[[int, torch.nn.Module], None]:
    def hook(epoch: int, model: torch.nn.Module) -> None:
        if epoch == 1 or (cfg.overlay_every and epoch % cfg.overlay_every == 0):
            log_overlays(model, val_s, edgdata.to_tensor, name=f"epoch_{epoch:03d}")

    return hook


main = entry_point(EDGNetConfig, train, "Train an EDGNet variant and register it as ONNX.")


def smoke(folder: Path) -> dict[str, Any]:
    """Ten generated 64 px drawings, two epochs of a narrow UNet: the registry's smoke test."""
    from data.drawings import generate

    data = generate(folder / "drawings", count=10, size=64, seed=0)
    return {"data": str(data), "epochs": 2, "img_size": 64, "batch_size": 4, "patience": 0, "base_channels": 8,
            "overlay_every": 0, "register": "always"}  # fmt: skip


if __name__ == "__main__":
    main()
