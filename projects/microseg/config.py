"""microseg's config and family registration: light (no torch), so `kiln train microseg --help` starts fast.

    kiln train microseg --help

`projects/microseg/train.py` re-exports `MicroSegConfig` and does the training; the family names its functions
with `lazy(...)`, so that module (and torch) is imported only when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contract import Ranking
from data.segsets import SEGSETS
from projects.common.config import cfg_field, register_field
from projects.common.families import Family, lazy, register_family

RANKING = Ranking("best_val_iou", "max")  # val IoU of best.pt, the exported weights, logged once
TEST_SEED = 1_000_000  # generated test sets use this seed: no training set (seed = --seed) shares an image


@dataclass
class MicroSegConfig:
    variant: str = cfg_field("mininet", "model variant: micronet, hwnet, mininet (<10k params) or mininet_50k")
    max_params: int = cfg_field(10_000, "parameter budget; a bigger model is refused when built; 0 = none")
    data: str = cfg_field("", "folder with images/ and masks/, or dataset:NAME@vN; empty = the --sample set")
    sample: str = cfg_field("seg_objects", "generated set used when --data is empty: " + ", ".join(sorted(SEGSETS)))
    test_data: str = cfg_field("", "held-out images/ + masks/ for test_iou; empty = a generated test set "
                                   "(only when --data is empty)")  # fmt: skip
    epochs: int = cfg_field(60, "training epochs")
    batch_size: int = cfg_field(8, "images per optimizer step")
    img_size: int = cfg_field(128, "square side images are resized to; a multiple of 8")
    lr: float = cfg_field(4e-3, "peak AdamW learning rate after warmup (small nets take a higher rate)")
    weight_decay: float = cfg_field(1e-4, "AdamW weight decay")
    warmup_epochs: float = cfg_field(2.0, "linear LR warmup length in epochs, then cosine decay")
    grad_clip: float = cfg_field(1.0, "max gradient norm; 0 disables clipping")
    patience: int = cfg_field(15, "epochs without val_iou improvement before stopping; 0 = never")
    seed: int = cfg_field(0, "seed for the generated set, split, augmentation and init")
    augment: str = cfg_field(
        "default", "default (the family's own), none, or {hflip: 0.5, rotate: 15, ...}: see projects/common/augment.py"
    )
    resume: str = cfg_field("", "MLflow run id to continue from its checkpoints/last.pt")
    model_name: str = cfg_field("", "registered model name; empty = microseg_<variant>")
    register: str = register_field()
    max_train_batches: int = cfg_field(0, "cap on training batches per epoch; 0 = all (for smoke tests)")
    num_samples: int = cfg_field(200, "images to generate when --data is empty")
    num_test: int = cfg_field(60, "images in the generated test set")
    val_fraction: float = cfg_field(0.2, "share of images held out for validation")
    teacher: str = cfg_field("", "registered segmentation model to distil from, e.g. models:/edgnet@production")
    distill_weight: float = cfg_field(0.5, "weight of the teacher term; (1 - weight) goes to Dice+BCE on the mask")
    temperature: float = cfg_field(2.0, "softens teacher and student logits in the teacher term")
    device: str = cfg_field("auto", "auto, cpu, cuda or cuda:N")
    nproc: int = cfg_field(1, "data-parallel processes (NCCL on GPUs, gloo on CPU); batch_size stays the global batch")
    num_workers: int = cfg_field(0, "DataLoader worker processes")


FAMILY = register_family(
    Family(
        name="microseg",
        config_cls=MicroSegConfig,
        train=lazy("projects.microseg.train:train"),
        task="segmentation",
        ranking=RANKING,
        selected_by=Ranking("val_iou", "max"),  # best.pt is the epoch with the highest val IoU
        smoke=lazy("projects.microseg.train:smoke"),
        summary="binary segmentation under a parameter budget (seed 003), with optional distillation",
        mlproject=(
            "data",
            "sample",
            "epochs",
            "batch_size",
            "img_size",
            "lr",
            "patience",
            "seed",
            "resume",
            "model_name",
            "register",
            "max_train_batches",
            "num_samples",
            "variant",
            "max_params",
            "teacher",
            "distill_weight",
            "temperature",
            "nproc",
        ),
    )
)
