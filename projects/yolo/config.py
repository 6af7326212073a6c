"""YOLO's presets, config and family registration: light (no torch, no ultralytics), so
`kiln train safety_detection --help` starts fast.

    kiln train safety_detection --help
    python -c "from projects.yolo.config import PRESETS; print(sorted(PRESETS))"

`projects/yolo/train.py` re-exports these names and does the training; the family names its functions with
`lazy(...)`, so that module (and ultralytics) is imported only when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contract import Ranking
from core.errors import UserError
from projects.common.config import cfg_field, register_field
from projects.common.families import Family, lazy, register_family
from projects.common.families import Preset as FamilyPreset

# mAP50-95 of ultralytics' final validation of best.pt (the weights exported), logged once as `best/mAP50-95`
RANKING = Ranking("best/mAP50-95", "max")


@dataclass(frozen=True)
class Preset:
    name: str  # entry point name; also the default registered model name
    model: str  # default model YAML
    sample: str | None  # `kiln data sample` kind used when --data is empty; None = --data is required
    summary: str  # one line for docs and tags
    epochs: int = 100  # default training epochs (MLproject's default for the entry point)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


register_preset(
    Preset("safety_detection", "yolov8n.yaml", "safety", "industrial safety: smoke, fire, person_down", epochs=50)
)
register_preset(Preset("visitor_detection", "yolo11n.yaml", "visitor", "door visitors: person, package"))
register_preset(Preset("yolo_custom", "yolov8n.yaml", None, "any ultralytics dataset YAML"))


@dataclass
class YoloConfig:
    preset: str = cfg_field("yolo_custom", f"one of {sorted(PRESETS)}: default model, sample set and model name")
    data: str = cfg_field("", "ultralytics dataset YAML (or a folder holding one); empty = the preset's sample set")
    model: str = cfg_field("", "model YAML (yolov8n.yaml, yolo11n.yaml, a file) or a local .pt; empty = preset's")
    epochs: int = cfg_field(100, "training epochs")
    imgsz: int = cfg_field(640, "square input size; ultralytics rounds it to a multiple of the stride (32)")
    batch: int = cfg_field(16, "images per batch")
    patience: int = cfg_field(20, "epochs without fitness (0.1 mAP50 + 0.9 mAP50-95) gain before stopping")
    lr0: float = cfg_field(0.0, "initial learning rate; 0 = ultralytics picks optimizer and lr0 ('auto')")
    optimizer: str = cfg_field("auto", "SGD, AdamW, Adam, ...; auto = AdamW for short runs, else SGD")
    seed: int = cfg_field(0, "seed for initialisation and augmentation")
    resume: str = cfg_field("", "MLflow run id to continue from its weights/last.pt, in that same run")
    model_name: str = cfg_field("", "registered model name; empty = the preset name")
    register: str = register_field()
    device: str = cfg_field("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    nproc: int = cfg_field(1, "GPUs to train on: > 1 passes devices 0..N-1 to ultralytics, which runs its own DDP")
    time: float = cfg_field(0.0, "training budget in hours; > 0 overrides epochs (ultralytics `time`)")
    workers: int = cfg_field(8, "dataloader workers on CUDA (ultralytics uses 0 on CPU)")
    augment: str = cfg_field(
        "default",
        "default (ultralytics' own), none (all off, mosaic too), or {hflip: 0.5, rotate: 15, ...} mapped to "
        "ultralytics' fliplr, flipud, degrees, scale, hsv_h/s/v; --hyp wins",
    )
    hyp: str = cfg_field("", "YAML of further ultralytics train args (mosaic, hsv_h, degrees, close_mosaic, ...)")
    verbose: bool = cfg_field(False, "show ultralytics' model layer table and its full list of resolved args")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def family_preset(preset: Preset) -> FamilyPreset:
    """A YOLO preset as registry overrides: the preset, its default model and its model name."""
    overrides = {"preset": preset.name, "model": preset.model, "model_name": preset.name, "epochs": preset.epochs}
    return FamilyPreset(preset.name, overrides, preset.summary)


FAMILY = register_family(
    Family(
        name="yolo",
        config_cls=YoloConfig,
        train=lazy("projects.yolo.train:train"),
        task="detection",
        ranking=RANKING,
        selected_by=Ranking("metrics/fitness", "max"),  # ultralytics keeps the epoch of best fitness as best.pt
        smoke=lazy("projects.yolo.train:smoke"),
        presets=tuple(family_preset(p) for p in PRESETS.values()),
        summary="ultralytics YOLO detectors (yolov8/yolo11 YAMLs or local weights), exported to ONNX",
        mlproject=(
            "data",
            "model",
            "epochs",
            "imgsz",
            "batch",
            "patience",
            "lr0",
            "optimizer",
            "seed",
            "resume",
            "model_name",
            "register",
            "device",
            "nproc",
            "time",
            "workers",
            "hyp",
        ),
    )
)
