"""The model metadata contract: the `kiln.*` metadata_props that training writes and the server reads.

    python -c "from serving.contract import parse_contract; print(parse_contract({'kiln.task': 'tabular', \
'kiln.postprocess': '{\"task\": \"binary\", \"feature_names\": [\"a\"], \"classes\": [0, 1]}'}))"

Pre- and post-processing parameters come from here and nowhere else, so the server does exactly what training
declared. A model without `kiln.task` is still served over V2 and /invocations; its task endpoint says why not.
A malformed contract refuses the load (and so a swap) with the key and the value named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

TASKS = ("segmentation", "detection", "tabular", "regression")


class ContractError(ValueError):
    """A `kiln.*` metadata value is missing or malformed."""


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the input tensor (kiln.preprocess)."""

    color: str  # "gray" or "rgb"
    size: tuple[int, int]  # (H, W) the model sees
    resize: str  # "stretch" or "letterbox"
    scale: float  # multiply uint8 pixels by this first
    mean: tuple[float, ...]  # per channel, subtracted after scaling
    std: tuple[float, ...]  # per channel, divided after the mean
    layout: str  # only "NCHW"
    pad_value: int  # letterbox border value, in uint8 pixels

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


@dataclass(frozen=True)
class SegmentationPost:
    activation: str  # "sigmoid" (the output is logits) or "none" (the output is already a probability)
    threshold: float  # foreground where the activated output is above this


@dataclass(frozen=True)
class DetectionPost:
    names: tuple[str, ...]  # class names, index = class id
    conf: float  # minimum class score kept
    iou: float  # NMS overlap above which the lower-scored box is dropped
    box_format: str  # only "xywh" (centre x, centre y, width, height)
    nms: bool  # True when the graph already ran NMS; then the server does not
    max_det: int  # at most this many boxes per image


@dataclass(frozen=True)
class TabularPost:
    task: str  # "binary", "multiclass" or "regression"
    feature_names: tuple[str, ...]  # column order of the input tensor
    classes: tuple[Any, ...]  # label values, index = class id; empty for regression


@dataclass(frozen=True)
class RegressionPost:
    output_shape: tuple[int, ...]  # per-sample output shape, e.g. (2, 2, 30)
    layout: str  # what the axes mean, e.g. "BGGR"; passed through to the client
    cells: Any = None  # optional description of the leading axes, e.g. [["R", "G"], ["G", "B"]]; passed through


Postprocess = SegmentationPost | DetectionPost | TabularPost | RegressionPost


@dataclass(frozen=True)
class ModelContract:
    task: str | None
    family: str | None
    preprocess: Preprocess | None
    postprocess: Postprocess | None
    model_name: str | None
    run_id: str | None

    @property
    def is_image(self) -> bool:
        return self.preprocess is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "family": self.family,
            "preprocess": None if self.preprocess is None else _as_dict(self.preprocess),
            "postprocess": None if self.postprocess is None else _as_dict(self.postprocess),
        }


_POSTPROCESS: dict[str, Callable[[dict[str, Any]], Postprocess]] = {}
_NEEDS_IMAGE = {"segmentation", "detection", "regression"}


def register_postprocess(task: str) -> Callable[[Callable[[dict[str, Any]], Postprocess]], Callable[..., Postprocess]]:
    def wrap(fn: Callable[[dict[str, Any]], Postprocess]) -> Callable[[dict[str, Any]], Postprocess]:
        _POSTPROCESS[task] = fn
        return fn

    return wrap


def parse_contract(meta: Mapping[str, str]) -> ModelContract:
    """Parse an ONNX model's custom metadata map into a validated contract."""
    task = meta.get("kiln.task") or None
    if task is not None and task not in TASKS:
        raise ContractError(f"kiln.task={task!r} is not one of {list(TASKS)}")
    preprocess = None
    if task in _NEEDS_IMAGE or (task is None and "kiln.preprocess" in meta):
        preprocess = _parse_preprocess(_json_key(meta, "kiln.preprocess"))
    # tabular models may describe their input too ({"layout": "[B, F]", "missing": "NaN"}); the server's side of
    # that is feature_names and null -> NaN, which the postprocess block carries
    postprocess = None
    if task is not None:
        postprocess = _POSTPROCESS[task](_json_key(meta, "kiln.postprocess"))
    return ModelContract(
        task=task,
        family=meta.get("kiln.family") or None,
        preprocess=preprocess,
        postprocess=postprocess,
        model_name=meta.get("kiln.model_name") or None,
        run_id=meta.get("kiln.run_id") or None,
    )


def _json_key(meta: Mapping[str, str], key: str) -> dict[str, Any]:
    if key not in meta:
        raise ContractError(f"{key} is missing from the model's metadata (kiln.task={meta.get('kiln.task')!r})")
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as err:
        raise ContractError(f"{key} is not valid JSON ({err}): {meta[key][:80]!r}") from None
    if not isinstance(value, dict):
        raise ContractError(f"{key} must be a JSON object, got {value!r}")
    return value


def _parse_preprocess(raw: dict[str, Any]) -> Preprocess:
    color = _choice(raw, "kiln.preprocess", "color", ("gray", "rgb"))
    size = raw.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ContractError(f"kiln.preprocess.size must be [H, W] of positive ints, got {size!r}")
    channels = 1 if color == "gray" else 3
    pre = Preprocess(
        color=color,
        size=(size[0], size[1]),
        resize=_choice(raw, "kiln.preprocess", "resize", ("stretch", "letterbox"), "stretch"),
        scale=_number(raw.get("scale", 1 / 255), "kiln.preprocess.scale"),
        mean=_per_channel(raw.get("mean", [0.0]), "mean", channels),
        std=_per_channel(raw.get("std", [1.0]), "std", channels),
        layout=_choice(raw, "kiln.preprocess", "layout", ("NCHW",), "NCHW"),
        pad_value=int(_number(raw.get("pad_value", 114), "kiln.preprocess.pad_value")),
    )
    if any(s == 0 for s in pre.std):
        raise ContractError(f"kiln.preprocess.std must not contain 0, got {list(pre.std)}")
    return pre


@register_postprocess("segmentation")
def _segmentation(raw: dict[str, Any]) -> SegmentationPost:
    threshold = _number(raw.get("threshold", 0.5), "kiln.postprocess.threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ContractError(f"kiln.postprocess.threshold must be in [0, 1], got {threshold}")
    activation = _choice(raw, "kiln.postprocess", "activation", ("sigmoid", "none"), "sigmoid")
    return SegmentationPost(activation=activation, threshold=threshold)


@register_postprocess("detection")
def _detection(raw: dict[str, Any]) -> DetectionPost:
    names = raw.get("names")
    if isinstance(names, dict):  # ultralytics writes {0: "smoke", ...}
        names = [names[k] for k in sorted(names, key=int)]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ContractError(f"kiln.postprocess.names must be a non-empty list of class names, got {names!r}")
    return DetectionPost(
        names=tuple(names),
        conf=_unit(raw.get("conf", 0.25), "conf"),
        iou=_unit(raw.get("iou", 0.45), "iou"),
        box_format=_choice(raw, "kiln.postprocess", "box_format", ("xywh",), "xywh"),
        nms=bool(raw.get("nms", False)),
        max_det=int(_number(raw.get("max_det", 300), "kiln.postprocess.max_det")),
    )


@register_postprocess("tabular")
def _tabular(raw: dict[str, Any]) -> TabularPost:
    task = _choice(raw, "kiln.postprocess", "task", ("binary", "multiclass", "regression"))
    features = raw.get("feature_names")
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise ContractError(f"kiln.postprocess.feature_names must be a non-empty list of strings, got {features!r}")
    if len(set(features)) != len(features):
        raise ContractError(f"kiln.postprocess.feature_names has duplicates: {features}")
    classes = raw.get("classes") or []
    if task != "regression" and not (isinstance(classes, list) and len(classes) >= 2):
        raise ContractError(f"kiln.postprocess.classes must list at least 2 classes for {task}, got {classes!r}")
    return TabularPost(task=task, feature_names=tuple(features), classes=tuple(classes))


@register_postprocess("regression")
def _regression(raw: dict[str, Any]) -> RegressionPost:
    shape = raw.get("output_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ContractError(f"kiln.postprocess.output_shape must be a list of positive ints, got {shape!r}")
    return RegressionPost(output_shape=tuple(shape), layout=str(raw.get("layout", "")), cells=raw.get("cells"))


def _choice(raw: dict[str, Any], key: str, field: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = raw.get(field, default)
    if value not in allowed:
        raise ContractError(f"{key}.{field}={value!r} is not one of {list(allowed)}")
    return str(value)


def _number(value: Any, where: str) -> float:
    """A JSON number, or a fraction written as a string ("1/255")."""
    if isinstance(value, bool):
        raise ContractError(f"{where} must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            pass
    raise ContractError(f"{where} must be a number, got {value!r}")


def _unit(value: Any, field: str) -> float:
    number = _number(value, f"kiln.postprocess.{field}")
    if not 0.0 <= number <= 1.0:
        raise ContractError(f"kiln.postprocess.{field} must be in [0, 1], got {number}")
    return number


def _per_channel(value: Any, field: str, channels: int) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    numbers = tuple(_number(v, f"kiln.preprocess.{field}") for v in values)
    if len(numbers) == 1:
        return numbers * channels
    if len(numbers) != channels:
        raise ContractError(f"kiln.preprocess.{field} has {len(numbers)} values for {channels} channels: {values}")
    return numbers


def _as_dict(obj: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(obj).items()}
