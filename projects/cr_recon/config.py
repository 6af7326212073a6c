"""CR_recon's config and family registration: light (no torch), so listing or looking up families stays fast.

    python -c "from projects.cr_recon.config import CRConfig; print(CRConfig().model)"

`projects/cr_recon/train.py` re-exports `CRConfig`, resolves it (`load_config`, checked against the model and loss
registries) and trains; the family names those functions with `lazy(...)`, so torch is imported only when a
config is resolved or a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.contract import Ranking
from projects.common.config import cfg_field, register_field
from projects.common.families import Family, lazy, register_family

# The names in projects/cr_recon/model.py's MODELS and losses.py's LOSSES, for the help text without importing
# torch; tests/projects/cr_recon/test_train.py checks that they match.
MODEL_NAMES = ("cnn_gru", "cnn_xattn")
LOSS_NAMES = ("mse_pearson", "weighted_smooth")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
# Val Pearson of best.pt (the epoch with the lowest val_loss, the weights exported), logged once at the end;
# the per-epoch `val_pearson` series would rank by the last epoch instead.
RANKING = Ranking("best_val_pearson", "max")


def _params_field(default: dict[str, dict[str, Any]], help: str) -> Any:
    return field(default_factory=lambda: {k: dict(v) for k, v in default.items()}, metadata={"help": help})


@dataclass
class CRConfig:
    # data
    data: str = cfg_field("", "folder of struct_*.npy + spectra_*.npy pairs; empty = generated sample")
    cache_dir: str = cfg_field("", "where preprocessed .npy caches go; empty = <data>/.cache")
    out_len: int = cfg_field(30, "spectral bins after downsampling (the seed's 301 -> 30)")
    flip_sign: bool = cfg_field(False, "negate raw spectra (for simulators that export flux as negative)")
    batch_size: int = cfg_field(400, "samples per optimizer step (the seed's 400 on a 12 GB GPU)")
    augment_180: bool = cfg_field(True, "add 180-degree rotated copies (R and B swapped) to the train split")
    train_ratio: float = cfg_field(0.95, "share of samples used for training; the rest is val")
    num_workers: int = cfg_field(0, "DataLoader worker processes")
    num_samples: int = cfg_field(4000, "samples to generate when --data is empty")
    # model
    model: str = cfg_field("cnn_xattn", f"registered model: {sorted(MODEL_NAMES)}")
    model_params: dict[str, dict[str, Any]] = _params_field(
        {
            "cnn_xattn": {
                "d_model": 256,
                "nhead": 8,
                "dec_layers": 4,
                "cnn_dropout": 0.05,
                "tr_dropout": 0.1,
                "head_dropout": 0.2,
                "use_circular_padding": True,
            },
            "cnn_gru": {
                "hidden": 256,
                "gru_layers": 2,
                "cnn_dropout": 0.05,
                "head_dropout": 0.1,
                "use_circular_padding": True,
            },
        },  # fmt: skip
        "per-model parameters, keyed by model name (the chosen model's entry is used)",
    )
    # loss
    loss: str = cfg_field("mse_pearson", f"registered loss: {sorted(LOSS_NAMES)}")
    loss_params: dict[str, dict[str, Any]] = _params_field(
        {"mse_pearson": {"w_mse": 1.0, "w_corr": 0.2}, "weighted_smooth": {"w_mse": 1.0, "w_smooth": 0.1}},
        "per-loss weights, keyed by loss name",
    )
    # training
    epochs: int = cfg_field(300, "training epochs (upper bound; early stopping may end sooner)")
    lr: float = cfg_field(1e-3, "peak AdamW learning rate after warmup")
    weight_decay: float = cfg_field(5e-3, "AdamW weight decay")
    grad_clip: float = cfg_field(1.0, "max gradient norm; 0 disables clipping")
    warmup_ratio: float = cfg_field(0.05, "share of all steps spent on linear LR warmup")
    patience: int = cfg_field(30, "epochs without val_loss improvement before stopping; 0 = never")
    seed: int = cfg_field(0, "seed for the split, shuffling and init")
    resume: str = cfg_field("", "MLflow run id to continue from its checkpoints/last.pt")
    model_name: str = cfg_field("cr_recon", "registered model name")
    register: str = register_field()
    device: str = cfg_field("auto", "auto, cpu, cuda or cuda:N")
    nproc: int = cfg_field(1, "data-parallel processes (NCCL on GPUs, gloo on CPU); batch_size stays the global batch")
    num_threads: int = cfg_field(0, "PyTorch CPU threads; 0 = PyTorch's default (one per core)")
    max_train_batches: int = cfg_field(0, "cap on training batches per epoch; 0 = all (for smoke tests)")
    plot_every: int = cfg_field(10, "log GT-vs-predicted spectra plots every N epochs (and for the best model)")


FAMILY = register_family(
    Family(
        name="cr_recon",
        config_cls=CRConfig,
        train=lazy("projects.cr_recon.train:train"),
        task="regression",
        ranking=RANKING,
        selected_by=Ranking("val_loss", "min"),  # best.pt is the epoch with the lowest val loss
        smoke=lazy("projects.cr_recon.train:smoke"),
        load_config=lazy("projects.cr_recon.train:load_config"),
        summary="structure image -> 2x2x30 Bayer spectra (settings from configs/default.yaml)",
        # every parameter defaults to "": keep the value from the YAML config (`config`, default configs/default.yaml)
        mlproject=(
            "config",
            "data",
            "epochs",
            "batch_size",
            "lr",
            "model",
            "loss",
            "seed",
            "resume",
            "model_name",
            "register",
            "nproc",
        ),
    )
)
