"""The model contract: the `kiln.*` metadata that training writes into a model and serving, data tools and
benches read back. One typed module both builds it (`ModelContract.to_metadata()`) and parses it
(`ModelContract.parse()`); nobody writes `kiln.*` keys by hand.

    python -c "from core.contract import *; c = ModelContract(task='segmentation', family='edgnet', \
preprocess=Preprocess(color='gray', size=(256, 256)), postprocess=SegmentationPost(), \
ranking=Ranking('best_val_iou', 'max')); print(ModelContract.parse(c.to_metadata()) == c)"

The contract also carries the promotion hint (`kiln.metric`, `kiln.mode`): the metric that ranks versions. It
names a summary logged once for the weights that were exported (`best_val_iou`, not the per-epoch `val_iou`),
so that a promotion gate compares the numbers of the models it moves.

A model without `kiln.task` is still served over V2 and /invocations. A malformed contract raises
`ContractError` naming the key and the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

from core import vocab
from core.errors import ContractError

TASKS = ("segmentation", "detection", "tabular", "regression")
MODES = ("max", "min")
IMAGE_TASKS = frozenset({"segmentation", "detection", "regression"})


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the input tensor (`kiln.preprocess` of image models)."""

    color: str  # "gray" or "rgb"
    size: tuple[int, int]  # (H, W) the model sees
    resize: str = "stretch"  # "stretch" or "letterbox"
    scale: float = 1 / 255  # multiply uint8 pixels by this first
    mean: tuple[float, ...] = (0.0,)  # per channel (or one for all), subtracted after scaling
    std: tuple[float, ...] = (1.0,)  # per channel (or one for all), divided after the mean
    layout: str = "NCHW"  # only "NCHW"
    pad_value: int = 114  # letterbox border value, in uint8 pixels
    size_multiple: int = 1  # for dynamic H/W graphs: each side must be a multiple of this (a UNet's 2**depth)

    def __post_init__(self) -> None:
        channels = 1 if self.color == "gray" else 3
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", _broadcast(self.mean, channels, "mean"))
        object.__setattr__(self, "std", _broadcast(self.std, channels, "std"))

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class TabularInput:
    """How records become the input tensor (`kiln.preprocess` of tabular models)."""

    feature_names: tuple[str, ...] = ()  # column order; the postprocess block repeats it for the server
    layout: str = "[B, F]"
    dtype: str = "float32"
    missing: str = "NaN"  # what a null cell becomes

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class SegmentationPost:
    activation: str = "sigmoid"  # "sigmoid" (the output is logits) or "none" (already a probability)
    threshold: float = 0.5  # foreground where the activated output is above this

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class DetectionPost:
    names: tuple[str, ...]  # class names, index = class id
    conf: float = 0.25  # minimum class score kept
    iou: float = 0.45  # NMS overlap above which the lower-scored box is dropped
    box_format: str = "xywh"  # only "xywh" (centre x, centre y, width, height)
    nms: bool = False  # True when the graph already ran NMS; then the server does not
    max_det: int = 300  # at most this many boxes per image
    layout: str = "[B,4+nc,N]"  # the raw output's axes (ultralytics' head, no NMS)

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class TabularPost:
    task: str  # "binary", "multiclass" or "regression"
    feature_names: tuple[str, ...]  # column order of the input tensor
    classes: tuple[Any, ...] = ()  # label values, index = class id; empty for regression

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class RegressionPost:
    output_shape: tuple[int, ...]  # per-sample output shape, e.g. (2, 2, 30)
    layout: str = ""  # what the axes mean, e.g. "BGGR"; passed through to the client
    cells: Any = None  # optional description of the leading axes, e.g. [["R", "G"], ["G", "B"]]

    def to_json(self) -> dict[str, Any]:
        return _as_json(self)


Postprocess = SegmentationPost | DetectionPost | TabularPost | RegressionPost
_POST_CLASS: dict[str, type] = {
    "segmentation": SegmentationPost,
    "detection": DetectionPost,
    "tabular": TabularPost,
    "regression": RegressionPost,
}


@dataclass(frozen=True)
class Ranking:
    """The promotion hint: which metric ranks versions of this model, and whether higher is better."""

    metric: str  # a summary logged once for the exported weights, e.g. "best_val_iou"
    mode: str = "max"  # "max" or "min"

    def __post_init__(self) -> None:
        if not self.metric:
            raise ContractError(f"{vocab.METRIC} must name a metric")
        if self.mode not in MODES:
            raise ContractError(f"{vocab.MODE}={self.mode!r} is not one of {list(MODES)}")


@dataclass(frozen=True)
class ModelContract:
    """Everything a consumer needs to run a model the way its training meant it."""

    task: str | None
    family: str | None = None
    preprocess: Preprocess | None = None  # image models only
    postprocess: Postprocess | None = None
    ranking: Ranking | None = None
    tabular_input: TabularInput | None = None  # tabular models only
    model_name: str | None = None  # filled in when the model is registered
    run_id: str | None = None  # the training run, filled in when the model is logged
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)  # other kiln.* keys, kept as written

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ContractError(f"{vocab.TASK}={self.task!r} is not one of {list(TASKS)}")
        if self.task is not None and self.postprocess is not None:
            expected = _POST_CLASS[self.task]
            if not isinstance(self.postprocess, expected):
                raise ContractError(
                    f"{vocab.TASK}={self.task!r} needs a {expected.__name__} postprocess, "
                    f"got {type(self.postprocess).__name__}"
                )
        if self.task in IMAGE_TASKS and self.preprocess is None:
            raise ContractError(f"{vocab.TASK}={self.task!r} needs {vocab.PREPROCESS} (an image Preprocess)")

    @property
    def is_image(self) -> bool:
        return self.preprocess is not None

    def with_ids(self, *, model_name: str | None = None, run_id: str | None = None) -> ModelContract:
        from dataclasses import replace

        return replace(self, model_name=model_name or self.model_name, run_id=run_id or self.run_id)

    def to_metadata(self) -> dict[str, str]:
        """The `kiln.*` metadata_props: every value a string, JSON for the structured ones."""
        meta: dict[str, str] = dict(self.extra)
        if self.task is not None:
            meta[vocab.TASK] = self.task
        if self.family:
            meta[vocab.FAMILY] = self.family
        pre = self.preprocess or self.tabular_input
        if pre is not None:
            meta[vocab.PREPROCESS] = json.dumps(pre.to_json())
        if self.postprocess is not None:
            meta[vocab.POSTPROCESS] = json.dumps(self.postprocess.to_json())
        if self.ranking is not None:
            meta[vocab.METRIC] = self.ranking.metric
            meta[vocab.MODE] = self.ranking.mode
        if self.model_name:
            meta[vocab.MODEL_NAME] = self.model_name
        if self.run_id:
            meta[vocab.RUN_ID] = self.run_id
        return meta

    def to_json(self) -> dict[str, Any]:
        """A JSON view for APIs (`GET /v1/models`): task, family, pre- and post-processing, ranking."""
        return {
            "task": self.task,
            "family": self.family,
            "preprocess": None if self.preprocess is None else self.preprocess.to_json(),
            "postprocess": None if self.postprocess is None else self.postprocess.to_json(),
            "ranking": None if self.ranking is None else {"metric": self.ranking.metric, "mode": self.ranking.mode},
        }

    @classmethod
    def parse(cls, meta: Mapping[str, str]) -> ModelContract:
        """Parse an ONNX model's custom metadata map into a validated contract."""
        return parse_contract(meta)


KNOWN_KEYS = vocab.CONTRACT_KEYS


def parse_contract(meta: Mapping[str, str]) -> ModelContract:
    """Parse an ONNX model's custom metadata map into a validated contract."""
    task = meta.get(vocab.TASK) or None
    if task is not None and task not in TASKS:
        raise ContractError(f"{vocab.TASK}={task!r} is not one of {list(TASKS)}")
    preprocess = None
    tabular_input = None
    if task in IMAGE_TASKS or (task is None and vocab.PREPROCESS in meta and not _is_tabular_input(meta)):
        preprocess = _parse_preprocess(_json_key(meta, vocab.PREPROCESS))
    elif vocab.PREPROCESS in meta:
        tabular_input = _parse_tabular_input(_json_key(meta, vocab.PREPROCESS))
    postprocess = None if task is None else _POSTPROCESS[task](_json_key(meta, vocab.POSTPROCESS))
    ranking = None
    if meta.get(vocab.METRIC):
        ranking = Ranking(meta[vocab.METRIC], meta.get(vocab.MODE) or "max")
    extra = {k: v for k, v in meta.items() if k.startswith(vocab.PREFIX) and k not in KNOWN_KEYS}
    return ModelContract(
        task=task,
        family=meta.get(vocab.FAMILY) or None,
        preprocess=preprocess,
        postprocess=postprocess,
        ranking=ranking,
        tabular_input=tabular_input,
        model_name=meta.get(vocab.MODEL_NAME) or None,
        run_id=meta.get(vocab.RUN_ID) or None,
        extra=extra,
    )


def _is_tabular_input(meta: Mapping[str, str]) -> bool:
    try:
        raw = json.loads(meta[vocab.PREPROCESS])
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    return isinstance(raw, dict) and "color" not in raw and "layout" in raw and str(raw["layout"]).startswith("[B")


def _json_key(meta: Mapping[str, str], key: str) -> dict[str, Any]:
    if key not in meta:
        raise ContractError(f"{key} is missing from the model's metadata ({vocab.TASK}={meta.get(vocab.TASK)!r})")
    try:
        value = json.loads(meta[key])
    except (json.JSONDecodeError, TypeError) as err:
        raise ContractError(f"{key} is not valid JSON ({err}): {str(meta[key])[:80]!r}") from None
    if not isinstance(value, dict):
        raise ContractError(f"{key} must be a JSON object, got {value!r}")
    return value


def _parse_preprocess(raw: dict[str, Any]) -> Preprocess:
    color = _choice(raw, vocab.PREPROCESS, "color", ("gray", "rgb"))
    size = raw.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_positive_int(s) for s in size)):
        raise ContractError(f"{vocab.PREPROCESS}.size must be [H, W] of positive ints, got {size!r}")
    channels = 1 if color == "gray" else 3
    multiple = raw.get("size_multiple", 1)
    if not _positive_int(multiple):
        raise ContractError(f"{vocab.PREPROCESS}.size_multiple must be a positive int, got {multiple!r}")
    pre = Preprocess(
        color=color,
        size=(size[0], size[1]),
        resize=_choice(raw, vocab.PREPROCESS, "resize", ("stretch", "letterbox"), "stretch"),
        scale=_number(raw.get("scale", 1 / 255), f"{vocab.PREPROCESS}.scale"),
        mean=_per_channel(raw.get("mean", [0.0]), "mean", channels),
        std=_per_channel(raw.get("std", [1.0]), "std", channels),
        layout=_choice(raw, vocab.PREPROCESS, "layout", ("NCHW",), "NCHW"),
        pad_value=int(_number(raw.get("pad_value", 114), f"{vocab.PREPROCESS}.pad_value")),
        size_multiple=int(multiple),
    )
    if any(s == 0 for s in pre.std):
        raise ContractError(f"{vocab.PREPROCESS}.std must not contain 0, got {list(pre.std)}")
    return pre


def _parse_tabular_input(raw: dict[str, Any]) -> TabularInput:
    names = raw.get("feature_names") or []
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ContractError(f"{vocab.PREPROCESS}.feature_names must be a list of strings, got {names!r}")
    return TabularInput(
        feature_names=tuple(names),
        layout=str(raw.get("layout", "[B, F]")),
        dtype=str(raw.get("dtype", "float32")),
        missing=str(raw.get("missing", "NaN")),
    )


def _segmentation(raw: dict[str, Any]) -> SegmentationPost:
    threshold = _number(raw.get("threshold", 0.5), f"{vocab.POSTPROCESS}.threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ContractError(f"{vocab.POSTPROCESS}.threshold must be in [0, 1], got {threshold}")
    activation = _choice(raw, vocab.POSTPROCESS, "activation", ("sigmoid", "none"), "sigmoid")
    return SegmentationPost(activation=activation, threshold=threshold)


def _detection(raw: dict[str, Any]) -> DetectionPost:
    names = raw.get("names")
    if isinstance(names, dict):  # ultralytics writes {0: "smoke", ...}
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise ContractError(f"{vocab.POSTPROCESS}.names keys must be class ids, got {list(names)!r}") from None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ContractError(f"{vocab.POSTPROCESS}.names must be a non-empty list of class names, got {names!r}")
    max_det = _number(raw.get("max_det", 300), f"{vocab.POSTPROCESS}.max_det")
    if max_det < 1 or not float(max_det).is_integer():
        raise ContractError(f"{vocab.POSTPROCESS}.max_det must be a positive int, got {raw.get('max_det')!r}")
    return DetectionPost(
        names=tuple(names),
        conf=_unit(raw.get("conf", 0.25), "conf"),
        iou=_unit(raw.get("iou", 0.45), "iou"),
        box_format=_choice(raw, vocab.POSTPROCESS, "box_format", ("xywh",), "xywh"),
        nms=bool(raw.get("nms", False)),
        max_det=int(max_det),
        layout=str(raw.get("layout", "[B,4+nc,N]")),
    )


def _tabular(raw: dict[str, Any]) -> TabularPost:
    task = _choice(raw, vocab.POSTPROCESS, "task", ("binary", "multiclass", "regression"))
    features = raw.get("feature_names")
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise ContractError(f"{vocab.POSTPROCESS}.feature_names must be a non-empty list of strings, got {features!r}")
    if len(set(features)) != len(features):
        raise ContractError(f"{vocab.POSTPROCESS}.feature_names has duplicates: {features}")
    classes = raw.get("classes") or []
    if task != "regression" and not (isinstance(classes, list) and len(classes) >= 2):
        raise ContractError(f"{vocab.POSTPROCESS}.classes must list at least 2 classes for {task}, got {classes!r}")
    return TabularPost(task=task, feature_names=tuple(features), classes=tuple(classes))


def _regression(raw: dict[str, Any]) -> RegressionPost:
    shape = raw.get("output_shape")
    if not (isinstance(shape, list) and shape and all(_positive_int(s) for s in shape)):
        raise ContractError(f"{vocab.POSTPROCESS}.output_shape must be a list of positive ints, got {shape!r}")
    return RegressionPost(output_shape=tuple(shape), layout=str(raw.get("layout", "")), cells=raw.get("cells"))


_POSTPROCESS: dict[str, Callable[[dict[str, Any]], Postprocess]] = {
    "segmentation": _segmentation,
    "detection": _detection,
    "tabular": _tabular,
    "regression": _regression,
}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _choice(raw: dict[str, Any], key: str, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        raise ContractError(f"{key}.{name}={value!r} is not one of {list(allowed)}")
    return value


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


def _unit(value: Any, name: str) -> float:
    number = _number(value, f"{vocab.POSTPROCESS}.{name}")
    if not 0.0 <= number <= 1.0:
        raise ContractError(f"{vocab.POSTPROCESS}.{name} must be in [0, 1], got {number}")
    return number


def _per_channel(value: Any, name: str, channels: int) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    numbers = tuple(_number(v, f"{vocab.PREPROCESS}.{name}") for v in values)
    return _broadcast(numbers, channels, name)


def _broadcast(values: tuple[float, ...] | list[float], channels: int, name: str) -> tuple[float, ...]:
    numbers = tuple(float(v) for v in values)
    if len(numbers) == 1:
        return numbers * channels
    if len(numbers) != channels:
        raise ContractError(
            f"{vocab.PREPROCESS}.{name} has {len(numbers)} values for {channels} channels: {list(values)}"
        )
    return numbers


def _as_json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
