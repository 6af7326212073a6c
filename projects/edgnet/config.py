"""EDGNet's config and family registration: light (no torch), so `kiln train edgnet --help` starts fast.

    kiln train edgnet_large --help
    python -c "from projects.edgnet.config import EDGNetConfig; print(EDGNetConfig())"

`projects/edgnet/train.py` re-exports `EDGNetConfig` and does the training; the family names its functions with
`lazy(...)`, so that module (and torch) is imported only when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contract import Ranking
from projects.common.config import cfg_field, register_field
from projects.common.families import Family, Preset, lazy, register_family

RANKING = Ranking("best_val_iou", "max")  # val IoU of best.pt, the exported weights, logged once


@dataclass
class EDGNetConfig:
    variant: str = cfg_field("edgnet_large", "model variant: edgnet (~0.5M params) or edgnet_large (~31M)")
    data: str = cfg_field("", "folder with images/ and optional masks/, or dataset:NAME@vN; empty = generated drawings")
    epochs: int = cfg_field(100, "training epochs (the seed trains 100)")
    batch_size: int = cfg_field(8, "images per optimizer step")
    img_size: int = cfg_field(512, "square side images are resized to; must be a multiple of 2**depth")
    lr: float = cfg_field(1e-3, "peak AdamW learning rate after warmup")
    weight_decay: float = cfg_field(1e-4, "AdamW weight decay")
    warmup_epochs: float = cfg_field(1.0, "linear LR warmup length in epochs")
    grad_clip: float = cfg_field(1.0, "max gradient norm; 0 disables clipping")
    patience: int = cfg_field(15, "epochs without val_iou improvement before stopping; 0 = never")
    seed: int = cfg_field(0, "seed for the split, augmentation, init and generated sample")
    resume: str = cfg_field("", "MLflow run id to continue from its checkpoints/last.pt")
    model_name: str = cfg_field("", "registered model name; empty = the variant name")
    register: str = register_field()
    max_train_batches: int = cfg_field(0, "cap on training batches per epoch; 0 = all (for smoke tests)")
    num_samples: int = cfg_field(200, "drawings to generate when --data is empty")
    val_fraction: float = cfg_field(0.2, "share of images held out for validation")
    augment: str = cfg_field(
        "default", "default (the family's own), none, or {hflip: 0.5, rotate: 15, ...}: see projects/common/augment.py"
    )
    skip_bad: bool = cfg_field(False, "skip images that fail to decode (with a warning) instead of stopping")
    device: str = cfg_field("auto", "auto, cpu, cuda or cuda:N")
    nproc: int = cfg_field(1, "data-parallel processes (NCCL on GPUs, gloo on CPU); batch_size stays the global batch")
    num_workers: int = cfg_field(0, "DataLoader worker processes")
    overlay_every: int = cfg_field(
        10, "input|target|prediction overlays after epoch 1 and every N epochs (0: epoch 1 only); best.png at the end"
    )
    base_channels: int = cfg_field(0, "UNet width at the first level; 0 = the variant's default")
    depth: int = cfg_field(0, "UNet downsampling levels; 0 = the variant's default")


FAMILY = register_family(
    Family(
        name="edgnet",
        config_cls=EDGNetConfig,
        train=lazy("projects.edgnet.train:train"),
        task="segmentation",
        ranking=RANKING,
        selected_by=Ranking("val_iou", "max"),  # best.pt is the epoch with the highest val IoU
        smoke=lazy("projects.edgnet.train:smoke"),
        presets=(
            Preset("edgnet", {"variant": "edgnet", "model_name": "edgnet"}, "UNet line-work segmentation, ~0.5M"),
            Preset("edgnet_large", {"variant": "edgnet_large", "model_name": "edgnet_large"}, "the seed's ~31M"),
        ),
        summary="UNet line-work segmentation of engineering drawings",
        mlproject=(
            "data",
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
            "nproc",
        ),
    )
)
