"""A declared augmentation pipeline on albumentations for the image families: `augment: {hflip: 0.5, rotate: 15}`.

    kiln train edgnet --set augment="{hflip: 0.5, rotate: 15, brightness: 0.3, cutout: 0.5}"
    kiln train microseg --set augment=none
    python -c "from projects.common.augment import parse_augment; print(parse_augment('hflip=0.5,rotate=10'))"

`augment` is `default` (the family's own augmentation, unchanged), `none`, or a mapping of the keys in `KEYS`
(YAML/JSON `{k: v}` or `k=v,k=v`); a mapping replaces the default, so what is declared is what runs. Image and
mask (segmentation) or image and boxes (detection, YOLO-normalised) move together. Each draw is seeded from
the dataset's numpy generator, so the same seed gives the same augmented stream on CPU. The YOLO families map
the same keys to ultralytics' own arguments (`ultralytics_args`). albumentations checks PyPI for a newer version
when imported; NO_ALBUMENTATIONS_UPDATE=1 is set first, so nothing is fetched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import yaml

from core.errors import ConfigError

KEYS: dict[str, str] = {
    "hflip": "probability of a horizontal flip",
    "vflip": "probability of a vertical flip",
    "rotate": "rotation up to +- this many degrees (always applied)",
    "scale": "zoom by up to +- this fraction (0.2: 0.8x-1.2x)",
    "crop": "random crop keeping at least 1 - crop of the area, resized back",
    "brightness": "colour jitter: brightness +- this fraction",
    "contrast": "colour jitter: contrast +- this fraction",
    "saturation": "colour jitter: saturation +- this fraction (colour images)",
    "hue": "colour jitter: hue shift up to this fraction of the circle (<= 0.5)",
    "blur": "probability of a Gaussian blur (sigma 0.3-1.2 px)",
    "noise": "probability of Gaussian noise (1-5% of the range)",
    "cutout": "probability of cutting out 1-4 holes of 5-20% of the side (image only; the mask is kept)",
}
OFF = ("none", "off", "false", "0", "")
DEFAULT = "default"

# Key -> ultralytics train argument (and a factor): where ultralytics' detection training has the same thing.
# blur, noise, contrast, crop and cutout have none (ultralytics' `erasing` is for classification only).
ULTRALYTICS = {
    "hflip": ("fliplr", 1.0), "vflip": ("flipud", 1.0), "rotate": ("degrees", 1.0), "scale": ("scale", 1.0),
    "hue": ("hsv_h", 1.0), "saturation": ("hsv_s", 1.0), "brightness": ("hsv_v", 1.0),
}  # fmt: skip
# augment=none for YOLO: every ultralytics augmentation off (mosaic included).
ULTRALYTICS_OFF = {"fliplr": 0.0, "flipud": 0.0, "degrees": 0.0, "scale": 0.0, "translate": 0.0, "hsv_h": 0.0,
                   "hsv_s": 0.0, "hsv_v": 0.0, "mosaic": 0.0, "mixup": 0.0, "erasing": 0.0}  # fmt: skip

MaskFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def parse_augment(spec: str | Mapping[str, Any]) -> dict[str, float] | None:
    """`default` -> None (the family's own); `none` -> {}; a mapping -> {key: value}, checked against KEYS."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == DEFAULT:
            return None
        if text.lower() in OFF:
            return {}
        spec = _mapping(text)
    params: dict[str, float] = {}
    for key, value in spec.items():
        if key not in KEYS:
            raise ConfigError(f"augment: unknown key {key!r}; known: {', '.join(KEYS)}", field="augment")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"augment.{key}: expected a number, got {value!r}", field="augment") from None
        if number < 0 or (key in ("hflip", "vflip", "blur", "noise", "cutout", "crop") and number > 1):
            raise ConfigError(f"augment.{key}: {number} is out of range ({KEYS[key]})", field="augment")
        params[key] = number
    return params


def _mapping(text: str) -> dict[str, Any]:
    if text.startswith("{"):
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"augment: {text!r} is not a mapping: {exc}", field="augment") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"augment: {text!r} is not a mapping", field="augment")
        return loaded
    pairs = [p.partition("=") for p in text.split(",") if p.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise ConfigError(
            f"augment: {text!r}: use default, none, {{key: value, ...}} or key=value,...", field="augment"
        )
    return {k.strip(): v.strip() for k, _, v in pairs}


def as_config_value(value: Any) -> Any:
    """A YAML mapping given for `augment` kept as one JSON string (config values are flat)."""
    return json.dumps(value) if isinstance(value, dict) else value


def log_params(params: dict[str, float] | None, prefix: str = "augment") -> dict[str, str]:
    """The params to log: augment/<key> per declared key, or augment=default / none."""
    if params is None:
        return {prefix: DEFAULT}
    if not params:
        return {prefix: "none"}
    return {f"{prefix}/{k}": f"{v:g}" for k, v in params.items()}


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would otherwise ask PyPI for a newer one
    import albumentations

    return albumentations


def build(params: Mapping[str, float], size: tuple[int, int], boxes: bool = False) -> Any:
    """An albumentations Compose for `params`; `size` (h, w) is the output size of a crop."""
    A = _albumentations()  # noqa: N806 (albumentations' own spelling)
    import cv2

    steps: list[Any] = []
    if params.get("hflip"):
        steps.append(A.HorizontalFlip(p=params["hflip"]))
    if params.get("vflip"):
        steps.append(A.VerticalFlip(p=params["vflip"]))
    if params.get("rotate"):
        steps.append(A.Rotate(limit=params["rotate"], border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0))
    if params.get("scale"):
        s = params["scale"]
        steps.append(A.Affine(scale=(max(0.05, 1 - s), 1 + s), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0))
    if params.get("crop"):
        steps.append(A.RandomResizedCrop(size=size, scale=(max(0.05, 1 - params["crop"]), 1.0), p=1.0))
    jitter = {k: params.get(k, 0.0) for k in ("brightness", "contrast", "saturation", "hue")}
    if any(jitter.values()):
        steps.append(A.ColorJitter(**{**jitter, "hue": min(jitter["hue"], 0.5)}, p=1.0))
    if params.get("blur"):
        steps.append(A.GaussianBlur(sigma_limit=(0.3, 1.2), p=params["blur"]))
    if params.get("noise"):
        steps.append(A.GaussNoise(std_range=(0.01, 0.05), p=params["noise"]))
    if params.get("cutout"):
        steps.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2),
                                     hole_width_range=(0.05, 0.2), fill=0, p=params["cutout"]))  # fmt: skip
    bbox = A.BboxParams(format="yolo", label_fields=["classes"], min_visibility=0.1) if boxes else None
    return A.Compose(steps, bbox_params=bbox, seed=0)


def mask_fn(params: Mapping[str, float], size: tuple[int, int]) -> MaskFn:
    """(image, mask, rng) -> augmented (image, mask), as `MaskDataset.augment_fn` takes it."""
    pipeline = build(params, size)

    def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pipeline.set_random_seed(int(rng.integers(2**31)))
        out = pipeline(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
        return out["image"], out["mask"]

    return augment


def boxes_fn(
    params: Mapping[str, float], size: tuple[int, int]
) -> Callable[[np.ndarray, np.ndarray, list[int], np.random.Generator], tuple[np.ndarray, np.ndarray, list[int]]]:
    """(image, boxes (N, 4) YOLO-normalised, classes, rng) -> the same, boxes moved with the image."""
    pipeline = build(params, size, boxes=True)

    def augment(
        image: np.ndarray, boxes: np.ndarray, classes: list[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        pipeline.set_random_seed(int(rng.integers(2**31)))
        out = pipeline(image=image, bboxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), classes=classes)
        return out["image"], np.asarray(out["bboxes"]).reshape(-1, 4), [int(c) for c in out["classes"]]

    return augment


def ultralytics_args(params: dict[str, float] | None) -> dict[str, float]:
    """The ultralytics train arguments for the keys it has; `none` turns all of its augmentation off."""
    if params is None:
        return {}
    if not params:
        return dict(ULTRALYTICS_OFF)
    return {ULTRALYTICS[k][0]: v * ULTRALYTICS[k][1] for k, v in params.items() if k in ULTRALYTICS}


def sample_grid(
    samples: list[tuple[np.ndarray, np.ndarray]], augment: MaskFn, seed: int = 0, copies: int = 4
) -> np.ndarray:
    """Rows of [original | `copies` augmented draws], each with its mask outlined in red: an RGB uint8 image."""
    import cv2

    rng = np.random.default_rng(seed)
    rows = []
    for image, mask in samples:
        tiles = [_tile(image, mask)]
        for _ in range(copies):
            tiles.append(_tile(*augment(image, mask, rng)))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    return cv2.copyMakeBorder(grid, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def _tile(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    pixels = np.clip(image, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if pixels.ndim == 2 else pixels.copy()
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, (255, 0, 0), 1)
    tile: np.ndarray = cv2.copyMakeBorder(rgb, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    return tile


def log_to_run(params: dict[str, float] | None, samples: list[tuple[np.ndarray, np.ndarray]], fn: MaskFn | None,
               seed: int) -> None:  # fmt: skip
    """Log the augmentation params and, when a pipeline runs, a grid of augmented training samples."""
    import mlflow

    mlflow.log_params(log_params(params))
    if fn is not None and samples:
        mlflow.log_image(sample_grid(samples, fn, seed), "augment/samples.png")


def no_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return image, mask


def apply_to(dataset: Any, spec: str, size: tuple[int, int]) -> None:
    """Set a training MaskDataset's `augment_fn` from the config's `augment` (default keeps the family's own)."""
    params = parse_augment(spec)
    if params is not None:
        dataset.augment_fn = mask_fn(params, size) if params else no_augment


def log_dataset_augmentation(dataset: Any, spec: str, seed: int, rows: int = 4) -> None:
    """On the active run: the augment params, and a grid of `rows` training samples with 4 augmented draws each
    (masks outlined) as augment/samples.png, made with a generator of its own so training's stream is untouched."""
    params = parse_augment(spec)
    samples = [(s.image, s.mask) for s in dataset.samples[:rows]]
    log_to_run(params, samples, None if params == {} else dataset.augment_fn, seed)
