"""Five procedural binary-segmentation sets that stand for seed 003's five datasets, each quick and deterministic.

    kiln data sample seg_cracks data/samples/seg_cracks --count 60 --size 64
    python -c "from data.segsets import SEGSETS; print(SEGSETS)"

| kind           | stands for       | what the model must find                                              |
|----------------|------------------|-----------------------------------------------------------------------|
| seg_objects    | VOC 2012         | 1-3 shaded objects at scales from 8% to 60% of the side, in clutter    |
| seg_polyps     | ETIS-Larib polyp | soft-bordered blobs on textured tissue with vessels and highlights     |
| seg_leaves     | CVPPP 2017 LSC   | the union of overlapping leaves (with veins) on soil                   |
| seg_cracks     | CFD              | thin branching cracks, 1-3 px, on speckled concrete with stains        |
| seg_damage     | CarDD            | irregular scratched, dented or rusty patches on glossy car paint       |

Every set is `images/NNNN.png` (BGR colour) and `masks/NNNN.png` (0 or 255), the layout of `kiln data sample
drawings` and of a user's own folders. Distractors that look like the target but are not in the mask (dark
stains on concrete, background shapes behind objects, glare on paint) keep the task from being a threshold.
Image i of seed s is drawn from its own random stream, so the same request gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from data.samples import SampleRequest, ensure_sample, register_sample

Rng = np.random.Generator
Renderer = Callable[[int, Rng], tuple[np.ndarray, np.ndarray]]
DEFAULT_COUNT = 100
DEFAULT_SIZE = 128
MIN_SIZE = 32


def smooth_noise(size: int, cells: int, rng: Rng, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a `cells`x`cells` random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(size, size, channels), -1, 1)


def _texture(size: int, rng: Rng, base: tuple[float, float, float], amount: float, cells: int) -> np.ndarray:
    """A float BGR field around `base` with low- and high-frequency variation."""
    low = smooth_noise(size, cells, rng, 3) * amount
    grain = rng.normal(0, amount / 4, (size, size, 3)).astype(np.float32)
    return np.asarray(base, np.float32) + low + grain


def _blob(size: int, rng: Rng, centre: tuple[float, float], radius: float, wobble: float) -> np.ndarray:
    """A filled irregular closed shape (a radius-perturbed polygon) as uint8 0/255."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    harmonics = sum(rng.uniform(-wobble, wobble) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in range(2, 5))
    radii = radius * (1 + harmonics)
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255, cv2.LINE_AA)
    return mask


def _compose(image: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None]
    return image * (1 - a) + layer * a


def _finish(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(image, 0, 255).astype(np.uint8), np.where(mask >= 128, 255, 0).astype(np.uint8)


def render_objects(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """VOC-like: shaded, outlined objects at several scales over clutter that includes flat background shapes."""
    image = _texture(size, rng, tuple(rng.uniform(60, 190, 3)), 40, 4)
    for _ in range(int(rng.integers(2, 6))):  # background clutter: flat, low-contrast, never in the mask
        clutter = _blob(size, rng, tuple(rng.uniform(0, size, 2)), float(rng.uniform(0.05, 0.25)) * size, 0.3)
        image = _compose(image, np.full_like(image, rng.uniform(50, 200)), clutter / 255.0 * 0.5)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        scale = float(np.exp(rng.uniform(np.log(0.04), np.log(0.3)))) * size  # log-uniform: small and large
        centre = tuple(rng.uniform(scale * 0.5, size - scale * 0.5, 2))
        shape = _blob(size, rng, centre, scale, float(rng.uniform(0.05, 0.25)))
        colour = rng.uniform(0, 255, 3)
        shade = np.linspace(1.25, 0.6, size, dtype=np.float32)[:, None, None]  # lit from above: looks solid
        layer = np.clip(colour * shade + smooth_noise(size, 6, rng, 3) * 20, 0, 255)
        image = _compose(image, layer, shape / 255.0)
        outline = cv2.morphologyEx(shape, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        image = _compose(image, np.zeros_like(image), outline / 255.0 * 0.6)
        mask = np.maximum(mask, shape)
    return _finish(image, mask)


def render_polyps(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Polyp-like: 1-2 raised blobs whose border fades over a few pixels into folded, vascular tissue."""
    image = _texture(size, rng, (95, 110, 200), 25, 6)  # BGR pink-red mucosa
    folds = smooth_noise(size, 3, rng)[..., 0]
    image *= (1 + 0.25 * np.sin(folds * 6))[..., None]
    for _ in range(int(rng.integers(3, 8))):  # vessels: thin dark-red curves, not polyps
        pts = np.cumsum(rng.normal(0, size / 12, (6, 2)), axis=0) + rng.uniform(0, size, 2)
        cv2.polylines(image, [pts.astype(np.int32)], False, (40, 40, 140), 1, cv2.LINE_AA)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        radius = float(rng.uniform(0.08, 0.22)) * size
        shape = _blob(size, rng, tuple(rng.uniform(radius, size - radius, 2)), radius, 0.12)
        soft = cv2.GaussianBlur(shape.astype(np.float32) / 255.0, (0, 0), max(1.0, radius / 5))
        layer = _texture(size, rng, tuple(rng.uniform([90, 120, 190], [140, 170, 240])), 15, 8)
        dome = cv2.GaussianBlur(shape.astype(np.float32) / 255.0, (0, 0), radius / 2)
        layer *= (0.85 + 0.35 * dome)[..., None]  # shading of a raised surface
        image = _compose(image, layer, soft)
        mask = np.maximum(mask, np.where(soft >= 0.5, 255, 0).astype(np.uint8))
    for _ in range(int(rng.integers(1, 4))):  # specular highlights anywhere
        cv2.circle(image, tuple(int(v) for v in rng.uniform(0, size, 2)), int(rng.integers(1, 3)), (250,) * 3, -1)
    return _finish(cv2.GaussianBlur(image, (3, 3), 0.5), mask)


def _leaf(size: int, rng: Rng, centre: np.ndarray, length: float, angle: float) -> np.ndarray:
    """A pointed leaf outline (two arcs meeting at tip and base) as polygon points."""
    t = np.linspace(0, 1, 20)
    width = length * float(rng.uniform(0.25, 0.45)) * np.sin(np.pi * t) ** 0.8
    along = (t - 0.5) * length
    upper = np.stack([along, width], axis=1)
    lower = np.stack([along[::-1], -width[::-1]], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.asarray((np.concatenate([upper, lower]) @ rot.T + centre).astype(np.int32))


def render_leaves(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Rosette plants: 4-12 overlapping leaves around a centre, each a different green, with a midrib."""
    image = _texture(size, rng, (40, 60, 80), 25, 8)  # brown soil
    for _ in range(int(rng.integers(10, 30))):  # pebbles and moss specks: distractors
        colour = (60, 120, 70) if rng.random() < 0.3 else tuple(rng.uniform(70, 150, 3))
        cv2.circle(image, tuple(int(v) for v in rng.uniform(0, size, 2)), int(rng.integers(1, 3)), colour, -1)
    mask = np.zeros((size, size), np.uint8)
    centre = rng.uniform(0.35, 0.65, 2) * size
    for _ in range(int(rng.integers(4, 13))):
        angle = float(rng.uniform(0, 2 * np.pi))
        length = float(rng.uniform(0.18, 0.4)) * size
        offset = centre + np.array([np.cos(angle), np.sin(angle)]) * length * 0.55
        points = _leaf(size, rng, offset, length, angle)
        shape = np.zeros((size, size), np.uint8)
        cv2.fillPoly(shape, [points], 255, cv2.LINE_AA)
        green = np.array([rng.uniform(20, 70), rng.uniform(110, 200), rng.uniform(30, 90)], np.float32)
        layer = _texture(size, rng, tuple(green), 12, 5)
        tip, base = points[19], points[0]
        cv2.line(layer, tuple(int(v) for v in base), tuple(int(v) for v in tip), tuple(float(g) * 1.3 for g in green))
        image = _compose(image, layer, shape / 255.0)
        edge = cv2.morphologyEx(shape, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        image = _compose(image, layer * 0.6, edge / 255.0 * 0.7)  # a darker rim where leaves overlap
        mask = np.maximum(mask, shape)
    return _finish(image, mask)


def render_cracks(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Concrete with speckle, stains and pores; 1-3 cracks, each a wandering line of 1-3 px with branches."""
    grey = float(rng.uniform(120, 190))
    luma = smooth_noise(size, 10, rng)[..., 0] * 18 + rng.normal(0, 6, (size, size)).astype(np.float32)
    image = np.repeat((grey + luma)[..., None], 3, axis=2) + np.asarray([0, 2, 5], np.float32)  # grey, warm cast
    for _ in range(int(rng.integers(20, 60))):  # pores: dark dots that are not cracks
        cv2.circle(image, tuple(int(v) for v in rng.uniform(0, size, 2)), 1, (grey * 0.5,) * 3, -1)
    for _ in range(int(rng.integers(0, 3))):  # water stains: large dark soft patches
        stain = cv2.GaussianBlur(_blob(size, rng, tuple(rng.uniform(0, size, 2)), size * 0.15, 0.3), (0, 0), 4)
        image = _compose(image, image * 0.7, stain / 255.0)
    ink = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        _draw_crack(ink, rng, rng.uniform(0, size, 2), float(rng.uniform(0, 2 * np.pi)), size, depth=0)
    depth = float(rng.uniform(0.3, 0.6))
    image = _compose(image, image * depth, ink / 255.0)
    return _finish(image, ink)


def _draw_crack(ink: np.ndarray, rng: Rng, start: np.ndarray, heading: float, size: int, depth: int) -> None:
    point = start.copy()
    width = int(rng.integers(1, 4)) if depth == 0 else 1
    for _ in range(int(rng.integers(8, 20))):
        heading += float(rng.normal(0, 0.35))
        step = size / 16 * float(rng.uniform(0.5, 1.2))
        nxt = point + step * np.array([np.cos(heading), np.sin(heading)])
        cv2.line(ink, tuple(int(v) for v in point), tuple(int(v) for v in nxt), 255, width, cv2.LINE_8)
        if depth < 1 and rng.random() < 0.12:
            _draw_crack(ink, rng, nxt, heading + float(rng.choice([-1, 1])) * 0.8, size // 2, depth + 1)
        point = nxt


def render_damage(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Glossy paint with reflections; 1-2 irregular damaged patches (scratches, dent shading or rust)."""
    paint = rng.uniform(20, 230, 3)
    image = _texture(size, rng, tuple(paint), 8, 3)
    band = np.sin(np.linspace(0, float(rng.uniform(2, 6)), size) + float(rng.uniform(0, 6)))
    glare = np.clip(band, 0, 1) ** 4 * float(rng.uniform(40, 110))  # reflection bands: bright but undamaged
    image += (glare[None, :] if rng.random() < 0.5 else glare[:, None])[..., None]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        radius = float(rng.uniform(0.08, 0.22)) * size
        centre = rng.uniform(radius, size - radius, 2)
        field = smooth_noise(size, 10, rng)[..., 0]
        yy, xx = np.mgrid[:size, :size]
        dist = np.hypot(xx - centre[0], yy - centre[1]) / radius
        patch = np.where(dist + 0.6 * field < 1.0, 255, 0).astype(np.uint8)  # ragged edge from the noise
        image = _compose(image, _damage_layer(size, rng, image, paint), patch / 255.0)
        mask = np.maximum(mask, patch)
    return _finish(image, mask)


def _damage_layer(size: int, rng: Rng, image: np.ndarray, paint: np.ndarray) -> np.ndarray:
    kind = int(rng.integers(3))
    if kind == 0:  # scratched to primer: grey with streaks
        layer = _texture(size, rng, (150, 150, 150), 20, 12)
        angle = float(rng.uniform(0, np.pi))
        for _ in range(30):
            p = rng.uniform(0, size, 2)
            q = p + 12 * np.array([np.cos(angle), np.sin(angle)])
            cv2.line(layer, tuple(int(v) for v in p), tuple(int(v) for v in q), (230, 230, 230), 1)
        return layer
    if kind == 1:  # dent: the paint itself, darkened and with a crumpled shading
        return image * (0.55 + 0.25 * smooth_noise(size, 12, rng, 1))
    return _texture(size, rng, (30, 70, 140), 30, 14)  # rust: orange-brown, rough


SEGSETS: dict[str, tuple[Renderer, str]] = {
    "seg_objects": (render_objects, "VOC-like objects at several scales in clutter (binary, for microseg)"),
    "seg_polyps": (render_polyps, "polyp-like soft-bordered blobs on textured tissue (binary, for microseg)"),
    "seg_leaves": (render_leaves, "overlapping leaves on soil, union mask (binary, for microseg)"),
    "seg_cracks": (render_cracks, "thin branching cracks on concrete (binary, for microseg)"),
    "seg_damage": (render_damage, "irregular damage patches on glossy car paint (binary, for microseg)"),
}


def generate(kind: str, dst: Path, count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE, seed: int = 0) -> Path:
    """Write `count` images and masks of `kind` under `dst`; returns `dst`."""
    if kind not in SEGSETS:
        raise ValueError(f"unknown segmentation set {kind!r}; known: {sorted(SEGSETS)}")
    if count < 1 or size < MIN_SIZE:
        raise ValueError(f"need count >= 1 and size >= {MIN_SIZE}, got count={count}, size={size}")
    render = SEGSETS[kind][0]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = render(size, np.random.default_rng([seed, i, sorted(SEGSETS).index(kind)]))
        cv2.imwrite(str(dst / "images" / f"{i:04d}.png"), image)
        cv2.imwrite(str(dst / "masks" / f"{i:04d}.png"), mask)
    return dst


def sample_dir(kind: str, count: int, size: int, seed: int) -> Path:
    from data.samples import SAMPLES_DIR

    return SAMPLES_DIR / f"{kind}-n{count}-s{size}-seed{seed}"


def ensure_segset(kind: str, count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE, seed: int = 0) -> Path:
    """The generated set, made once under data/samples/ and reused while its request is unchanged."""
    if kind not in SEGSETS:
        raise ValueError(f"unknown segmentation set {kind!r}; known: {sorted(SEGSETS)}")
    return ensure_sample(kind, SampleRequest(sample_dir(kind, count, size, seed), count, size, seed=seed))


def _register(kind: str, summary: str) -> None:
    @register_sample(kind, f"{summary}; --val unused", version=1)
    def make(request: SampleRequest) -> Path:
        return generate(kind, request.dst, request.count or DEFAULT_COUNT, request.size or DEFAULT_SIZE, request.seed)


for _kind, (_render, _summary) in SEGSETS.items():
    _register(_kind, _summary)
