"""YOLO models: check `--model` before training, load trained weights, and prepare a model for ONNX export.

    python -c "from projects.yolo.model import resolve_model; print(resolve_model('yolo11n.yaml'))"

`--model` is a model YAML (a file, or a name ultralytics ships such as `yolov8n.yaml`, `yolo11s.yaml`) to
train from scratch, or a local `.pt` the user already has. Nothing is ever downloaded: a name like
`yolov8n.pt` that is not on disk is an error here rather than a download attempt inside ultralytics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import UserError
from projects.yolo.offline import load_ultralytics

load_ultralytics()

from ultralytics.nn.modules import C2f, Detect  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, guess_model_task, load_checkpoint, yaml_model_load  # noqa: E402

DETECT_HEADS = frozenset({"Detect", "v10Detect"})  # heads whose one-to-many output is [B, 4+nc, N] xywh
YAML_SUFFIXES = (".yaml", ".yml")


class ModelError(UserError):
    """A `--model` that cannot be trained; the message names it and says what would work."""


@dataclass(frozen=True)
class ModelSpec:
    source: str  # what ultralytics is given: a YAML path/name or a .pt path
    kind: str  # "yaml" (train from scratch) or "weights" (start from a local checkpoint)
    head: str  # the detection head's class name


def _head_of(layers: list[Any]) -> str:
    return str(layers[-1][2]) if layers else ""


def resolve_yaml(spec: str) -> ModelSpec:
    try:
        cfg = yaml_model_load(spec)
    except FileNotFoundError:
        raise ModelError(
            f"model YAML {spec!r} not found: it is neither a file nor one of the model YAMLs ultralytics ships "
            "(for example yolov8n.yaml, yolo11n.yaml)"
        ) from None
    except Exception as exc:  # a YAML that parses badly raises from deep in ultralytics' loader
        raise ModelError(f"model YAML {spec!r} cannot be read: {exc}") from None
    head = _head_of(cfg.get("head", []))
    if guess_model_task(cfg) != "detect" or head not in DETECT_HEADS:
        raise ModelError(f"model YAML {spec!r} is not a YOLO detection model (its head is {head or 'missing'!r})")
    return ModelSpec(source=spec, kind="yaml", head=head)


def resolve_weights(spec: str) -> ModelSpec:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model weights {spec!r} not found; kiln never downloads weights. Pass a local .pt file, "
            "or a model YAML such as yolov8n.yaml to train from scratch"
        )
    model: Any = load_model(path)
    head = type(model.model[-1]).__name__
    if not isinstance(model, DetectionModel) or head not in DETECT_HEADS:
        raise ModelError(f"model weights {spec!r} are not a YOLO detection model (head {head!r})")
    return ModelSpec(source=str(path.resolve()), kind="weights", head=head)


def resolve_model(spec: str) -> ModelSpec:
    """Check `--model` and say how ultralytics should use it; raises ModelError naming it when it cannot."""
    spec = spec.strip()
    if "://" in spec:
        raise ModelError(f"model {spec!r} is a URL; kiln trains offline from a model YAML or a local .pt")
    if spec.endswith(YAML_SUFFIXES):
        return resolve_yaml(spec)
    if spec.endswith(".pt"):
        return resolve_weights(spec)
    raise ModelError(f"model {spec!r} must be a model YAML (.yaml) or a local checkpoint (.pt)")


def load_model(path: Path) -> nn.Module:
    """The model stored in an ultralytics checkpoint (EMA weights when present), in float32 eval mode."""
    try:
        model, _ = load_checkpoint(str(path), device="cpu")
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise ModelError(f"{path}: not a readable ultralytics checkpoint ({type(exc).__name__}: {exc})") from None
    loaded: nn.Module = model.float().eval()
    return loaded


def export_module(model: nn.Module) -> nn.Module:
    """A fused copy whose forward returns only `[B, 4+nc, N]` (xywh boxes in input pixels, class scores).

    Mirrors what ultralytics' ONNX exporter does to a detection model; end-to-end heads (YOLOv10/26) are
    switched to their one-to-many branch so every family keeps the same output layout and leaves NMS to
    the server.
    """
    module: Any = copy.deepcopy(model).to("cpu").float().eval()
    for p in module.parameters():
        p.requires_grad = False
    module = module.fuse(verbose=False) if _fuse_takes_verbose(module) else module.fuse()
    for m in module.modules():
        if isinstance(m, Detect):
            m.export, m.format, m.dynamic = True, "onnx", True
            m.xyxy, m.shape = False, None
            if getattr(m, "end2end", False):
                m.end2end = False
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    fused: nn.Module = module
    return fused


def _fuse_takes_verbose(module: Any) -> bool:
    import inspect

    return "verbose" in inspect.signature(module.fuse).parameters


def class_count(model: Any) -> int:
    head = model.model[-1]
    return int(head.nc)


@torch.no_grad()
def raw_predictions(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The model's `[B, 4+nc, N]` output in eval mode, before NMS (what the ONNX file must reproduce)."""
    out = model.float().eval()(batch)
    first: torch.Tensor = out[0] if isinstance(out, tuple | list) else out
    return first
