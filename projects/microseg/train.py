"""Train a budgeted microseg variant inside an MLflow run, optionally distilled from a registered teacher; then
export, check and register ONNX.

    mlflow run . -e microseg --env-manager local -P variant=mininet -P sample=seg_cracks -P epochs=20
    python -m projects.microseg.train --variant hwnet --img-size 64 --teacher models:/edgnet@production
    kiln train microseg --set variant=micronet --set sample=seg_polyps

With no `--data`, a generated sample set (`--sample`, see data/segsets.py) is used, and a separate test set of
the same kind is drawn from seeds no training set uses: `test_iou` is measured on images the run never saw,
neither for training nor for picking the best epoch. A user's own `--data` gets a `test_iou` with `--test-data`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import mlflow
import torch
from torch.utils.data import DataLoader

from core.contract import ModelContract, Preprocess, SegmentationPost
from core.errors import ConfigError
from data.segsets import SEGSETS, ensure_segset
from projects.common import augment, console, datacache, distributed, registration, tracking
from projects.common.callbacks import EpochListener, figures_wanted, wants_export
from projects.common.config import entry_point
from projects.common.datasets import data_folder, log_data_input
from projects.common.onnx_export import export_checked
from projects.common.plots import save_loss_curve
from projects.common.runtime import pick_device, seed_everything
from projects.common.segtrain import baseline_test, fit_config, log_overlays, trivial_baseline
from projects.common.trainer import Batch, FitState, Task, Trainer, evaluate, fit_replica
from projects.edgnet.losses import DiceBCELoss, IoU
from projects.microseg import data as segdata
from projects.microseg.config import FAMILY as FAMILY
from projects.microseg.config import RANKING as RANKING
from projects.microseg.config import TEST_SEED as TEST_SEED
from projects.microseg.config import MicroSegConfig as MicroSegConfig
from projects.microseg.distill import DistilledLoader, DistillLoss, Teacher
from projects.microseg.model import MODELS, STRIDE, count_parameters, create_model


def _check(cfg: MicroSegConfig) -> None:
    if cfg.variant not in MODELS:
        raise ConfigError(f"unknown variant {cfg.variant!r}; known: {sorted(MODELS)}", field="variant")
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "img_size": cfg.img_size, "lr": cfg.lr}
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}", field=name)
    if cfg.img_size % STRIDE:
        raise ConfigError(f"img_size {cfg.img_size} must be a multiple of {STRIDE}", field="img_size")
    if cfg.max_params < 0:
        raise ConfigError(f"max_params must be >= 0, got {cfg.max_params}", field="max_params")
    if not cfg.data and cfg.sample not in SEGSETS:
        raise ConfigError(f"unknown sample {cfg.sample!r}; known: {sorted(SEGSETS)}", field="sample")


def resolve_data(cfg: MicroSegConfig) -> tuple[Path, Path | None]:
    """The training folder and the test folder (None when there is none)."""
    if cfg.data:  # a folder, or dataset:NAME@vN fetched and verified once
        return data_folder(cfg.data), data_folder(cfg.test_data) if cfg.test_data else None
    train = ensure_segset(cfg.sample, cfg.num_samples, cfg.img_size, cfg.seed)
    test = Path(cfg.test_data).expanduser() if cfg.test_data else None
    return train, test or ensure_segset(cfg.sample, cfg.num_test, cfg.img_size, TEST_SEED)


def make_loaders(cfg: MicroSegConfig, folder: Path) -> tuple[DataLoader[Any], DataLoader[Any], int]:
    key = ("microseg", str(folder.resolve()), cfg.img_size)  # a study's trials decode the folder once
    samples = datacache.shared(key, lambda: segdata.load_folder(folder, cfg.img_size))
    train_s, val_s = segdata.split(samples, cfg.val_fraction, cfg.seed)
    common: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": torch.cuda.is_available()}
    train_set = segdata.SegDataset(train_s, True, cfg.seed)
    augment.apply_to(train_set, cfg.augment, (cfg.img_size, cfg.img_size))  # a bad `augment` fails before any run
    train = DataLoader(train_set, cfg.batch_size, shuffle=True, **common)
    val = DataLoader(segdata.SegDataset(val_s, False), cfg.batch_size, shuffle=False, **common)
    return train, val, len(train_s)


def test_loader(cfg: MicroSegConfig, folder: Path) -> DataLoader[Any]:
    return DataLoader(segdata.SegDataset(segdata.load_folder(folder, cfg.img_size), False), cfg.batch_size)


def contract(cfg: MicroSegConfig) -> ModelContract:
    """RGB, stretched to img_size, (x / 255 - 0.5) / 0.5; sigmoid logits thresholded at 0.5; sides multiple of 8."""
    pre = Preprocess(color="rgb", size=(cfg.img_size, cfg.img_size), resize="stretch", mean=(segdata.MEAN,),
                     std=(segdata.STD,), size_multiple=STRIDE)  # fmt: skip
    return ModelContract(task="segmentation", family="microseg", preprocess=pre, postprocess=SegmentationPost(),
                         ranking=RANKING)  # fmt: skip


def model_name(cfg: MicroSegConfig) -> str:
    return cfg.model_name or f"microseg_{cfg.variant}"


def export_and_register(
    cfg: MicroSegConfig, model: torch.nn.Module, val_batch: torch.Tensor, register: bool = True
) -> int | None:
    """Export best weights to ONNX, check them on a real val batch, log and (when `register`) register.
    Returns the version, None when not registered."""
    return export_checked(model, val_batch, register, model_name=model_name(cfg), contract=contract(cfg))


def _log_run_context(
    cfg: MicroSegConfig, folder: Path, n_train: int, n_params: int, teacher: Teacher | None, baseline: tuple[float, str]
) -> None:
    tracking.log_config(cfg, extra={"num_parameters": n_params})
    mlflow.log_metrics({"num_parameters": float(n_params), "param_budget": float(cfg.max_params)})
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    profile = {"images": sum(1 for p in (folder / "images").rglob("*") if p.is_file()), "train": n_train}
    if log_data_input(folder) is None:  # a dataset version is recorded as NAME@vN with its digest
        digest = datacache.shared(("digest", str(folder.resolve())), lambda: tracking.files_digest(files, folder))
        tracking.log_dataset(str(folder.resolve()), digest, folder.name, profile=profile)
    extra = {"variant": cfg.variant, "dataset": cfg.sample if not cfg.data else folder.name}
    if teacher is not None:
        extra.update(teacher=f"{teacher.name} v{teacher.version}" if teacher.version else teacher.name)
        tracking.log_new_params({"teacher_name": teacher.name, "teacher_version": teacher.version or "file"})
    tracking.tag_family("microseg", RANKING, baseline=f"{baseline[0]:.6g}", baseline_kind=baseline[1], **extra)


def _test_metrics(trainer: Trainer, loader: DataLoader[Any] | None) -> dict[str, float]:
    if loader is None:
        return {}
    task = Task(trainer.task.model, trainer.task.loss_fn, (), loader, [IoU()])
    return {"test_iou": evaluate(task, trainer.device)["val_iou"]}


def _finish(cfg: MicroSegConfig, trainer: Trainer, state: FitState, val_loader: DataLoader[Any],
            test: DataLoader[Any] | None) -> dict[str, float]:  # fmt: skip
    trainer.load_best()
    if figures_wanted():  # not for a trial or fold: its finishing pass draws them if it is the one kept
        if state.history:
            mlflow.log_figure(save_loss_curve(state.history, extra=("val_iou",)), "loss_curve.png")
        val_set = cast(segdata.SegDataset, val_loader.dataset)
        log_overlays(trainer.task.model, val_set.samples, segdata.to_tensor, "best")
    final = {"best_val_iou": float(state.best_score or 0.0)}
    final.update(_test_metrics(trainer, test))
    final["num_parameters"] = float(count_parameters(trainer.task.model))
    batch = next(iter(val_loader))[0]
    outcome = registration.record_and_register(
        cfg.register, RANKING, final, model_name(cfg),
        lambda register: export_and_register(cfg, trainer.task.model, batch, register), best_epoch=state.best_epoch,
        allowed=wants_export(trainer.stop_request),
        evidence=lambda: baseline_test(trainer.task.model, val_loader, trainer.device),
    )  # fmt: skip
    test_text = f", test IoU {final['test_iou']:.3f}" if "test_iou" in final else ""
    tracking.set_note(f"{cfg.variant} ({int(final['num_parameters']):,} params): best val IoU "
                      f"{final['best_val_iou']:.3f}{test_text}; {outcome.note}")  # fmt: skip
    return final


def train(cfg: MicroSegConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    """Train, track, export and register; returns the final metrics. `cfg.nproc` > 1 trains data-parallel."""
    _check(cfg)
    create_model(cfg.variant, max_params=cfg.max_params)  # over budget: refused before any run, data or process
    return distributed.run(_train, cfg, cfg.nproc, listeners=listeners)


def _train(cfg: MicroSegConfig, listeners: tuple[EpochListener, ...] = ()) -> dict[str, float]:
    seed_everything(cfg.seed)  # before the model: its initial weights come from the global RNG
    model = create_model(cfg.variant, max_params=cfg.max_params)
    device = pick_device(cfg.device)
    with distributed.main_first():  # rank 0 generates the sample sets, the others then read them
        folder, test_folder = resolve_data(cfg)
    train_loader, val_loader, n_train = make_loaders(cfg, folder)  # bad files fail here, before any run
    test = test_loader(cfg, test_folder) if test_folder is not None else None
    teacher = Teacher.load(cfg.teacher) if cfg.teacher else None
    loss = DistillLoss(DiceBCELoss(), cfg.distill_weight, cfg.temperature)
    registration.check_mode(cfg.register)
    train_shard: Iterable[Batch] = distributed.shard(train_loader, cfg.seed, True)
    val_shard = distributed.shard(val_loader, cfg.seed, False)
    if teacher is not None:
        train_shard = DistilledLoader(train_shard, teacher)
    if not distributed.world().is_main:
        fit_replica(Task(model, loss, train_shard, val_shard, [IoU()]), fit_config(cfg), device, cfg.resume)
        return {}
    with tracking.start_run(run_name=cfg.variant, resume_run_id=cfg.resume or None):
        console.header("microseg", cfg.variant, f"{folder.name} ({n_train} train images)", str(device))
        baseline = trivial_baseline(val_loader)  # the best mask that ignores the image: the IoU to beat
        _log_run_context(cfg, folder, n_train, count_parameters(model), teacher, baseline)
        if figures_wanted():
            augment.log_dataset_augmentation(train_loader.dataset, cfg.augment, cfg.seed)
        trainer = Trainer(Task(model, loss, train_shard, val_shard, [IoU()]), fit_config(cfg), device, listeners)
        if cfg.resume:
            trainer.resume_from(cfg.resume)
        final = _finish(cfg, trainer, trainer.fit(), val_loader, test)
        url = console.active_run_url()
    version = int(final["registered_version"]) if "registered_version" in final else None
    test_text = f", test IoU {final['test_iou']:.4f}" if "test_iou" in final else ""
    print(f"{cfg.variant}: {int(final['num_parameters']):,} params, best val IoU {final['best_val_iou']:.4f}"
          f"{test_text} ({baseline[1]} baseline {baseline[0]:.4f}) -> "
          + (f"{model_name(cfg)} v{version}" if version is not None else "not registered"))  # fmt: skip
    console.footer(url, model_name(cfg), version)
    return final


main = entry_point(MicroSegConfig, train, "Train a budgeted microseg variant (optionally distilled) and register it.")


def smoke(folder: Path) -> dict[str, Any]:
    """Twelve generated 32 px objects, two epochs of the smallest variant: the registry's smoke test."""
    from data.segsets import generate

    data = generate("seg_objects", folder / "seg_objects", count=12, size=32, seed=0)
    return {"variant": "micronet", "data": str(data), "epochs": 2, "img_size": 32, "batch_size": 4, "patience": 0,
            "register": "always"}  # fmt: skip


if __name__ == "__main__":
    main()
